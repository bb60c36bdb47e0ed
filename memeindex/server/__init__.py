"""The web service: `memeindex serve` (FastAPI + uvicorn, the `[server]` extra).

Importing this package is cheap; fastapi, uvicorn and the models load only when an app is created.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..settings import Settings

log = logging.getLogger(__name__)


def create_app(index_dir: str | Path | None = None, settings: Settings | None = None, *, searcher=None,
               reload_interval: float | None = None):
    """The FastAPI app serving one index. Loads the index and the models once (raises IndexMissing & co).

    `searcher` injects a ready Searcher-like object (tests); `reload_interval` is how often (seconds) a search
    checks whether a nightly build swapped in a new index (default 2, MEMEINDEX_RELOAD_INTERVAL).
    """
    from .app import build_app

    return build_app(index_dir, settings, searcher=searcher, reload_interval=reload_interval)


def serve(index_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          settings: Settings | None = None, *, certfile: str | Path | None = None,
          keyfile: str | Path | None = None) -> None:
    """Run the service until interrupted.

    Browsers allow the camera only on localhost or over HTTPS: to use a phone on the same network, serve with
    `--host 0.0.0.0` plus a certificate (certfile/keyfile, or MEMEINDEX_SSL_CERTFILE / MEMEINDEX_SSL_KEYFILE).
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit("memeindex serve needs the server extra: pip install 'memeindex[server]'") from exc
    settings = settings or Settings.from_env()
    certfile = certfile or settings.ssl_certfile or None
    keyfile = keyfile or settings.ssl_keyfile or None
    app = create_app(index_dir, settings)
    scheme = "https" if certfile else "http"
    log.info("serving %s on %s://%s:%d/", app.state.service.index_dir, scheme, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False,
                ssl_certfile=str(certfile) if certfile else None, ssl_keyfile=str(keyfile) if keyfile else None)
