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
    def __init__(self, max_bytes: int, hard_max_pixels: int):  # both from Settings, their one owner
        self.max_bytes = max_bytes
        self.hard_max_pixels = hard_max_pixels
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path, size: int, frame: int = 0) -> bytes:
        """JPEG bytes of `path` fitted into size x size (frame `frame` of an animation, the first when it has no such
        frame; EXIF upright). Raises MemeIndexError/OSError."""
        stat = path.stat()
        key = (str(path), size, frame, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                return data
        data = render(path, size, self.hard_max_pixels, frame)
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old)
        return data


def render(path: Path, size: int, hard_max_pixels: int, frame: int = 0) -> bytes:
    """JPEG bytes of frame `frame` (a match's: an animated meme's face may show only in a later one), through the
    one decoder (every mode, 16-bit, HEIC, EXIF rotation agree with what the build analysed). Raises a
    MemeIndexError when the file no longer decodes."""
    from PIL import Image

    from ..images import frames

    # size^2 decoded pixels always cover a size x size box: the longer side comes out >= size.
    chosen = next(frames(path, max_pixels=size * size, hard_max_pixels=hard_max_pixels, only=frame))
    picture = Image.fromarray(chosen.rgb)
    picture.thumbnail((size, size), Image.LANCZOS)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue()
