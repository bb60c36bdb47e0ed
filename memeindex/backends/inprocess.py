"""Analysis in the calling process: no start-up cost, no isolation (a native crash takes the build with it) and no
per-file time limit (`settings.file_timeout` is the pool's and Ray's): a file that hangs the decoder hangs the build.

Why no limit: what hangs is native code (a decoder, LiteRT), which no thread can be stopped in and which never
returns to the interpreter for a signal handler (SIGALRM) to run; a thread left behind would keep the core busy and
hold the models, which are not safe to share with the next file. Only a process can be killed mid-file: the pool.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from ..generation import FileRows
from ..plan import Task
from ..settings import Settings


class InProcessBackend:
    def __init__(self, root: Path, settings: Settings):
        self.root, self.settings = root, settings
        self._analysis = None

    def analyze(self, tasks: Iterable[Task]) -> Iterator[FileRows]:
        for task in tasks:
            if self._analysis is None:  # models load on the first file: a build with nothing to do loads none
                from ..workers import Analysis, inference_threads

                self._analysis = Analysis(self.settings, self.root, num_threads=inference_threads(1))
            yield self._analysis.run(task)

    def close(self) -> None:
        if self._analysis is not None:
            self._analysis.close()
            self._analysis = None
