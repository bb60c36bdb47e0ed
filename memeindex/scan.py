"""Walk an image root: every regular file below it, with what was skipped and why; fingerprint a file.

Policy (README "What a build indexes"):
- dotfiles and dot-folders are skipped silently (they are hidden on purpose);
- folder symlinks are not followed (a loop cannot trap us); folders are walked without recursion, at any depth;
- a file symlink is followed wherever it points (a folder of links to memes kept elsewhere is a normal way to
  curate a collection); the server serves it too (server/service.py applies the same rule);
- FIFOs, sockets and devices are skipped with a reason: reading them would hang;
- a folder that cannot be listed (no permission, an NFS hiccup) is skipped with its reason and reported in
  `unlisted`: the plan keeps what the index knows under it instead of taking its files for removed;
- a file whose `stat` fails (EIO on NFS) is skipped with its reason and reported in `unstatted`: the plan keeps
  its known row for the same reason;
- a file whose name is not valid UTF-8 is indexed like any other (see generation.stored_path).
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .formats import HEAD_BYTES, looks_like_image
from .plan import Fingerprint, Scanned

log = logging.getLogger(__name__)

ImageFile = Scanned  # one scanned file: rel (posix, relative to the root: the key of the index), size, mtime_ns


@dataclass
class ScanResult:
    files: list[Scanned] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    hidden: int = 0  # dotfiles and dot-folders, not looked into
    unlisted: list[str] = field(default_factory=list)  # folders that could not be listed (also in `skipped`)
    unstatted: list[str] = field(default_factory=list)  # files whose stat failed (also in `skipped`)


def walk(root: Path, skip: Path | None = None) -> ScanResult:
    """Candidate files below `root`, sorted by path. The content decides later what is an image, not the name.
    `skip`: a folder below the root not looked into (the index being built, when it lives among the images)."""
    root = Path(root)
    skip_path = os.path.realpath(skip) if skip is not None else None
    out = ScanResult()

    def on_error(exc: OSError) -> None:  # os.walk calls it for a folder it could not list
        folder = _rel(exc.filename, root)
        out.unlisted.append(folder)
        out.skipped.append((folder, exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in _folders(str(root), on_error):
        visible = sorted(d for d in dirnames if not d.startswith("."))
        out.hidden += len(dirnames) - len(visible)
        visible = [d for d in visible if os.path.join(dirpath, d) != skip_path]
        for d in [d for d in visible if os.path.islink(os.path.join(dirpath, d))]:
            out.skipped.append((_rel(os.path.join(dirpath, d), root), "symlink to a folder (not followed)"))
            visible.remove(d)
        dirnames[:] = visible
        for name in sorted(filenames):
            if name.startswith("."):
                out.hidden += 1
                continue
            path = os.path.join(dirpath, name)
            rel = _rel(path, root)
            try:
                st = os.stat(path)  # follows a file symlink
            except OSError as exc:
                out.unstatted.append(rel)
                out.skipped.append((rel, exc.strerror or str(exc)))
                continue
            if not stat.S_ISREG(st.st_mode):
                if not stat.S_ISDIR(st.st_mode):  # a symlink to a folder is simply not followed
                    out.skipped.append((rel, "not a regular file"))
                continue
            out.files.append(Scanned(rel=rel, size=st.st_size, mtime_ns=st.st_mtime_ns))
    out.files.sort(key=lambda f: f.rel)
    return out


def _folders(top: str, on_error):
    """os.walk(top, followlinks=False, onerror=on_error) without recursion (Python 3.11's recurses once a level and
    dies of RecursionError under ~1000 nested folders): (dirpath, dirnames, filenames), top-down; the caller prunes
    `dirnames` in place, as with os.walk."""
    stack = [top]
    while stack:
        dirpath = stack.pop()
        try:
            with os.scandir(dirpath) as it:
                entries = list(it)
        except OSError as exc:
            on_error(exc)
            continue
        dirnames, filenames = [], []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            (dirnames if is_dir else filenames).append(entry.name)
        yield dirpath, dirnames, filenames
        below = [os.path.join(dirpath, d) for d in dirnames]
        stack.extend(p for p in reversed(below) if not os.path.islink(p))


def _rel(path: str, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(path: str | Path) -> Fingerprint:
    """sha256 of the file and whether it looks like an image, in one read. Raises OSError."""
    h = hashlib.sha256()
    head = b""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            if not head:
                head = chunk[:HEAD_BYTES]
            h.update(chunk)
    return Fingerprint(sha256=h.hexdigest(), image=looks_like_image(head, os.fsdecode(path)))
