"""The JSON API: search an uploaded face, serve indexed files (by id only) and their thumbnails, health."""
from __future__ import annotations

import logging
import mimetypes
import time

from typing import Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from ..errors import ImageTooLarge, NoFace, NotAnImage
from ..formats import HEAD_BYTES, read_head, sniff, sniff_video
from ..generation import shown_path
from .thumbs import MAX_SIZE, MIN_SIZE

log = logging.getLogger(__name__)
router = APIRouter()
IMMUTABLE = {"Cache-Control": "public, max-age=86400, immutable", "X-Content-Type-Options": "nosniff"}


async def search_slot(request: Request):
    """One of the service's bounded search slots for the whole request, taken before the upload is read into
    memory; none free raises ServiceBusy (503 + Retry-After, see app.py)."""
    with request.app.state.service.slot():
        yield


def _parse_k(raw: str | None, max_k: int) -> int:
    if raw is None or raw == "":
        return 3
    try:
        k = int(raw)
    except ValueError:
        raise HTTPException(400, f"k must be a whole number from 1 to {max_k}, not {raw[:20]!r}") from None
    if not 1 <= k <= max_k:
        raise HTTPException(400, f"k must be from 1 to {max_k}, not {k}")
    return k


class TraitOut(BaseModel):
    name: str = Field(description='an expression trait both faces show, e.g. "jaw open", "brows raised"')
    strength: float = Field(ge=0, le=1, description="how strongly both show it (the weaker of the two), 0..1")


class VariantOut(BaseModel):
    id: str = Field(description="file id (16 hex) of another file of the same template")
    path: str


class MatchOut(BaseModel):
    """One template: its best face. The same fields as `memeindex query --json`, plus the two URLs."""

    id: str = Field(description="file id: the first 16 hex of its sha256")
    path: str = Field(description="relative to the indexed folder")
    name: str
    score: float = Field(ge=0, le=1, description="calibrated P(people call the two expressions the same)")
    distance: float = Field(ge=0, description="L2 distance of the two expression vectors")
    box: list[float] = Field(description="matched face: x0, y0, x1, y1 in the file's pixels")
    frame: int
    traits: list[TraitOut] = Field(description="expression traits both faces show, strongest first")
    variants: list[VariantOut] = Field(description="the template's other files (near-duplicates), the first "
                                       "search.VARIANTS_LISTED of them in path order")
    variants_total: int = Field(ge=0, description="how many other files the template has, listed or not")
    weak: bool = Field(description="score below MEMEINDEX_WEAK_SCORE")
    image_url: str
    thumb_url: str


class QueryFaceOut(BaseModel):
    box: list[float]
    score: float


class QueryOut(BaseModel):
    face: int = Field(ge=1, description="which query face was searched, counted from 1 (the largest)")
    box: list[float]
    faces: list[QueryFaceOut]


class SearchOut(BaseModel):
    model_id: str
    calibrated: bool = Field(description="false: no fitted score for this model, scores are 1 - distance/sqrt(2)")
    took_ms: float
    query: QueryOut
    matches: list[MatchOut]


@router.post("/api/search", summary="Top-k memes making the expression of the largest face in the image",
             response_model=SearchOut)
async def search(request: Request, image: UploadFile = File(..., description="a photo with a face (JPEG, PNG, ...)"),
                 k: str | None = Form(None, description="how many memes (1 to MEMEINDEX_MAX_K, default 3)"),
                 _slot: None = Depends(search_slot)):
    service = request.app.state.service
    k = _parse_k(k, service.max_k)
    data = await image.read(service.max_upload_bytes + 1)
    if len(data) > service.max_upload_bytes:
        raise HTTPException(413, f"upload too large: the limit is {service.max_upload_bytes:,} bytes")
    if not data:
        raise HTTPException(400, "the image field is empty")
    if sniff_video(data[:HEAD_BYTES]) is not None:  # searched frame by frame on the CLI, too long for one request
        raise HTTPException(415, "a video, not a photo: /api/search takes one picture (send a frame of it), "
                                 "`memeindex query CLIP` searches a whole video")
    started = time.perf_counter()
    try:
        result = await service.search(data, k)
    except NotAnImage as exc:
        raise HTTPException(415, f"not an image: {exc}") from None
    except ImageTooLarge as exc:
        raise HTTPException(413, f"image too large: {exc}") from None
    except NoFace as exc:  # what to try: the library's words, as the CLI prints them
        raise HTTPException(422, str(exc)) from None
    body = result.to_dict()  # the one result format, as `memeindex query --json` prints it
    for m in body["matches"]:
        m.update(image_url=f"/api/memes/{m['id']}",  # the thumbnail of the matched face's frame
                 thumb_url=f"/api/memes/{m['id']}/thumb" + (f"?frame={m['frame']}" if m["frame"] else ""))
    return {**body, "took_ms": round((time.perf_counter() - started) * 1000, 1)}


def _file(request: Request, meme_id: str):
    path = request.app.state.service.image_file(meme_id)
    if path is None:
        raise HTTPException(404, "no such meme")
    return path


def _media_type(path) -> str:
    """The type of the format the file's first bytes show (a JPEG named .gif is image/jpeg: nosniff makes a browser
    believe the header), by its name only when they show none (a format without a signature, or a file that went:
    FileResponse says what became of it)."""
    ext = sniff(read_head(path))
    return mimetypes.guess_type(f"meme.{ext}" if ext else path.name)[0] or "application/octet-stream"


@router.head("/api/memes/{meme_id}", include_in_schema=False)
@router.get("/api/memes/{meme_id}", summary="The indexed image file of a meme, by id only",
            response_class=FileResponse)
def meme_file(request: Request, meme_id: str):
    path = _file(request, meme_id)
    media_type = _media_type(path)
    if not media_type.startswith("image/") or media_type == "image/svg+xml":
        media_type = "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers=IMMUTABLE, content_disposition_type="inline")


@router.head("/api/memes/{meme_id}/thumb", include_in_schema=False)
@router.get("/api/memes/{meme_id}/thumb", summary="A JPEG thumbnail of a meme (cached in memory)",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def meme_thumb(request: Request, meme_id: str,
               size: str = Query("256", description=f"longest side in pixels, {MIN_SIZE} to {MAX_SIZE}"),
               frame: str = Query("0", description="frame of an animation (a match's `frame`; the first when it "
                                                   "has no such frame)")):
    try:
        side = int(size)
    except ValueError:
        side = -1
    if not MIN_SIZE <= side <= MAX_SIZE:
        raise HTTPException(400, f"size must be a whole number from {MIN_SIZE} to {MAX_SIZE}")
    if not (frame.isascii() and frame.isdigit()) or len(frame) > 6:
        raise HTTPException(400, "frame must be a whole number from 0")
    path = _file(request, meme_id)
    try:
        data = request.app.state.thumbs.get(path, side, int(frame))
    except Exception as exc:  # the indexed file changed or broke since the build
        log.warning("thumbnail of %s failed: %s", shown_path(str(path)), exc)
        raise HTTPException(404, "this meme's file can no longer be read") from None
    return Response(data, media_type="image/jpeg", headers=IMMUTABLE)


class Health(BaseModel):
    status: str = Field(description='"ok" while the service answers')
    searches: int = Field(ge=0, description="searches answered since start")
    pending: int = Field(ge=0, description="searches running or queued now")
    max_pending: int = Field(ge=1, description="beyond this many in flight a search gets 503 + Retry-After")
    refused: int = Field(ge=0, description="searches refused as busy since start")
    max_upload_bytes: int = Field(ge=1)
    index: dict[str, Any] = Field(description="the loaded index's facts; server paths shown by their last part")


@router.head("/health", include_in_schema=False)
@router.get("/health", summary="Liveness plus the loaded index's facts", response_model=Health)
def health(request: Request) -> Health:
    service = request.app.state.service
    return Health(status="ok", searches=service.searches, pending=service.pending, max_pending=service.max_pending,
                  refused=service.refused, max_upload_bytes=service.max_upload_bytes, index=service.info())
