"""The one decoder: a file or bytes -> RGB frames. Pillow (+ HEIC via pillow-heif), EXIF rotation, every mode to
8-bit RGB, animated frames, a working pixel cap (shrink) and a hard pixel cap (refuse unread).

Build, query, the API, thumbnails and contact sheets all decode through `decode`, so they agree on every file.
"""
from __future__ import annotations

import io
import logging
import math
import os
import re
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import FileMissing, ImageTooLarge, NotAnImage
from .settings import Settings  # the caps' defaults have one owner

log = logging.getLogger(__name__)

# Image.reduce (a fast box filter by an integer factor) works on these modes only.
_REDUCIBLE = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F"})
# EXIF orientation -> the transpose that shows the picture upright (what ImageOps.exif_transpose does).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_heif_registered = False


def _register_heif() -> None:
    """Teach Pillow HEIC/HEIF (what iPhones save), once per process; pillow-heif is imported only here."""
    global _heif_registered
    if _heif_registered:
        return
    _heif_registered = True
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # pragma: no cover - pillow-heif is a dependency; a broken install loses HEIC only
        log.warning("pillow-heif is not installed: HEIC photos cannot be read")
        return
    register_heif_opener()


def _allow_pixels(hard_max_pixels: int) -> None:
    """Our hard cap is the one limit: Pillow's own decompression-bomb limit (89.5 MP by default) must not refuse
    an image below it. Pillow reads the limit globally at open time, so it is raised (never lowered) here."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < hard_max_pixels:
        Image.MAX_IMAGE_PIXELS = hard_max_pixels


@dataclass
class Frame:
    index: int  # frame number in the file (0 for still images)
    rgb: np.ndarray  # H x W x 3, uint8, C-contiguous
    scale: float  # decoded pixels per original pixel (<= 1 when the pixel cap shrank the frame)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is flattened onto white, as a viewer shows it."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if img.mode == "I" and arr.max() <= 255:
            hi = 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB") if img.mode != "RGB" else img


def _frame_indices(n_frames: int, max_frames: int) -> list[int]:
    if n_frames <= 1 or max_frames <= 1:
        return [0]
    count = min(n_frames, max_frames)
    return sorted({round(i * (n_frames - 1) / (count - 1)) for i in range(count)})


def decode(source: str | Path | bytes, max_pixels: int = Settings.max_pixels,
           hard_max_pixels: int = Settings.hard_max_pixels, max_frames: int = Settings.max_frames) -> list[Frame]:
    """Frames of an image file or bytes, RGB uint8, at most `max_pixels` each: all of `frames()` at once."""
    return list(frames(source, max_pixels, hard_max_pixels, max_frames))


def frames(source: str | Path | bytes, max_pixels: int = Settings.max_pixels,
           hard_max_pixels: int = Settings.hard_max_pixels, max_frames: int = Settings.max_frames,
           fps: float | None = None, only: int | None = None) -> Iterator[Frame]:
    """Frames of an image file or bytes, RGB uint8, at most `max_pixels` each, decoded one at a time in file order.

    Which frames of an animation: `max_frames` spread evenly over it (what a build indexes); with `fps`, the
    ones a video query samples (about `fps` a second of the animation's own timing, `Cadence`), at most
    `max_frames`, so a consumer can stop at the first it wants; with `only`, that one frame (the first when it has
    no such frame).

    Raises NotAnImage for anything Pillow cannot fully decode (empty, truncated, text, unknown format) and
    ImageTooLarge past `hard_max_pixels`, before the pixels are read, and FileMissing for a path that is not
    there (or is a folder). A large image is shrunk while it is decoded (JPEG draft, Image.reduce), so a 100 MP
    photo costs about its own 8-bit pixels once, not several full-size copies.
    """
    _register_heif()
    _allow_pixels(hard_max_pixels)
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    if not isinstance(stream, io.BytesIO):
        require_regular_file(stream)
    with _decoding(stream, hard_max_pixels):
        img = Image.open(stream)
    try:
        width, height = img.size
        if width * height > hard_max_pixels:
            raise ImageTooLarge(over_the_cap(f"{width}x{height}", hard_max_pixels))
        with _decoding(stream, hard_max_pixels):  # a TIFF's n_frames reads every page's header
            n_frames = getattr(img, "n_frames", 1)
        if only is not None:
            wanted: Iterable[int] = [only if 0 <= only < n_frames else 0]
        else:
            wanted = _frame_indices(n_frames, max_frames) if fps is None else range(n_frames)
        cadence, start, taken = Cadence(fps) if fps else None, 0.0, 0
        for index in wanted:
            with _decoding(stream, hard_max_pixels):
                img.seek(index)
                if cadence is not None:
                    shown, start = start, start + _duration(img)
                    if not cadence.due(shown):
                        continue
                frame = _one_frame(img, index, max_pixels)
            yield frame
            taken += 1
            if cadence is not None and taken >= max_frames:
                return
    finally:
        img.close()


def require_regular_file(path: str | Path) -> None:
    """FileMissing for a path that is not there (or is a folder), NotAnImage for one that is not a regular file: a
    FIFO or a device, which reading could block forever (the one check before an image or a video is opened)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileMissing(f"{path}: no such file") from None
    except OSError as exc:  # a symlink loop, a name too long: not there to read, and why
        raise FileMissing(f"{path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise FileMissing(f"{path}: a folder")
    if not stat.S_ISREG(mode):
        raise NotAnImage("not a regular file")


def over_the_cap(size: str, hard_max_pixels: int) -> str:
    """Why an image is refused unread, and the setting that raises the cap."""
    return f"{size} is over the {hard_max_pixels:,}-pixel cap (MEMEINDEX_HARD_MAX_PIXELS)"


SAMPLE_FPS = 4.0  # frames a second a video query samples, and an animated query image


class Cadence:
    """About `fps` frames a second of a clip's own time: the rule a video query samples by (video.sample_frames),
    and an animated query image too (`frames(fps=...)`)."""

    def __init__(self, fps: float):
        self.fps, self.next_t = fps, 0.0

    def due(self, t: float) -> bool:
        """Whether the frame shown from `t` seconds on is sampled; frames must come in time order."""
        if t + 1e-6 < self.next_t:
            return False
        self.next_t = (math.floor(t * self.fps + 1e-6) + 1) / self.fps
        return True


def _duration(img: Image.Image) -> float:
    """Seconds the current frame of an animation shows; 0 or 10 ms or less counts as 100 ms, as browsers play it."""
    if img.format == "WEBP" and "duration" not in img.info:  # not every format: a JPEG must not load before draft
        img.load()  # WebP says a frame's duration once it decodes it (seek() drops the last one): each read as 100 ms
    ms = img.info.get("duration") or 0
    return (ms if ms > 10 else 100) / 1000.0


@contextmanager
def _decoding(stream, hard_max_pixels: int):
    """Pillow's errors and warnings while opening or decoding a frame, as this module's typed errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow's "corrupt EXIF" & co: the file still decodes
            yield
    except (ImageTooLarge, NotAnImage):
        raise
    except FileNotFoundError:  # vanished between the check and the open
        raise FileMissing(f"{stream}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow checks first, inside Image.open, against its own global limit (this cap or above: _allow_pixels),
        # and its error quotes twice that limit: say the image's pixels and this cap, as the check above does.
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels[1]):,} pixels" if pixels else "the image"
        raise ImageTooLarge(over_the_cap(size, hard_max_pixels)) from None
    except UnidentifiedImageError:
        raise NotAnImage("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        raise NotAnImage(f"corrupt image ({exc})") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile file can trip any error inside a plugin; it is still one bad file
        log.debug("decoder error", exc_info=True)
        raise NotAnImage(f"undecodable image ({type(exc).__name__}: {exc})") from None


def _one_frame(img: Image.Image, index: int, max_pixels: int) -> Frame:
    width, height = img.size
    scale = min(1.0, (max_pixels / float(width * height)) ** 0.5)
    if scale < 1.0 and img.format == "JPEG" and index == 0:
        # JPEG can decode at 1/2, 1/4, 1/8 size directly: far faster than decode-then-shrink.
        img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
    img.load()
    orientation = _orientation(img) if index == 0 else 1
    frame = img if index == 0 else img.copy()  # later frames: the file moves on when it seeks
    if frame.mode == "1":
        frame = frame.convert("L")
    factor = int(1.0 / min(1.0, (max_pixels / float(frame.width * frame.height)) ** 0.5))
    if factor >= 2 and frame.mode in _REDUCIBLE:
        # Shrink by a whole factor before any mode conversion: the conversions then touch the small copy only.
        frame = frame.reduce(factor)
    if orientation in _UPRIGHT:
        frame = frame.transpose(_UPRIGHT[orientation])
    frame = _to_rgb(frame)
    # The cap applies to the pixel count whichever way the picture is turned.
    if frame.width * frame.height > max_pixels:
        shrink = (max_pixels / float(frame.width * frame.height)) ** 0.5
        w, h = max(1, int(frame.width * shrink)), max(1, int(frame.height * shrink))
        # A sliver (one side clamped to 1 pixel) must still fit the cap: the other side gives way.
        w, h = (w, min(h, max(1, max_pixels // w))) if h >= w else (min(w, max(1, max_pixels // h)), h)
        frame = frame.resize((w, h), Image.BILINEAR)
    # `scale` maps original (EXIF-upright) pixels to decoded ones.
    scale = frame.width / (height if orientation in (5, 6, 7, 8) else width)
    return Frame(index=index, rgb=np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)), scale=scale)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # a malformed EXIF block: show the pixels as stored
        return 1
