"""Decode one file into RGB frames: Pillow, EXIF rotation, every mode to 8-bit RGB, animated frames, pixel cap."""
from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageTooLarge, NotAnImage

log = logging.getLogger(__name__)


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


def decode(source: str | Path | bytes, max_pixels: int = 4_000_000, hard_max_pixels: int = 250_000_000,
           max_frames: int = 3) -> list[Frame]:
    """Frames of an image file or bytes, RGB uint8, at most `max_pixels` each.

    Raises NotAnImage for anything Pillow cannot fully decode (empty, truncated, text, unknown format) and
    ImageTooLarge past `hard_max_pixels`, before the pixels are read.
    """
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(stream)
            width, height = img.size
            if width * height > hard_max_pixels:
                raise ImageTooLarge(f"{width}x{height} is over the {hard_max_pixels:,}-pixel cap")
            frames = []
            for index in _frame_indices(getattr(img, "n_frames", 1), max_frames):
                img.seek(index)
                frames.append(_one_frame(img, index, max_pixels))
            return frames
    except (ImageTooLarge, NotAnImage):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(str(exc)) from None
    except UnidentifiedImageError:
        raise NotAnImage("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        raise NotAnImage(f"corrupt image ({exc})") from None
    finally:
        if "img" in locals():
            img.close()


def _one_frame(img: Image.Image, index: int, max_pixels: int) -> Frame:
    width, height = img.size
    scale = min(1.0, (max_pixels / float(width * height)) ** 0.5)
    if scale < 1.0 and img.format == "JPEG" and index == 0:
        # JPEG can decode at 1/2, 1/4, 1/8 size directly: far faster than decode-then-shrink.
        img.draft("RGB", (int(width * scale), int(height * scale)))
    img.load()
    frame = ImageOps.exif_transpose(img) if index == 0 else img.copy()
    frame = _to_rgb(frame)
    # After EXIF rotation width and height may swap; the cap applies to the pixel count either way.
    if frame.width * frame.height > max_pixels:
        shrink = (max_pixels / float(frame.width * frame.height)) ** 0.5
        frame = frame.resize((max(1, int(frame.width * shrink)), max(1, int(frame.height * shrink))), Image.BILINEAR)
    # `scale` maps original (EXIF-upright) pixels to decoded ones.
    scale = frame.width / (height if _swapped(img) else width)
    return Frame(index=index, rgb=np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)), scale=scale)


def _swapped(img: Image.Image) -> bool:
    try:
        return img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:
        return False
