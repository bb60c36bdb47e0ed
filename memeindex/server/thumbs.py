"""JPEG thumbnails of indexed files, kept in a small in-memory LRU (keyed by file, size and mtime)."""
from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

MIN_SIZE, MAX_SIZE = 16, 1024


class ThumbnailCache:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path, size: int) -> bytes:
        """JPEG bytes of `path` fitted into size x size (first frame, EXIF upright). Raises OSError/ValueError."""
        stat = path.stat()
        key = (str(path), size, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                return data
        data = render(path, size)
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old)
        return data


def render(path: Path, size: int) -> bytes:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # decode straight at a fraction of the size
        img.seek(0)
        frame = ImageOps.exif_transpose(img) if hasattr(img, "getexif") else img
        if frame.mode in ("RGBA", "LA", "P", "PA"):
            frame = frame.convert("RGBA")
            background = Image.new("RGB", frame.size, (255, 255, 255))
            background.paste(frame, mask=frame.getchannel("A"))
            frame = background
        else:
            frame = frame.convert("RGB")
        frame.thumbnail((size, size), Image.LANCZOS)
        out = io.BytesIO()
        frame.save(out, "JPEG", quality=85, optimize=True)
        return out.getvalue()
