"""Write a file so that a reader (or a kill) never sees half of it: a temp file beside it, then a rename.

The one owner of that fact for every file memeindex writes whole: the generation's tables and facts
(generation.py), a fetched model (models.py), a download folder's index.tsv (download.py), a contact sheet (sheet.py),
a trained model, its summary and the training caches (train/), templates.json (scripts/fit_templates.py).
"""
from __future__ import annotations

import glob
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# A temp file whose writer still runs is left alone, unless it is older than this: by then its PID may well belong
# to another process (PIDs are reused), and no whole-file write of memeindex takes that long.
STALE_AFTER_S = 3600.0
TEMP_MARKER = ".tmp"  # `.NAME{marker}PID`; a folder with clean-up of its own may name its temps with another marker


def temp_beside(dest: Path) -> Path:
    """`.NAME.tmpPID` in dest's folder: hidden (a folder being indexed or listed does not see it), on the same file
    system (so the rename is atomic), one per process."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.tmp{os.getpid()}")


def temp_glob(name: str | None = None, marker: str = TEMP_MARKER) -> str:
    """The glob matching `temp_beside`'s temp files (or those named with `marker`): of the file `name`, or of any."""
    return f".{glob.escape(name) if name is not None else '*'}{glob.escape(marker)}[0-9]*"


def remove_stale_temps(folder: Path, name: str | None = None, marker: str = TEMP_MARKER) -> list[Path]:
    """Remove the temp files (of the file `name`, or of any; named with `marker`) that a killed writer left in
    `folder`: those whose PID is not a running process, or older than STALE_AFTER_S. Returns what it removed."""
    removed = []
    temp_name = re.compile(r"^\..+" + re.escape(marker) + r"(\d+)$")
    for path in Path(folder).glob(temp_glob(name, marker)):
        match = temp_name.match(path.name)
        if match is None or not path.is_file() or not is_stale(path, int(match.group(1))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def is_stale(path: Path, pid: int) -> bool:
    """Whether the temp file `path`, written by process `pid`, was left by a killed writer: `pid` is not a running
    process, or the file is older than STALE_AFTER_S. download.py's `.part-PID` files follow the same rule."""
    try:
        age = time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:  # its writer renamed it meanwhile
        return False
    return not _running(pid) or age >= STALE_AFTER_S


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def replacing(dest: Path, tmp: Path | None = None) -> Iterator[Path]:
    """A temp path beside `dest` to write (`temp_beside(dest)`, or `tmp` where a folder's own clean-up looks for
    another name); once the block has written it, it is fsynced and renamed over `dest`: a reader sees the old file
    or the new one, never half. Whatever the block raises (a failed download, a checksum that does not match), the
    temp file is removed and `dest` is left as it was. A temp of `dest` that a killed writer left (kill -9 skips
    the clean-up) is removed first."""
    dest = Path(dest)
    if tmp is None:
        remove_stale_temps(dest.parent, dest.name)
    tmp = Path(tmp) if tmp is not None else temp_beside(dest)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
