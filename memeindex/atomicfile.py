"""Write a file so that a reader (or a kill) never sees half of it: a temp file beside it, then a rename.

The one owner of that fact for every file memeindex writes whole: the generation's tables and facts
(generation.py), a fetched model (models.py), a download folder's index.tsv (download.py), a contact sheet (sheet.py).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temp_beside(dest: Path) -> Path:
    """`.NAME.tmpPID` in dest's folder: hidden (a folder being indexed or listed does not see it), on the same file
    system (so the rename is atomic), one per process."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.tmp{os.getpid()}")


@contextmanager
def replacing(dest: Path, tmp: Path | None = None) -> Iterator[Path]:
    """A temp path beside `dest` to write (`temp_beside(dest)`, or `tmp` where a folder's own clean-up looks for
    another name); once the block has written it, it is fsynced and renamed over `dest`: a reader sees the old file
    or the new one, never half. Whatever the block raises (a failed download, a checksum that does not match), the
    temp file is removed and `dest` is left as it was."""
    dest = Path(dest)
    tmp = Path(tmp) if tmp is not None else temp_beside(dest)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
