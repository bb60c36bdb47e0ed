"""build(): scan -> diff with the store (mark and sweep) -> analyze new files in workers -> publish atomically.

Incremental: a file whose size and mtime are unchanged keeps its rows untouched; a changed or new file is
hashed, and content seen before (a rename, a copy, a touched file, a checkpoint of a killed build) reuses its
rows; only truly new content is analyzed. Files with no face and files that failed are remembered too.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from . import store, vectors
from .embedders import get_embedder
from .errors import RootMissing
from .indexdir import IndexDir
from .models import sha256_file
from .scan import walk
from .settings import Settings
from .workers import Task, run_tasks

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    indexed: int = 0  # analyzed this run
    unchanged: int = 0
    reused: int = 0  # new paths whose content was already known (renames, copies)
    removed: int = 0
    noface: int = 0  # of those analyzed this run
    failed: int = 0  # of those analyzed this run
    images: int = 0  # files the index now accounts for
    faces: int = 0  # faces the index now holds
    seconds: float = 0.0
    model_id: str = ""

    def line(self) -> str:
        return ("memeindex build: indexed={indexed} unchanged={unchanged} reused={reused} removed={removed} "
                "noface={noface} failed={failed} images={images} faces={faces} model={model_id} "
                "in {seconds:.1f}s").format(**asdict(self))


def _known(idx: IndexDir, model_id: str, dim: int, rebuild: bool) -> tuple[pa.Table, list[dict], pa.Table]:
    """(previous faces, previous image rows, every face row whose content is known: previous + checkpoints)."""
    empty = store.faces_schema(dim).empty_table()
    prev_faces, prev_images = empty, []
    gen = idx.current_or_none()
    if gen is not None and not rebuild:
        vectors.check_facts(vectors.read_facts(gen), model_id, dim, idx.path)
        prev_faces = store.read_table(gen / "faces.parquet")
        prev_images = store.read_table(gen / "images.parquet").to_pylist()
    parts = [prev_faces]
    for chunk in sorted(idx.partial.glob("faces-*.parquet")):
        t = store.read_table(chunk)
        if t.num_rows and t.column("model_id")[0].as_py() != model_id:
            continue
        parts.append(t.cast(empty.schema))
    return prev_faces, prev_images, pa.concat_tables(parts)


def _checkpoint_images(idx: IndexDir, model_id: str) -> list[dict]:
    rows = []
    for chunk in sorted(idx.partial.glob("images-*.parquet")):
        if chunk.with_name(chunk.name.replace("images-", "faces-")).exists():
            t = store.read_table(chunk)
            if t.schema.metadata and t.schema.metadata.get(b"model_id", b"").decode() == model_id:
                rows += t.to_pylist()
    return rows


def _write_checkpoint(idx: IndexDir, n: int, images: list[dict], faces: list[dict], model_id: str, dim: int):
    idx.partial.mkdir(parents=True, exist_ok=True)
    stamp = f"{int(time.time() * 1000)}-{n:05d}"
    store.write_table(store.FaceRows.from_records(faces, dim).table, idx.partial / f"faces-{stamp}.parquet")
    table = store.images_table(images)
    table = table.replace_schema_metadata({**table.schema.metadata, b"model_id": model_id.encode()})
    store.write_table(table, idx.partial / f"images-{stamp}.parquet")


def build(root: Path, index_dir: Path | None = None, settings: Settings | None = None, rebuild: bool = False,
          workers: int | None = None, progress: bool = False) -> BuildSummary:
    """Bring the index at `index_dir` up to date with the images under `root`."""
    started = time.monotonic()
    settings = settings or Settings.from_env()
    root = Path(root).expanduser().resolve()
    idx = IndexDir(index_dir or settings.index_dir)
    embedder = get_embedder(settings)
    model_id, dim = embedder.model_id, embedder.dim
    if not root.is_dir():
        raise RootMissing(f"image folder {root} does not exist: refusing to touch the index")
    files = walk(root)
    if not files:
        raise RootMissing(f"image folder {root} holds no files: refusing to wipe the index")
    with idx.lock():
        idx.clean_stale()
        prev_faces, prev_images, known = _known(idx, model_id, dim, rebuild)
        summary = BuildSummary(model_id=model_id)
        prev_by_path = {r["path"]: r for r in prev_images}
        image_by_sha = {r["sha256"]: r for r in prev_images + _checkpoint_images(idx, model_id)}
        keep_paths, reuse, tasks, images = [], [], [], []
        for f in files:
            old = prev_by_path.get(f.rel)
            if old and old["size"] == f.size and old["mtime_ns"] == f.mtime_ns:
                keep_paths.append(f.rel)
                images.append(old)
                summary.unchanged += 1
                continue
            try:
                sha = sha256_file(root / f.rel)
            except OSError as exc:
                log.warning("skipping %s: %s", f.rel, exc.strerror or exc)
                continue
            row = {"path": f.rel, "sha256": sha, "size": f.size, "mtime_ns": f.mtime_ns}
            if sha in image_by_sha:
                images.append({**image_by_sha[sha], **row})
                reuse.append(row)
                if old and old["sha256"] == sha:
                    summary.unchanged += 1
                else:
                    summary.reused += 1
            else:
                tasks.append(Task(f.rel, str(root / f.rel), sha, f.size, f.mtime_ns))
        summary.removed = len(set(prev_by_path) - {f.rel for f in files})
        new_faces = _analyze(tasks, idx, settings, workers, progress, images, summary, model_id, dim)
        faces = _assemble(prev_faces, keep_paths, known, reuse, new_faces)
        if len(keep_paths) == len(prev_by_path) == len(images) and not rebuild and idx.current_or_none():
            summary.images, summary.faces = len(images), faces.num_rows  # nothing changed: keep the generation
        else:
            summary.seconds = time.monotonic() - started
            _publish(idx, faces, images, root, model_id, dim, summary)
    summary.seconds = time.monotonic() - started
    log.info("%s", summary.line())
    return summary


def _analyze(tasks, idx, settings, workers, progress, images, summary, model_id, dim) -> list[dict]:
    from tqdm import tqdm

    new_faces, pending_images, pending_faces, n = [], [], [], 0
    bar = tqdm(total=len(tasks), desc="indexing", unit="img", disable=not progress or not tasks, leave=False)
    for image, records in run_tasks(tasks, settings, workers or settings.workers):
        bar.update(1)
        summary.indexed += 1
        if image["status"] == "failed":
            summary.failed += 1
            log.warning("skipping %s: %s", image["path"], image["reason"])
        elif image["status"] == "noface":
            summary.noface += 1
        images.append(image)
        new_faces += records
        pending_images.append(image)
        pending_faces += records
        if len(pending_images) >= settings.checkpoint_every:
            n += 1
            _write_checkpoint(idx, n, pending_images, pending_faces, model_id, dim)
            pending_images, pending_faces = [], []
    bar.close()
    return new_faces


def _assemble(prev_faces: pa.Table, keep_paths: list[str], known: pa.Table, reuse: list[dict],
              new_faces: list[dict]) -> pa.Table:
    dim = known.schema.field("embedding").type.list_size
    parts = [prev_faces.filter(pc.is_in(prev_faces.column("path"), pa.array(keep_paths, pa.string())))]
    if reuse:
        # One source path per content hash, so a file copied twice does not double its faces.
        rows_by_sha: dict[str, list[int]] = {}
        first_path: dict[str, str] = {}
        for i, (sha, path) in enumerate(zip(known.column("sha256").to_pylist(), known.column("path").to_pylist())):
            if first_path.setdefault(sha, path) == path:
                rows_by_sha.setdefault(sha, []).append(i)
        for row in reuse:
            idx = rows_by_sha.get(row["sha256"], [])
            if idx:
                t = known.take(idx)
                for name in ("path", "size", "mtime_ns"):
                    col = pa.array([row[name]] * t.num_rows, t.schema.field(name).type)
                    t = t.set_column(t.schema.get_field_index(name), name, col)
                parts.append(t)
    parts.append(store.FaceRows.from_records(new_faces, dim).table)
    return pa.concat_tables(parts).sort_by([("path", "ascending"), ("frame", "ascending"), ("face", "ascending")])


def _publish(idx: IndexDir, faces: pa.Table, images: list[dict], root: Path, model_id: str, dim: int,
             summary: BuildSummary) -> None:
    images = sorted(images, key=lambda r: r["path"])
    summary.images, summary.faces = len(images), faces.num_rows
    gen = idx.new_generation()
    store.write_table(faces, gen / "faces.parquet")
    store.write_table(store.images_table(images), gen / "images.parquet")
    index = vectors.build_index(store.FaceRows(faces).embeddings(), dim)
    vectors.write_index(index, gen)
    vectors.write_facts(gen, model_id=model_id, dim=dim, count=faces.num_rows, images=len(images),
                        root=str(root), summary=asdict(summary))
    idx.publish(gen)
    for chunk in idx.partial.glob("*.parquet"):  # folded into the published generation
        chunk.unlink(missing_ok=True)
