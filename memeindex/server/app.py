"""The FastAPI app: API routes, the live page at /, plain static files, and 4xx (never 500) for bad input."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..errors import ServiceBusy
from .api import router
from .limits import BusyGate, UploadLimit
from .service import SearchService
from .thumbs import ThumbnailCache

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                "Permissions-Policy": "camera=(self)", "Referrer-Policy": "no-referrer"}


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
    if error.get("type") == "missing":
        return f"missing field: {where} (send the photo as multipart/form-data field 'image')"
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid request"))


def build_app(index_dir, settings, *, searcher=None, reload_interval=None) -> FastAPI:
    service = SearchService(index_dir, settings, searcher=searcher, reload_interval=reload_interval)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        watcher = asyncio.create_task(service.watch())
        try:
            yield
        finally:
            watcher.cancel()
            service.close()

    # No Swagger UI or ReDoc page: FastAPI's load their scripts from a CDN, so offline they render blank. The schema
    # itself needs nothing from outside: /openapi.json, which the live page links to.
    app = FastAPI(title="memeindex", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Make a face, find the meme. Upload a face to /api/search; the live page is at /.")
    app.state.service = service
    app.state.thumbs = ThumbnailCache(service.settings.thumb_cache_bytes, service.settings.hard_max_pixels)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": "; ".join(_describe(e) for e in exc.errors()) or "invalid request"},
                            status_code=400)

    @app.exception_handler(ServiceBusy)
    async def busy(request: Request, exc: ServiceBusy):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    app.add_middleware(UploadLimit, max_bytes=service.max_upload_bytes)
    app.add_middleware(BusyGate, service=service)  # added last = runs first: a full server refuses before parsing
    return app
