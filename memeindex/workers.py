"""Worker processes that turn files into face rows. One FaceAnalyzer per process (it is not picklable)."""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from dataclasses import dataclass

from .errors import MemeIndexError
from .settings import Settings

log = logging.getLogger(__name__)

_analyzer = None  # this process's FaceAnalyzer


@dataclass(frozen=True)
class Task:
    rel: str
    path: str
    sha256: str
    size: int
    mtime_ns: int


def silence_native_stderr() -> None:
    """MediaPipe's native code logs to fd 2 and no variable silences it; a worker's fd 2 has nothing else."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _init(settings: Settings, quiet: bool) -> None:
    global _analyzer
    if quiet:
        silence_native_stderr()
    from .pipeline import FaceAnalyzer

    _analyzer = FaceAnalyzer(settings)  # settings.embedder names the model


def analyze_task(task: Task) -> tuple[dict, list[dict]]:
    """(image row, face records) for one file. Never raises: a bad file becomes a 'failed' row with its reason."""
    image = {"path": task.rel, "sha256": task.sha256, "size": task.size, "mtime_ns": task.mtime_ns,
             "status": "noface", "faces": 0, "reason": ""}
    try:
        faces = _analyzer.analyze(task.path)
    except MemeIndexError as exc:
        return {**image, "status": "failed", "reason": str(exc)}, []
    except Exception as exc:  # noqa: BLE001 (one bad file must never stop a build)
        return {**image, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}, []
    records, per_frame = [], {}
    model_id = _analyzer.embedder.model_id
    for face in faces:
        number = per_frame.get(face.frame, 0)
        per_frame[face.frame] = number + 1
        records.append({"path": task.rel, "sha256": task.sha256, "size": task.size, "mtime_ns": task.mtime_ns,
                        "frame": face.frame, "face": number, "box": list(face.box), "score": face.score,
                        "blendshapes": face.blendshapes, "embedding": face.embedding, "model_id": model_id})
    if records:
        image.update(status="faces", faces=len(records))
    return image, records


def _main_reimportable() -> bool:
    """Worker processes re-import the main script; one read from stdin or `-c` cannot be, and its pool would
    respawn failing workers forever."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path is None or os.path.isfile(path)


def run_tasks(tasks: list[Task], settings: Settings, workers: int):
    """Yield (image row, face records) as files finish, in any order, from `workers` processes."""
    global _analyzer
    if not tasks:
        return
    if not _main_reimportable():
        log.info("analyzing in this process: the main script cannot be re-imported by worker processes")
        _init(settings, quiet=False)
        try:
            yield from map(analyze_task, tasks)
        finally:
            _analyzer.close()
            _analyzer = None
        return
    workers = max(1, min(workers, len(tasks)))
    # forkserver: workers start from a clean process (no inherited Arrow threads), without a full spawn.
    ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
    with ctx.Pool(workers, initializer=_init, initargs=(settings, True)) as pool:
        chunk = max(1, min(8, len(tasks) // (workers * 8)))
        yield from pool.imap_unordered(analyze_task, tasks, chunksize=chunk)
