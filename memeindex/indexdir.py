"""The index folder: published generations, the CURRENT pointer, the build lock and resume checkpoints.

A build writes a whole generation (faces.parquet, images.parquet, index.faiss, index.json) into a temp folder,
renames it into place, then renames a new CURRENT pointer over the old one. Readers follow CURRENT, so they see
the last good generation until the very last rename, and a killed build leaves it untouched. The previous
generation is kept one build longer, so a reader that has just followed the old pointer can still open it.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import BuildLocked, IndexMissing

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
PARTIAL = "partial"


class IndexDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    def current(self) -> Path:
        """The folder of the published generation; IndexMissing when nothing was ever built here."""
        try:
            name = (self.path / CURRENT).read_text().strip()
        except FileNotFoundError:
            raise IndexMissing(f"no index at {self.path}: build one with `memeindex build IMAGES_DIR`") from None
        return self.path / name

    def current_or_none(self) -> Path | None:
        try:
            return self.current()
        except IndexMissing:
            return None

    def pointer_stamp(self) -> tuple[int, int] | None:
        """Changes whenever a new generation is published: cheap enough to check on every request."""
        try:
            st = os.stat(self.path / CURRENT)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def new_generation(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        # Nanoseconds + pid: two builds in one second (or one process) never share a name.
        tmp = self.path / f"gen-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}-{os.getpid()}.tmp"
        tmp.mkdir()
        return tmp

    def publish(self, tmp: Path) -> Path:
        final = tmp.with_suffix("")
        os.replace(tmp, final)
        previous = self.current_or_none()
        pointer = self.path / f"{CURRENT}.tmp{os.getpid()}"
        pointer.write_text(final.name + "\n")
        os.replace(pointer, self.path / CURRENT)
        _fsync_dir(self.path)
        for old in self.path.glob("gen-*"):
            if old not in (final, previous) and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return final

    @property
    def partial(self) -> Path:
        return self.path / PARTIAL

    def clean_stale(self) -> None:
        """Temp leftovers of a killed build (never the checkpoints: those are what a resume reuses)."""
        for stale in list(self.path.glob("gen-*.tmp")) + list(self.path.glob("*.tmp[0-9]*")) \
                + list(self.partial.glob("*.tmp[0-9]*")):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

    @contextmanager
    def lock(self):
        """One build at a time per index. The kernel drops the lock if the holder dies, even by kill -9."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise BuildLocked(f"another build is running on {self.path}") from None
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
