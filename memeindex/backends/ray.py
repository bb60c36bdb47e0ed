"""Ray actors, each holding the models, analysing files the driver reads and ships (the `[ray]` extra).

The driver reads each file and puts its bytes in Ray's object store, so the workers need no access to the image
folder: only memeindex and the fetched models at the same `MEMEINDEX_MODELS` path on every node. Without an
address a local Ray starts with `workers` CPUs; with one (`--ray-address ray://head:10001` or `auto`) the build
joins that cluster and starts one actor per CPU the cluster offers (or `--workers`). An actor that dies or a file
past the per-file limit makes that one file `failed`; a new actor takes its place.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import MemeIndexError, WorkerFailed
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
        self.analysis = Analysis(settings)

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

    def _failed(self, task: Task, reason: str, by_run: bool = False) -> FileRows:
        from ..workers import failed_rows

        return failed_rows(task, reason, self.model_id, self.detector, by_run)

    def analyze(self, tasks: Iterable[Task]) -> Iterator[FileRows]:
        from ..workers import read_file

        ray = self._ray
        pending = deque(tasks)
        if not pending:
            return
        timeout = self.settings.file_timeout
        actors = [self._actor_class.remote(self.settings) for _ in range(min(self.workers, len(pending)))]
        in_flight: dict = {}  # object ref -> (task, actor index, order submitted)
        head_since = [0.0] * len(actors)  # when the file now running on each actor started
        order, deaths = 0, 0
        suspects: set[str] = set()  # files an actor died holding with another: each runs alone from then on

        def queued(i):
            return sorted((v[2], obj) for obj, v in in_flight.items() if v[1] == i)

        def replace(i):
            """A fresh actor i; the files that waited behind the lost one go back to the queue."""
            ray.kill(actors[i])
            actors[i] = self._actor_class.remote(self.settings)
            for _, obj in reversed(queued(i)):
                pending.appendleft(in_flight.pop(obj)[0])

        try:
            while pending or in_flight:
                for i in range(len(actors)):
                    while pending and len(queued(i)) < IN_FLIGHT_PER_ACTOR:
                        if queued(i) and (pending[0].rel in suspects
                                          or any(in_flight[obj][0].rel in suspects for _, obj in queued(i))):
                            break  # a suspect runs alone
                        task = pending.popleft()
                        try:
                            data, ref = read_file(self.root / task.rel, task, self.settings.max_file_bytes)
                        except OSError as exc:
                            yield self._failed(task, f"cannot read: {exc.strerror or exc}", by_run=True)
                            continue
                        except MemeIndexError as exc:
                            yield self._failed(task, str(exc))
                            continue
                        if not queued(i):
                            head_since[i] = time.monotonic()
                        order += 1
                        running = actors[i].run.remote(ref, data, task.phash_only)
                        in_flight[running] = (task, i, order)
                if not in_flight:
                    continue
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                for obj in done:
                    if obj not in in_flight:
                        continue
                    task, i, _ = in_flight[obj]
                    try:
                        rows = ray.get(obj)
                    except ray.exceptions.RayActorError as exc:
                        deaths += 1
                        if deaths > 4 * len(actors) + 4:
                            raise WorkerFailed("Ray workers keep dying") from exc
                        # The actor ran its files in order: keep the rows of those it finished (not collected yet),
                        # blame the file it died on. Every ref of a dead actor resolves at once: these gets cannot
                        # wait. A file finished a moment before the death can lose its reply too, so with two
                        # unfinished the culprit is unknown: both go back and run alone, where a death is their own.
                        unfinished = []
                        for _, earlier in queued(i):
                            try:
                                rows = ray.get(earlier)
                            except ray.exceptions.RayActorError:
                                unfinished.append(in_flight.pop(earlier)[0])
                                continue
                            except ray.exceptions.RayError as err:
                                rows = self._failed(in_flight[earlier][0], f"{type(err).__name__}: {err}", by_run=True)
                            in_flight.pop(earlier)
                            yield rows
                        if len(unfinished) == 1:
                            yield self._failed(unfinished[0], f"the worker analysing it died ({type(exc).__name__})",
                                               by_run=True)
                        else:
                            suspects.update(t.rel for t in unfinished)
                            pending.extendleft(reversed(unfinished))
                        replace(i)
                        continue
                    except ray.exceptions.RayError as exc:
                        rows = self._failed(task, f"{type(exc).__name__}: {exc}", by_run=True)  # Ray's, not the file's
                    in_flight.pop(obj)
                    head_since[i] = time.monotonic()
                    yield rows
                if timeout > 0:
                    now = time.monotonic()
                    for i in range(len(actors)):
                        q = queued(i)
                        if q and now - head_since[i] > timeout:
                            head = in_flight.pop(q[0][1])[0]
                            yield self._failed(head, f"took longer than the {timeout:g} s per-file limit "
                                                     "(MEMEINDEX_FILE_TIMEOUT)", by_run=True)
                            replace(i)
        finally:
            for actor in actors:
                ray.kill(actor)

    def close(self) -> None:
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False
