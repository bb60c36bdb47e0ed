"""build(): scan -> plan (mark and sweep) -> backend analyses the new files -> one generation published atomically.

Incremental: a file whose size and mtime are unchanged keeps its rows untouched; a changed or new file is
hashed, and content seen before (a rename, a copy, a touched file, a checkpoint of a killed build) reuses its
rows; only truly new content is analyzed. Files with no face and files that failed are remembered too, except
that a file an older detector found no face in is analysed again, and so is a file the run rather than the file
made fail (the time limit, a dead worker: generation.RUN_FAILURE_RETRIES), or every failed file with `retry_failed`.
The scan, the plan, checkpoints, the lock and the publish stay here (the driver) whatever the backend.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from . import generation as gen
from .errors import IndexDamaged, IndexMismatch, RootMissing
from .generation import Checkpoints, FileRows, IndexDir, ImageRow
from .plan import Plan, plan
from .scan import fingerprint, walk
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What a build did and what the index now holds. Every scanned entry is in exactly one of indexed,
    unchanged, reused, skipped, ignored; images = indexed + unchanged + reused + the skipped files whose known
    rows were kept (a file that could not be stat'ed or read keeps what the index knew of it)."""

    indexed: int = 0  # analysed this run
    unchanged: int = 0  # also the known files under a folder the scan could not list (kept as they were)
    reused: int = 0  # new paths whose content was already known (renames, copies, checkpoints)
    removed: int = 0  # paths of the previous generation that are gone
    redetected: int = 0  # of indexed: files an older detector found no face in
    retried: int = 0  # of indexed: failed files analysed again (the run made them fail, or retry_failed)
    skipped: int = 0  # found but unreadable (each logged with its reason)
    ignored: int = 0  # not images (index.tsv, README, hidden files): no row
    noface: int = 0  # files the index holds without a face
    failed: int = 0  # files the index holds that failed (each with its reason in images.parquet)
    failed_now: int = 0  # of indexed: failed this run
    images: int = 0  # files the index now accounts for
    faces: int = 0  # faces the index now holds
    seconds: float = 0.0
    model_id: str = ""
    detector: str = ""
    backend: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def build(root: Path, index_dir: Path | None = None, settings: Settings | None = None, rebuild: bool = False,
          workers: int | None = None, progress: bool = False, backend: str | None = None,
          ray_address: str | None = None, index_type: str | None = None,
          retry_failed: bool = False) -> BuildSummary:
    """Bring the index at `index_dir` up to date with the images under `root`.

    `retry_failed`: analyse every file that failed again (after installing a decoder, say); without it only the
    files that failed for the run's sake (time limit, a dead worker, memory) are, a few builds in a row.

    `index_type` (default: settings.index_type) names the FAISS index (vectors.py); a generation built for another
    requested type is republished with this one even when no file changed."""
    from .backends import get_backend
    from .embedders import get_embedder
    from .faces import detector_id

    started = time.monotonic()
    settings = settings or Settings.from_env()
    if workers is not None:  # Settings owns the range: 0 workers is BadSetting, as MEMEINDEX_WORKERS=0 is
        settings = dataclasses.replace(settings, workers=workers)
    from . import vectors

    index_type = vectors.check_requested_type(index_type or settings.index_type)
    root = Path(root).expanduser().resolve()
    idx = IndexDir(index_dir or settings.index_dir)
    embedder = get_embedder(settings)
    model_id, dim, detector = embedder.model_id, embedder.dim, detector_id(settings)
    model_sha256 = embedder.model_sha256
    backend_name = backend or settings.backend
    def has_index() -> bool:
        try:
            return idx.current_or_none() is not None
        except IndexDamaged:
            return True

    def refused(why: str, act: str = "wipe") -> RootMissing:  # a first build has no index to keep: say so
        kept = f"refusing to {act} the index" if has_index() else "nothing to index"
        return RootMissing(f"image folder {root} {why}: {kept}")

    if not root.is_dir():
        raise refused("is not a folder" if root.exists() else "does not exist", "touch")
    scan = walk(root, skip=idx.path)  # an index kept among the images: its own files are not memes
    if not scan.files:
        raise refused("holds no files")
    summary = BuildSummary(model_id=model_id, detector=detector, backend=backend_name)
    with idx.lock():
        idx.clean_stale()
        try:
            current = idx.current_or_none()
        except IndexDamaged:
            if not rebuild:
                raise
            current = None  # --rebuild is the way out of a damaged index: nothing of it is kept
        previous = gen.Generation(current) if current is not None else None
        prev_images: list[ImageRow] = []
        prev_faces = gen.faces_schema(dim).empty_table()
        gone_before: list[str] = []  # --rebuild of an index it cannot use: only its paths, for the removed count
        if previous is not None:
            try:
                previous.check(model_id, dim, model_sha256)
                prev_images, prev_faces = gen.image_rows(previous.images()), previous.faces()
            except (IndexMismatch, IndexDamaged):
                if not rebuild:
                    raise
                # --rebuild is the way out of another model's or a damaged index: nothing of it is kept
                with contextlib.suppress(IndexDamaged):
                    gone_before = gen.row_keys(previous.images(["path", "path_bytes"]))
        # index.json's model_sha256 vouches for every vector in the index: rows kept from an index that recorded
        # none (built before it was recorded) may be another file's, so such an index stays unstamped until a rebuild.
        stamp = model_sha256
        if prev_images and not rebuild and not previous.facts.get("model_sha256"):
            stamp = ""
        checkpoints = Checkpoints(idx)
        ck_images, ck_faces = checkpoints.read(model_id, dim, model_sha256)
        work = plan(prev_images, scan.files, lambda rel: fingerprint(root / rel), detector,
                    gen.image_rows(ck_images), retry_failed, scan.unlisted, scan.unstatted, rebuild)
        if len(work.ignored) == len(scan.files):  # a mount point's placeholder README, a folder of the wrong files
            raise refused("holds no image files")
        for rel, reason in scan.skipped + work.skipped:
            log.warning("skipping %s: %s", gen.shown_path(rel), reason)
        for rel in work.ignored:
            log.info("ignoring %s: not an image", gen.shown_path(rel))
        scanned = {f.rel for f in scan.files}
        summary.removed = len(work.removed) + sum(1 for p in gone_before if p not in scanned)
        summary.skipped = len(scan.skipped) + len(work.skipped)
        summary.ignored = len(work.ignored) + scan.hidden
        summary.unchanged, summary.reused, summary.redetected = work.unchanged, work.reused, work.redetect
        summary.retried = work.retried
        if work.rehash:
            log.info("computing the picture hashes of %d file(s) indexed before they were recorded", len(work.rehash))

        be = get_backend(backend_name, root, settings, model_id, workers, ray_address)
        try:
            analysed = _analyze(be, work, checkpoints, settings, progress, summary, model_id, dim, model_sha256, root,
                                "the index is left as it was" if has_index() else "no index is written yet")
        finally:
            be.close()
        images = [*work.keep, *work.reuse, *(r.image for r in analysed)]
        summary.images = len(images)
        summary.noface = sum(r.status == "noface" for r in images)
        summary.failed = sum(r.status == "failed" for r in images)
        nothing_changed = (previous is not None and not rebuild and len(work.keep) == len(prev_images)
                           and not work.reuse and not analysed and not work.rehash and previous.facts.get("detector") == detector
                           and vectors.requested_type(previous.facts) == index_type
                           and previous.facts.get("root") == str(root))  # a moved folder: the server opens files there
        if nothing_changed:  # keep the generation: a re-run does no work, not even a rewrite
            summary.faces = previous.facts.get("count", prev_faces.num_rows)
            checkpoints.clear()  # leftovers of a killed build whose files are gone: nothing left to resume
        else:
            faces = _assemble(prev_faces, ck_faces, work, analysed, dim, rebuild)
            summary.faces = faces.num_rows
            summary.seconds = time.monotonic() - started
            _publish(idx, faces, images, root, model_id, dim, detector, summary, index_type, stamp)
            checkpoints.clear()
    summary.seconds = time.monotonic() - started
    log.info("build done: %s", summary.to_dict())
    return summary


def _folder_gone(root: Path) -> bool:
    """The image folder is missing or empty (an unmounted share's mount point), as the build's start refuses it."""
    try:
        with os.scandir(root) as entries:
            return next(entries, None) is None
    except OSError:
        return True


def _analyze(backend, work: Plan, checkpoints: Checkpoints, settings: Settings, progress: bool,
             summary: BuildSummary, model_id: str, dim: int, model_sha256: str, root: Path,
             left: str) -> list[FileRows]:
    from tqdm import tqdm

    done: list[FileRows] = []
    pending: list[FileRows] = []
    n = 0
    tasks = work.analyze + work.rehash
    kept = {r.path: r for r in work.keep} if work.rehash else {}
    rehash = {t.rel for t in work.rehash}
    # A worker marks the run's failure of a file as 1; the builds in a row before it are the plan's (Task).
    earlier_run_failures = {t.rel: t.run_failures for t in work.analyze if t.run_failures}
    bar = tqdm(total=len(tasks), desc="indexing", unit="img", disable=not progress or not tasks, leave=False)
    try:
        for rows in backend.analyze(tasks):
            bar.update(1)
            if rows.image.path in rehash:  # a kept file's pHash: its rows stay, it gains the hashes
                row = kept[rows.image.path]
                if rows.image.sha256 == row.sha256 and rows.image.status != "failed":
                    row.phash, row.dhash = rows.image.phash, rows.image.dhash
                continue
            summary.indexed += 1
            if rows.image.run_failures:
                rows.image.run_failures += earlier_run_failures.get(rows.image.path, 0)
            if rows.image.status == "failed":
                # unmounted (the folder or a share mounted inside it): every file left there fails too, and a
                # publish would fail them all
                gone = next((f for f in (root, (root / rows.image.path).parent) if _folder_gone(f)), None)
                if gone is not None:
                    where = "" if gone == root else f"{gone.relative_to(root)} in "
                    raise RootMissing(f"{where}image folder {root} went missing or empty during the build: stopped, "
                                      f"{left}; the next build resumes from the files done so far")
                summary.failed_now += 1
                log.warning("skipping %s: %s", gen.shown_path(rows.image.path), rows.image.reason)
            done.append(rows)
            pending.append(rows)
            if len(pending) >= settings.checkpoint_every:
                n += 1
                checkpoints.write(n, pending, model_id, dim, model_sha256)
                pending = []
    finally:
        bar.close()
    return done


def _assemble(prev_faces: pa.Table, ck_faces: pa.Table, work: Plan, analysed: list[FileRows], dim: int,
              rebuild: bool = False) -> pa.Table:
    """The face rows of the new generation: kept paths' rows, reused content's rows under their new paths, and
    the rows of the files analysed now. A rebuild reuses content from its checkpoints only, as its plan did."""
    parts = [gen.take_paths(prev_faces, (r.path for r in work.keep))]
    reuse = [r for r in work.reuse if r.status == "faces"]
    if reuse:
        known = ck_faces if rebuild else pa.concat_tables([prev_faces, ck_faces])
        # One source path per content hash, so a file copied twice does not double its faces.
        rows_by_sha: dict[str, list[int]] = {}
        first_path: dict[str, str] = {}
        for i, (sha, path) in enumerate(zip(known.column("sha256").to_pylist(), gen.row_keys(known))):
            if first_path.setdefault(sha, path) == path:
                rows_by_sha.setdefault(sha, []).append(i)
        for row in reuse:
            taken = rows_by_sha.get(row.sha256, [])
            parts.append(gen.retag(known.take(taken), row.path, row.sha256, row.size, row.mtime_ns))
    parts.append(gen.faces_table([f for r in analysed for f in r.faces], dim))
    return gen.sort_faces(pa.concat_tables(parts))


def _templates(images: pa.Table, faces: pa.Table, model_id: str) -> tuple[pa.Table, pa.Table]:
    """Both tables with their `template` column filled: near-duplicate groups over the whole generation."""
    from .templates import template_ids

    image_templates, face_templates = template_ids(images, faces, model_id)  # in the tables' row order

    def fill(table: pa.Table, templates) -> pa.Table:
        return table.set_column(table.schema.get_field_index("template"), "template", templates)

    return fill(images, image_templates), fill(faces, face_templates)


def _publish(idx: IndexDir, faces: pa.Table, images: list[ImageRow], root: Path, model_id: str, dim: int,
             detector: str, summary: BuildSummary, index_type: str = "auto", model_sha256: str = "") -> None:
    from . import vectors

    images_table = gen.sort_images(gen.images_table(images))
    images_table, faces = _templates(images_table, faces, model_id)
    built = vectors.build_index(gen.embeddings(faces), dim, index_type)
    gen.write_generation(idx, faces, images_table, built.index, model_id=model_id, dim=dim,
                         model_sha256=model_sha256, detector=detector,
                         root=str(root), summary=summary.to_dict(), **built.facts)
