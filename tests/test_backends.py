"""The supervised process pool with a fake analysis (no model): crashes, hangs and broken start-ups."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from memeindex.backends.pool import PoolBackend
from memeindex.errors import ModelMissing, WorkerFailed
from memeindex.generation import FileRef, file_rows
from memeindex.plan import Task
from memeindex.settings import Settings


class FakeAnalysis:
    """Does what a file's name says: `crash*` kills its process, `hang*` runs a minute (past any limit a test sets;
    its worker's pid in ROOT/hang.pid), others have no face."""

    def __init__(self, settings, root, num_threads=1):
        self.root = root

    def run(self, task: Task):
        if task.rel.startswith("die-after"):  # answers, then dies idle (the OOM killer between two files)
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGKILL)).start()
        if task.rel.startswith("crash"):
            os.kill(os.getpid(), signal.SIGKILL)
        if task.rel.startswith("hang"):
            if os.path.isdir(self.root):
                with open(os.path.join(self.root, "hang.pid"), "w") as f:
                    f.write(str(os.getpid()))
            # Finite: were the limit not kept, the file would come back answered (noface) and the test fail, not stall
            time.sleep(60)
        return file_rows(FileRef(task.rel, task.sha256, task.size, task.mtime_ns), [], model_id="fake",
                         detector="d")

    def close(self):
        pass


class MissingModel(FakeAnalysis):
    def __init__(self, settings, root, num_threads=1):
        raise ModelMissing("face_landmarker.task is missing: run `memeindex models fetch`")


class DiesAtStart(FakeAnalysis):
    def __init__(self, settings, root, num_threads=1):
        os.kill(os.getpid(), signal.SIGKILL)


class NeverReady(FakeAnalysis):
    def __init__(self, settings, root, num_threads=1):
        time.sleep(600)  # a model load that hangs


def _tasks(*names):
    return [Task(name, f"{i:064x}", 1, 1) for i, name in enumerate(names)]


def _run(factory, names, workers=2, timeout=30.0, root="/nowhere"):
    pool = PoolBackend(root, Settings.from_env(file_timeout=timeout), "fake", workers, factory)
    return {rows.image.path: rows.image for rows in pool.analyze(_tasks(*names))}


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, killed and not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_a_crashing_file_fails_alone_and_the_rest_goes_on():
    out = _run(FakeAnalysis, ["a", "crash-me", "b", "c", "crash-too", "d"])
    assert set(out) == {"a", "crash-me", "b", "c", "crash-too", "d"}
    assert {p for p, r in out.items() if r.status == "failed"} == {"crash-me", "crash-too"}
    assert "died (signal 9)" in out["crash-me"].reason and out["crash-me"].detector
    assert out["crash-me"].run_failures == 1 and out["a"].run_failures == 0  # the run's failure: retried later


def test_a_hanging_file_is_cut_at_the_time_limit(tmp_path):
    """The file is failed by the limit (not answered when its call returns) and the worker running it is killed
    there, not left running beside its replacement."""
    # 5 s: room for a worker slow to start on a loaded machine (the fake writes its pid once it begins the file)
    out = _run(FakeAnalysis, ["a", "hang", "b", "c"], timeout=5.0, root=str(tmp_path))
    assert out["hang"].status == "failed" and "per-file limit" in out["hang"].reason
    assert not _running(int((tmp_path / "hang.pid").read_text()))
    assert out["hang"].run_failures == 1
    assert [out[p].status for p in "abc"] == ["noface"] * 3


def test_a_worker_that_cannot_load_its_models_raises_the_typed_error():
    with pytest.raises(ModelMissing, match="models fetch"):
        _run(MissingModel, ["a", "b"])


def test_workers_dying_at_start_end_the_build_instead_of_looping():
    with pytest.raises(WorkerFailed, match="keep dying"):
        _run(DiesAtStart, ["a", "b"], workers=1)


def test_a_worker_that_dies_while_idle_loses_no_file():
    """Its death shows to the driver only when it hands the worker the next file (a broken pipe): that file goes
    to a fresh worker, not lost, and the build does not stop (click turned the BrokenPipeError into a silent exit 1)."""
    pool = PoolBackend("/nowhere", Settings.from_env(file_timeout=30.0), "fake", 1, FakeAnalysis)
    out = {}
    for rows in pool.analyze(_tasks("die-after-a", "b", "c")):
        out[rows.image.path] = rows.image
        if len(out) == 1:
            time.sleep(1.0)  # the driver is busy (a checkpoint) while its idle worker dies
    assert {p: r.status for p, r in out.items()} == {"die-after-a": "noface", "b": "noface", "c": "noface"}


def test_workers_that_never_load_their_models_end_the_build(monkeypatch):
    """Every worker still loading after START_LIMIT_S: WorkerFailed, not a build that waits for ever."""
    from memeindex import backends

    monkeypatch.setattr(backends, "START_LIMIT_S", 2.0)
    with pytest.raises(WorkerFailed, match="no worker process loaded the models within 2 s"):
        _run(NeverReady, ["a", "b"])
