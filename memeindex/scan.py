"""Walk an image root: every regular file below it, dotfiles and dot-folders skipped, symlink loops safe."""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFile:
    rel: str  # posix path relative to the root: the key of the store
    size: int
    mtime_ns: int


def walk(root: Path) -> list[ImageFile]:
    """Candidate files below `root`, sorted by path. The content decides later what is an image, not the name.

    Folder symlinks are not followed (a loop cannot trap us); file symlinks are, when they point at a regular
    file. FIFOs, sockets and devices are skipped: reading them would hang.
    """
    root = Path(root)
    found: list[ImageFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=_log_walk_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)  # follows a file symlink
            except OSError as exc:
                log.warning("skipping %s: %s", path, exc.strerror or exc)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = Path(path).relative_to(root).as_posix()
            found.append(ImageFile(rel=rel, size=st.st_size, mtime_ns=st.st_mtime_ns))
    return found


def _log_walk_error(exc: OSError) -> None:
    log.warning("skipping %s: %s", exc.filename, exc.strerror or exc)
