"""plan(): mark and sweep, as a pure function of (rows the index knows, files the scan found).

No model, no Parquet: the caller passes how to fingerprint a file (sha256 + whether it looks like an image), so
unit tests run it on fakes. Rules, per scanned file:

- same path, same size and mtime as a known row: **keep** it (its face rows stay), unless it is a `noface` row
  made by another detector version: then **analyze** it again (`redetect`), as a newer detector may find a face;
  or a `failed` row to retry (`retried`): a failure of the run (the per-file time limit, a worker that died, no
  memory), fewer than generation.RUN_FAILURE_RETRIES times in a row, or any failure when the caller asks (`retry_failed`,
  e.g. after installing a decoder); a failure of the file itself (a broken JPEG) stays failed, build after build;
  a kept row without a perceptual hash (made before they existed), or a `noface` row without a difference hash
  (schema 3 or older: faceless pictures join only when it agrees), is also listed in **rehash**;
- otherwise fingerprint it: unreadable -> **skipped** (with the reason; its known row, if any, is kept as it
  was: the next build reads it again); not an image (no image signature and no
  image extension, e.g. `index.tsv`) -> **ignored**; same content as its own known row (a touched file) ->
  **reuse** (counted unchanged); content known from another row or a checkpoint (a rename, a copy, a resumed
  build) -> **reuse**, unless that content is to be re-detected or retried as above; else -> **analyze**. A
  known row to re-detect or retry also reuses its content's rows from a checkpoint or another path, when they
  were made since and stand.

Known paths no longer scanned are **removed**, except under a folder the scan could not list (`unlisted`: no
permission, an NFS hiccup): its known rows are **kept** as they are (counted unchanged), as nothing says its files
are gone; likewise the known row of a file the scan found but could not `stat` (`unstatted`: the scan counted it
skipped) is kept as it is.

`rebuild` (`memeindex build --rebuild`): every file is analysed afresh (content met in a checkpoint of the same
rebuild is still reused); the known rows serve only the files that cannot be read now (unlisted, unstatted,
fingerprint failed), which keep them as above, and the count of removed paths.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from .generation import ImageRow, retries_unasked


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
    phash_only: bool = False  # a kept file indexed before its hashes were: only its first frame's hashes are wanted
    run_failures: int = 0  # a retried file's failures of the run so far: the build adds them if the run fails it again


@dataclass
class Plan:
    keep: list[ImageRow] = field(default_factory=list)  # rows kept as they are, with their face rows
    reuse: list[ImageRow] = field(default_factory=list)  # new rows whose faces are copied from known content
    analyze: list[Task] = field(default_factory=list)
    rehash: list[Task] = field(default_factory=list)  # kept files missing a hash grouping reads (older schemas)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): could not be read
    ignored: list[str] = field(default_factory=list)  # not images
    unchanged: int = 0  # kept + touched-but-same-content
    reused: int = 0  # content found under another path or in a checkpoint
    redetect: int = 0  # of `analyze`: noface files of an older detector, analysed again
    retried: int = 0  # of `analyze`: failed files analysed again (a failure of the run, or `retry_failed`)


def plan(known: Iterable[ImageRow], scanned: Sequence[Scanned], fingerprint: Callable[[str], Fingerprint],
         detector: str, checkpointed: Iterable[ImageRow] = (), retry_failed: bool = False,
         unlisted: Iterable[str] = (), unstatted: Iterable[str] = (), rebuild: bool = False) -> Plan:
    """Decide what a build does with every scanned file. `fingerprint(rel)` may raise OSError (-> skipped).
    `retry_failed`: analyse every failed file again, whatever made it fail. `unlisted`: folders (relative to the
    root) the scan could not list: the known rows under them are kept, not removed. `unstatted`: files the scan found
    but could not stat (it counts them skipped): their known rows are kept, not removed. `rebuild`: analyse every
    readable file afresh; known rows stand only for the files that cannot be read now."""
    known_by_path = {r.path: r for r in known}
    by_sha: dict[str, ImageRow] = {}
    for row in [*([] if rebuild else known_by_path.values()), *checkpointed]:
        if row.sha256 not in by_sha or _redo(by_sha[row.sha256], detector, retry_failed) is not None:
            by_sha[row.sha256] = row  # a settled row of the content wins over one that would be analysed again
    out = Plan()
    for f in scanned:
        old = None if rebuild else known_by_path.get(f.rel)
        if old is not None and old.size == f.size and old.mtime_ns == f.mtime_ns:
            if _redo(old, detector, retry_failed) is None:
                out.keep.append(old)
                out.unchanged += 1
                if old.status != "failed" and (not old.phash or (old.status == "noface" and not old.dhash)):
                    out.rehash.append(Task(f.rel, old.sha256, f.size, f.mtime_ns, phash_only=True))
                continue
            sha256 = old.sha256
        else:
            try:
                fp = fingerprint(f.rel)
            except OSError as exc:
                out.skipped.append((f.rel, exc.strerror or str(exc)))
                if f.rel in known_by_path:  # unreadable is not changed: what the index knows stands until it reads
                    out.keep.append(known_by_path[f.rel])
                continue
            if not fp.image:
                out.ignored.append(f.rel)
                continue
            sha256 = fp.sha256
        source = by_sha.get(sha256)
        redo = _redo(source, detector, retry_failed) if source is not None else None
        if source is None or redo is not None:
            out.analyze.append(Task(f.rel, sha256, f.size, f.mtime_ns,
                                    run_failures=source.run_failures if redo == "retry" and not retry_failed else 0))
            out.redetect += redo == "redetect"
            out.retried += redo == "retry"
        else:
            out.reuse.append(ImageRow(f.rel, sha256, f.size, f.mtime_ns, source.status, source.faces,
                                      source.reason, source.phash, source.template, source.detector,
                                      source.run_failures, source.dhash))
            if old is not None and old.sha256 == sha256 and _redo(old, detector, retry_failed) is None:
                out.unchanged += 1  # touched, same content
            else:
                out.reused += 1
    scanned_paths = {f.rel for f in scanned}
    unseen = [known_by_path[p] for p in sorted(known_by_path) if p not in scanned_paths]
    prefixes = tuple(f"{folder}/" for folder in unlisted)
    unstatted = set(unstatted)
    for old in unseen:
        if prefixes and old.path.startswith(prefixes):
            out.keep.append(old)
            out.unchanged += 1
        elif old.path in unstatted:  # counted skipped by the scan, not unchanged
            out.keep.append(old)
        else:
            out.removed.append(old.path)
    return out


def _redo(row: ImageRow, detector: str, retry_failed: bool) -> str | None:
    """Why the content of a known row is analysed again ("redetect" / "retry"), or None: its rows stand."""
    if row.status == "noface" and row.detector != detector:
        return "redetect"
    if row.status == "failed" and (retry_failed or retries_unasked(row.status, row.run_failures)):
        return "retry"
    return None
