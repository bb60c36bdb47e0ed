"""Ray actors, each holding the models, analysing files the driver reads and ships (the `[ray]` extra).

The driver reads each file and puts its bytes in Ray's object store, so the workers need no access to the image
folder: only memeindex and the fetched models at the same `MEMEINDEX_MODELS` path on every node. Without an
address a local Ray starts with `workers` CPUs; with one (`--ray-address ray://head:10001` or `auto`) the build
joins that cluster and starts one actor per CPU the cluster offers (or `--workers`). An actor gets files once its
models are loaded (a model that cannot load is the build's typed error, as with the pool); a file's time limit runs
from when its actor starts it. An actor that dies or a file past the per-file limit makes that one file `failed`
(exactly once: a file whose rows arrived as its limit passed is done); a new actor takes its place.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import MemeIndexError, WorkerFailed
from . import waiting_for_start
from ..generation import FileRows
from ..plan import Task
from ..settings import Settings

log = logging.getLogger(__name__)

IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: hides the round trip without hoarding work


class _Analyzer:
    """The actor body (wrapped with ray.remote at run time, so importing this module needs no Ray)."""

    def __init__(self, settings: Settings):
        from ..workers import Analysis, silence_native_stderr

        silence_native_stderr()
        self.analysis, self.init_error = None, None
        try:
            self.analysis = Analysis(settings)
        except MemeIndexError as exc:  # a missing model: the build's error, which ready() hands the driver
            self.init_error = exc

    def ready(self) -> MemeIndexError | None:
        """Answers once the models are loaded (a file's time limit starts then, not while its actor starts), with
        the typed error that kept them from loading, if one did."""
        return self.init_error

    def run(self, ref, data: bytes, phash_only: bool) -> FileRows:
        return self.analysis.run_bytes(ref, data, phash_only)


class RayBackend:
    def __init__(self, root: Path, settings: Settings, model_id: str, workers: int | None, address: str | None):
        try:
            import ray
        except ImportError:
            raise WorkerFailed("the ray backend needs Ray: pip install 'memeindex[ray]'") from None
        from ..faces import detector_id

        self._ray = ray
        self.root, self.settings, self.model_id = Path(root), settings, model_id
        self.detector = detector_id(settings)
        self._started_ray = False
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                          configure_logging=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=workers or settings.workers, **kwargs)
            self._started_ray = True
        # One actor per CPU Ray offers (a whole cluster), or as many as asked for.
        cluster_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = max(1, min(workers or cluster_cpus, cluster_cpus))
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(_Analyzer)

    def _failed(self, task: Task, reason: str) -> FileRows:
        """A file the run made fail (its actor died, its time limit, Ray itself): the next builds retry it."""
        from ..workers import failed_rows

        return failed_rows(task, reason, self.model_id, self.detector, by_run=True)

    def analyze(self, tasks: Iterable[Task]) -> Iterator[FileRows]:
        from ..workers import over_time_limit, read_file, unreadable, worker_died

        ray = self._ray
        died = ray.exceptions.RayActorError
        pending = deque(tasks)
        if not pending:
            return
        timeout = self.settings.file_timeout
        n = min(self.workers, len(pending))
        actors: list = [None] * n
        starting: dict = {}  # an actor's ready() ref -> its index, until its models are loaded
        asked_at = [0.0] * n  # when each actor was last asked for
        warned = False
        queues: list[deque] = [deque() for _ in range(n)]  # each actor's refs, in the order it runs them
        task_of: dict = {}  # ref of a file's run -> (task, actor index)
        head_since = [0.0] * n  # when the file at the head of each actor's queue started
        deaths, deaths_before_ready = 0, 0
        suspects: set[str] = set()  # files an actor died holding with another: each runs alone from then on

        def start(i):
            """A fresh actor i; the files that waited behind the one it replaces go back to the queue."""
            if actors[i] is not None:
                ray.kill(actors[i])
            while queues[i]:
                pending.appendleft(task_of.pop(queues[i].pop())[0])
            actors[i] = self._actor_class.remote(self.settings)
            starting[actors[i].ready.remote()], asked_at[i] = i, time.monotonic()

        def take(obj) -> FileRows:
            """The rows of a finished run, off its queue; a Ray error (not its own) fails the file. Raises died."""
            task, i = task_of[obj]
            try:
                rows = ray.get(obj)
            except died:
                raise
            except ray.exceptions.RayError as exc:
                rows = self._failed(task, f"{type(exc).__name__}: {exc}")
            del task_of[obj]
            queues[i].remove(obj)
            return rows

        try:
            for i in range(n):
                start(i)
            while pending or task_of:
                for i, queue in enumerate(queues):
                    while pending and i not in starting.values() and len(queue) < IN_FLIGHT_PER_ACTOR:
                        if queue and (pending[0].rel in suspects or any(task_of[o][0].rel in suspects for o in queue)):
                            break  # a suspect runs alone
                        task = pending.popleft()
                        try:
                            data, ref = read_file(self.root / task.rel, task, self.settings.max_file_bytes)
                        except (OSError, MemeIndexError) as exc:
                            yield unreadable(task, exc, self.model_id, self.detector)
                            continue
                        if not queue:
                            head_since[i] = time.monotonic()
                        running = actors[i].run.remote(ref, data, task.phash_only)
                        queue.append(running)
                        task_of[running] = (task, i)
                waiting = [*task_of, *starting]
                if not waiting:
                    continue
                done, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
                for obj in done:
                    if obj in starting:
                        i = starting.pop(obj)
                        try:
                            init_error = ray.get(obj)
                        except ray.exceptions.RayError as exc:  # it died loading the models
                            deaths_before_ready += 1
                            if deaths_before_ready > 2 * n:
                                raise WorkerFailed("Ray workers keep dying while loading the models "
                                                   f"({type(exc).__name__})") from exc
                            start(i)
                            continue
                        if init_error is not None:
                            raise init_error
                        continue
                    if obj not in task_of:  # its actor was replaced since: the file went back to the queue
                        continue
                    i = task_of[obj][1]
                    try:
                        rows = take(obj)
                    except died as exc:
                        deaths += 1
                        if deaths > 4 * n + 4:
                            raise WorkerFailed("Ray workers keep dying") from exc
                        # The actor ran its files in order: keep the rows of those it finished (not collected yet),
                        # blame the file it died on. Every ref of a dead actor resolves at once: these gets cannot
                        # wait. A file finished a moment before the death can lose its reply too, so with two
                        # unfinished the culprit is unknown: both go back and run alone, where a death is their own.
                        unfinished = []
                        for earlier in list(queues[i]):
                            try:
                                rows = take(earlier)
                            except died:
                                unfinished.append(task_of.pop(earlier)[0])
                                queues[i].remove(earlier)
                                continue
                            yield rows
                        if len(unfinished) == 1:
                            yield self._failed(unfinished[0], worker_died(type(exc).__name__))
                        else:
                            suspects.update(t.rel for t in unfinished)
                            pending.extendleft(reversed(unfinished))
                        start(i)
                        continue
                    head_since[i] = time.monotonic()
                    yield rows
                if len(starting) == n:  # no actor can take a file
                    warned = waiting_for_start(time.monotonic() - max(asked_at), warned,
                                               "a Ray worker", "the cluster has no free CPU for one")
                if timeout > 0:
                    now = time.monotonic()
                    for i, queue in enumerate(queues):
                        if not queue or now - head_since[i] <= timeout:
                            continue
                        if ray.wait([queue[0]], timeout=0)[0]:
                            continue  # it finished as its limit passed (while the driver was busy): collected next
                        head = task_of.pop(queue.popleft())[0]
                        yield self._failed(head, over_time_limit(timeout))
                        start(i)
        finally:
            for actor in actors:
                if actor is not None:
                    ray.kill(actor)

    def close(self) -> None:
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False
