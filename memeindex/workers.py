"""The analysis of one file, as every backend runs it: bytes -> frames -> faces -> the file's rows.

`Analysis` holds the models (a FaceAnalyzer: not picklable, one per process or Ray actor). It reads the file
once, hashes exactly the bytes it decodes and describes the rows with that hash and the size/mtime of the file
it read, so a file replaced between the scan and the analysis can never get rows of one content under the hash
of another (the images and faces tables always agree).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import MemeIndexError
from .generation import FileRef, FileRows, file_rows
from .plan import Task
from .scan import sha256_bytes
from .settings import Settings
from .templates import picture_hashes

log = logging.getLogger(__name__)


def silence_native_stderr() -> None:
    """MediaPipe's native code logs to fd 2 and no variable silences it; a worker's fd 2 has nothing else."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


class Analysis:
    """Models loaded once; `run(task)` never raises for a bad file: it becomes a `failed` row with its reason."""

    def __init__(self, settings: Settings, root: str | Path | None = None, num_threads: int = 1):
        from .faces import detector_id
        from .pipeline import FaceAnalyzer

        self.settings = settings
        self.root = Path(root) if root is not None else None
        # settings.embedder names the model; num_threads: the cores this process may use for inference
        self.analyzer = FaceAnalyzer(settings, num_threads=num_threads)
        self.model_id = self.analyzer.embedder.model_id
        self.detector = detector_id(settings)

    def read(self, task: Task) -> tuple[bytes, FileRef]:
        """The file's bytes and the FileRef describing exactly them. Raises OSError / MemeIndexError."""
        return read_file(self.root / task.rel, task, self.settings.max_file_bytes)

    def run(self, task: Task) -> FileRows:
        try:
            data, ref = self.read(task)
        except (OSError, MemeIndexError) as exc:
            return unreadable(task, exc, self.model_id, self.detector)
        return self.run_bytes(ref, data, task.phash_only)

    def run_bytes(self, ref: FileRef, data: bytes, phash_only: bool = False) -> FileRows:
        """The rows of the file whose bytes are `data`; with `phash_only`, an image row carrying only the first
        frame's perceptual hash (no face is looked for)."""
        phash = dhash = ""
        try:
            frames = self.analyzer.frames(data)
            if frames:  # near-duplicate grouping at publish (templates.template_ids)
                phash, dhash = picture_hashes(frames[0].rgb)
            faces = [] if phash_only else [face for frame in frames for face in self.analyzer.analyze_frame(frame)]
        except MemeIndexError as exc:
            return file_rows(ref, model_id=self.model_id, detector=self.detector, reason=str(exc))
        except MemoryError:  # the machine's state, not the file's (the file's own size limits are MemeIndexErrors)
            return file_rows(ref, model_id=self.model_id, detector=self.detector, reason="out of memory",
                             run_failures=1)
        except Exception as exc:  # noqa: BLE001 (one bad file must never stop a build)
            return file_rows(ref, model_id=self.model_id, detector=self.detector,
                             reason=f"{type(exc).__name__}: {exc}")
        return file_rows(ref, faces, model_id=self.model_id, detector=self.detector, phash=phash, dhash=dhash)

    def close(self) -> None:
        self.analyzer.close()


def inference_threads(processes: int) -> int:
    """Inference threads per analysing process: its share of the cores, at least one (one process on two cores gets
    two, two processes one each). More threads than cores spin against each other (LiteRT's thread pool busy-waits):
    two workers on 2 cores, the full frame only, alternating runs: 104 and 103 images/s with one thread each against
    89 and 93 with two (scripts/bench_build.py --fast --workers 2, load ~4). On a machine crowded by other jobs, more
    threads would win the build a larger share of the CPU, but only by taking it from those jobs."""
    cores = os.cpu_count() or 1
    return max(1, cores // max(1, processes))


def over_time_limit(timeout: float) -> str:
    """The reason of a file cut at the per-file time limit (settings.file_timeout), whichever backend cut it."""
    return f"took longer than the {timeout:g} s per-file limit (raise it with --file-timeout or MEMEINDEX_FILE_TIMEOUT)"


def worker_died(why: str) -> str:
    """The reason of a file whose worker process or actor died holding it (`why`: a signal, an exit code)."""
    return f"the worker analysing it died ({why})"


def failed_rows(task: Task, reason: str, model_id: str, detector: str, by_run: bool = False) -> FileRows:
    """The rows of a task that failed; `by_run`: the run made it fail, not the file (the next builds retry it). A
    worker marks this run's failure as 1; the builds in a row before it are the driver's to add (indexer._analyze)."""
    ref = FileRef(task.rel, task.sha256, task.size, task.mtime_ns)
    return file_rows(ref, model_id=model_id, detector=detector, reason=reason, run_failures=int(by_run))


def unreadable(task: Task, exc: OSError | MemeIndexError, model_id: str, detector: str) -> FileRows:
    """The rows of a task whose file read_file could not read: an OSError is the run's failure (the file was there
    at the scan: moved, replaced or locked since, not broken; the next builds retry it), a MemeIndexError the file's
    own (over the size limit)."""
    if isinstance(exc, OSError):
        return failed_rows(task, f"cannot read: {exc.strerror or exc}", model_id, detector, by_run=True)
    return failed_rows(task, str(exc), model_id, detector)


def read_file(path: Path, task: Task, max_bytes: int) -> tuple[bytes, FileRef]:
    """Bytes of `path` and their FileRef (sha256 of these bytes, size/mtime of the file they came from)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size > max_bytes:
            from .errors import ImageTooLarge

            raise ImageTooLarge(f"file of {st.st_size} bytes is over the {max_bytes}-byte limit "
                                "(MEMEINDEX_MAX_FILE_BYTES)")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        from .errors import ImageTooLarge

        raise ImageTooLarge(f"file grew over the {max_bytes}-byte limit while being read")
    return data, FileRef(task.rel, sha256_bytes(data), len(data), st.st_mtime_ns)
