"""plan(): mark and sweep, as a pure function of (rows the index knows, files the scan found).

No model, no Parquet: the caller passes how to fingerprint a file (sha256 + whether it looks like an image), so
unit tests run it on fakes. Rules, per scanned file:

- same path, same size and mtime as a known row: **keep** it (its face rows stay), unless it is a `noface` row
  made by another detector version: then **analyze** it again (`redetect`), as a newer detector may find a face;
  a kept row without a perceptual hash (made before they existed) is also listed in **rehash**;
- otherwise fingerprint it: unreadable -> **skipped** (with the reason); not an image (no image signature and no
  image extension, e.g. `index.tsv`) -> **ignored**; same content as its own known row (a touched file) ->
  **reuse** (counted unchanged); content known from another row or a checkpoint (a rename, a copy, a resumed
  build) -> **reuse**; else -> **analyze**.

Known paths no longer scanned are **removed**.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from .generation import ImageRow


@dataclass(frozen=True)
class Scanned:
    """A file the scan found (what scan.ImageFile carries)."""

    rel: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Fingerprint:
    sha256: str
    image: bool  # an image signature or an image extension: worth analysing (or failing with a reason)


@dataclass(frozen=True)
class Task:
    """One file to analyse; `sha256` is what the plan saw (the worker re-hashes the bytes it actually reads)."""

    rel: str
    sha256: str
    size: int
    mtime_ns: int
    phash_only: bool = False  # a kept file indexed before pHashes existed: only its first frame's hash is wanted


@dataclass
class Plan:
    keep: list[ImageRow] = field(default_factory=list)  # rows kept as they are, with their face rows
    reuse: list[ImageRow] = field(default_factory=list)  # new rows whose faces are copied from known content
    analyze: list[Task] = field(default_factory=list)
    rehash: list[Task] = field(default_factory=list)  # kept files without a pHash (an index from schema v1)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): could not be read
    ignored: list[str] = field(default_factory=list)  # not images
    unchanged: int = 0  # kept + touched-but-same-content
    reused: int = 0  # content found under another path or in a checkpoint
    redetect: int = 0  # of `analyze`: noface files of an older detector, analysed again


def plan(known: Iterable[ImageRow], scanned: Sequence[Scanned], fingerprint: Callable[[str], Fingerprint],
         detector: str, checkpointed: Iterable[ImageRow] = ()) -> Plan:
    """Decide what a build does with every scanned file. `fingerprint(rel)` may raise OSError (-> skipped)."""
    known_by_path = {r.path: r for r in known}
    by_sha: dict[str, ImageRow] = {}
    for row in list(known_by_path.values()) + list(checkpointed):
        by_sha.setdefault(row.sha256, row)
    out = Plan()
    for f in scanned:
        old = known_by_path.get(f.rel)
        if old is not None and old.size == f.size and old.mtime_ns == f.mtime_ns:
            if _stale_noface(old, detector):
                out.analyze.append(Task(f.rel, old.sha256, f.size, f.mtime_ns))
                out.redetect += 1
            else:
                out.keep.append(old)
                out.unchanged += 1
                if not old.phash and old.status != "failed":
                    out.rehash.append(Task(f.rel, old.sha256, f.size, f.mtime_ns, phash_only=True))
            continue
        try:
            fp = fingerprint(f.rel)
        except OSError as exc:
            out.skipped.append((f.rel, exc.strerror or str(exc)))
            continue
        if not fp.image:
            out.ignored.append(f.rel)
            continue
        source = by_sha.get(fp.sha256)
        if source is None:
            out.analyze.append(Task(f.rel, fp.sha256, f.size, f.mtime_ns))
        elif _stale_noface(source, detector):
            out.analyze.append(Task(f.rel, fp.sha256, f.size, f.mtime_ns))
            out.redetect += 1
        else:
            out.reuse.append(ImageRow(f.rel, fp.sha256, f.size, f.mtime_ns, source.status, source.faces,
                                      source.reason, source.phash, source.template, source.detector))
            if old is not None and old.sha256 == fp.sha256:
                out.unchanged += 1
            else:
                out.reused += 1
    scanned_paths = {f.rel for f in scanned}
    out.removed = sorted(p for p in known_by_path if p not in scanned_paths)
    return out


def _stale_noface(row: ImageRow, detector: str) -> bool:
    return row.status == "noface" and row.detector != detector
