"""Local worker processes, one file at a time each, supervised by the driver.

Not a multiprocessing.Pool: a Pool whose worker dies (the OOM killer, a native crash on a hostile file) loses
that task and waits for it forever. Here each worker has its own pipe and the driver knows which file each one
holds, so a worker that dies, or a file that runs past `settings.file_timeout` (the worker is then killed), makes
that one file `failed` with the reason; a fresh worker takes its place and the build goes on.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import MemeIndexError, WorkerFailed
from ..generation import FileRows
from ..plan import Task
from ..settings import Settings
from . import waiting_for_start

log = logging.getLogger(__name__)


def main_reimportable() -> bool:
    """Worker processes re-import the main script; one read from stdin or `-c` cannot be, and its workers would
    fail to start."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path is None or os.path.isfile(path)


def _worker_main(conn, root: str, settings: Settings, quiet: bool, threads: int, factory) -> None:
    if quiet:
        from ..workers import silence_native_stderr

        silence_native_stderr()
    try:
        if factory is None:
            from ..workers import Analysis as factory

        analysis = factory(settings, root, num_threads=threads)
    except BaseException as exc:  # noqa: BLE001 (reported to the driver, which raises it)
        conn.send(("init_error", exc if isinstance(exc, MemeIndexError) else WorkerFailed(
            f"a worker could not load the models: {type(exc).__name__}: {exc}")))
        return
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                task = conn.recv()
            except EOFError:  # the driver is gone
                return
            if task is None:
                return
            conn.send(("done", analysis.run(task)))
    finally:
        analysis.close()


class _Worker:
    def __init__(self, ctx, root: str, settings: Settings, threads: int, factory=None):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, root, settings, True, threads, factory),
                                   daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.task: Task | None = None
        self.started = 0.0
        self.spawned = time.monotonic()

    def give(self, task: Task) -> bool:
        """False when the worker is already gone (it died idle, e.g. the OOM killer between two files): the pipe is
        broken, the task was never delivered, and its death is handled like any other."""
        try:
            self.conn.send(task)
        except OSError:
            return False
        self.task, self.started = task, time.monotonic()
        return True

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)
        self.conn.close()


class PoolBackend:
    def __init__(self, root: Path, settings: Settings, model_id: str, workers: int, analysis_factory=None):
        """`analysis_factory(settings, root, num_threads=)` makes each worker's analysis (default:
        memeindex.workers.Analysis; a picklable fake in unit tests)."""
        self.root, self.settings, self.model_id, self.workers = str(root), settings, model_id, workers
        self._factory = analysis_factory
        from ..faces import detector_id

        self.detector = detector_id(settings)
        # forkserver: workers start from a clean process (no inherited Arrow threads), without a full spawn.
        self._ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
        self.pids: list[int] = []  # worker pids, for tests and monitors

    def _failed(self, task: Task, reason: str) -> FileRows:
        """A file the run made fail (its worker died, its time limit): the next builds retry it."""
        from ..workers import failed_rows

        return failed_rows(task, reason, self.model_id, self.detector, by_run=True)

    def analyze(self, tasks: Iterable[Task]) -> Iterator[FileRows]:
        pending = deque(tasks)
        if not pending:
            return
        timeout = self.settings.file_timeout
        n = max(1, min(self.workers, len(pending)))
        from ..workers import inference_threads, over_time_limit, worker_died

        self._threads = inference_threads(n)
        workers = [_Worker(self._ctx, self.root, self.settings, self._threads, self._factory) for _ in range(n)]
        deaths_before_ready, warned = 0, False
        try:
            while pending or any(w.task for w in workers):
                for w in workers:
                    if w.ready and w.task is None and pending:
                        task = pending.popleft()
                        if not w.give(task):
                            pending.appendleft(task)  # never delivered: it waits for this worker's replacement
                now = time.monotonic()
                deadlines = [w.started + timeout - now for w in workers if w.task is not None]
                wait_s = max(0.0, min(deadlines)) if deadlines and timeout > 0 else None
                if not any(w.ready for w in workers):  # all loading: look at the start limit every second
                    wait_s = 1.0 if wait_s is None else min(wait_s, 1.0)
                handles = [w.conn for w in workers] + [w.process.sentinel for w in workers]
                wait(handles, timeout=wait_s)
                for i, w in enumerate(workers):
                    replace, rows = False, None
                    try:
                        message = w.conn.recv() if w.conn.poll() else None
                    except (EOFError, OSError):
                        message = None
                        replace = True
                    if message is not None:
                        kind, value = message
                        if kind == "ready":
                            w.ready = True
                            self.pids.append(value)
                        elif kind == "done":
                            rows, w.task = value, None
                        elif kind == "init_error":
                            raise value
                    if rows is not None:
                        yield rows
                        continue
                    if not w.process.is_alive():
                        replace = True
                    if replace:
                        w.process.join(2)  # its pipe closes a moment before its exit status is known
                        code = w.process.exitcode
                        if w.task is not None:
                            why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                            yield self._failed(w.task, worker_died(why))
                        elif not w.ready:
                            deaths_before_ready += 1
                            if deaths_before_ready > 2 * n:
                                raise WorkerFailed("worker processes keep dying while loading the models")
                        w.kill()
                        workers[i] = self._respawn(pending)
                    elif timeout > 0 and w.task is not None and time.monotonic() - w.started > timeout:
                        yield self._failed(w.task, over_time_limit(timeout))
                        w.task = None
                        w.kill()
                        workers[i] = self._respawn(pending)
                workers = [w for w in workers if w is not None]
                if workers and not any(w.ready for w in workers):
                    warned = waiting_for_start(time.monotonic() - max(w.spawned for w in workers), warned,
                                               "a worker process")
        finally:
            for w in workers:
                if w is None:
                    continue
                if w.task is None and w.ready:
                    w.stop()
                else:
                    w.kill()

    def _respawn(self, pending: deque) -> _Worker | None:
        """A fresh worker in place of a lost one, when there is work left for it."""
        return _Worker(self._ctx, self.root, self.settings, self._threads, self._factory) if pending else None

    def close(self) -> None:
        pass
