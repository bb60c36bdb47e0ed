"""The analysis seam: a backend turns planned tasks into file rows (decode -> faces -> embed -> rows).

Everything else of a build stays on the driver: the scan, the plan (mark and sweep), checkpoints, the lock and
the atomic publish. A backend only computes; it yields one `FileRows` per task, in any order, and never raises for
one bad file (a crash, a hang past the per-file time limit or an undecodable file is that file's `failed` row).

    inprocess  this process, one file at a time (tests, tiny folders, scripts read on stdin); no per-file time
               limit and no isolation: a file that hangs the decoder hangs the build, a native crash ends it
    pool       local worker processes, one per core by default (the default)
    ray        Ray actors, each holding the models; a local Ray or a cluster (`--ray-address`, `[ray]` extra)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol

if TYPE_CHECKING:  # annotations only: the CLI reads BACKENDS from here, and --help stays free of pyarrow
    from ..generation import FileRows
    from ..plan import Task
    from ..settings import Settings

log = logging.getLogger(__name__)

BACKENDS = ("pool", "inprocess", "ray")  # the names `build --backend` and MEMEINDEX_BACKEND take
# How long a pool or Ray build waits with no worker ready (models loaded) before it gives up with WorkerFailed: a
# model load that hangs, or a cluster with no free CPU for an actor, would otherwise hang the build with no word.
# Generous: an autoscaling cluster may take minutes to add a node.
START_LIMIT_S = 300.0
START_WARN_S = 30.0  # then the build says once what it is waiting for


def waiting_for_start(waited: float, warned: bool, who: str, why: str = "") -> bool:
    """A build whose workers have all been loading their models for `waited` seconds: says so once past
    START_WARN_S (returns whether it has), raises WorkerFailed past START_LIMIT_S."""
    from ..errors import WorkerFailed

    if waited > START_LIMIT_S:
        raise WorkerFailed(f"no {who.removeprefix('a ')} loaded the models within {START_LIMIT_S:g} s: "
                           f"{why + ', or ' if why else ''}loading the models hangs")
    if waited > START_WARN_S and not warned:
        log.warning("waiting %.0f s for %s to load the models%s; giving up after %.0f s", waited, who,
                    f" ({why}?)" if why else "", START_LIMIT_S)
        return True
    return warned


class Backend(Protocol):
    def analyze(self, tasks: Iterable[Task]) -> Iterator[FileRows]:
        ...

    def close(self) -> None:
        ...


def get_backend(name: str, root: Path, settings: Settings, model_id: str, workers: int | None = None,
                ray_address: str | None = None) -> Backend:
    """A backend by name; `workers` processes/actors (default: settings.workers). `model_id` tags the rows the
    driver writes itself (a file whose worker died)."""
    from ..errors import BadSetting

    requested = workers
    workers = max(1, workers or settings.workers)
    if name == "pool":
        from .pool import PoolBackend, main_reimportable

        if main_reimportable():
            return PoolBackend(root, settings, model_id, workers)
        from .inprocess import InProcessBackend

        log.warning("the main script cannot be imported again (read from stdin?): analysing in this process, "
                    "without the per-file time limit")

        return InProcessBackend(root, settings)
    if name == "inprocess":
        from .inprocess import InProcessBackend

        return InProcessBackend(root, settings)
    if name == "ray":
        from .ray import RayBackend

        return RayBackend(root, settings, model_id, requested, ray_address or settings.ray_address or None)
    raise BadSetting(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
