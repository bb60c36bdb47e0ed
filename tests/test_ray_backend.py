"""The Ray backend's supervision with a fake analysis (no model) on one local Ray: the per-file time limit (a file
that finishes as its limit passes is done, once), a hang, a file the driver cannot read, a model that cannot load."""
from __future__ import annotations

import time
from collections import Counter

import pytest

from memeindex.errors import ModelMissing
from memeindex.plan import Task
from memeindex.settings import Settings

ray = pytest.importorskip("ray")
LIMIT = 3.0  # seconds: far above a fake file's round trip on a crowded machine, far below a hang


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module; a RayBackend joins it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def fake_analyzer():
    """An actor body whose analysis does what a file's name says: `hang*` never returns, others have no face.
    Defined in a function: Ray ships it to the actors by value."""
    from memeindex.backends import ray as ray_backend

    class FakeAnalyzer(ray_backend._Analyzer):
        def __init__(self, settings):
            self.init_error = None

        def run(self, ref, data, phash_only):
            from memeindex.generation import file_rows

            if ref.rel.startswith("hang"):
                time.sleep(600)
            return file_rows(ref, [], model_id="fake", detector="d")

    return FakeAnalyzer


def _backend(monkeypatch, root, analyzer, **settings):
    from memeindex.backends import ray as ray_backend

    monkeypatch.setattr(ray_backend, "_Analyzer", analyzer)
    return ray_backend.RayBackend(root, Settings.from_env(**settings), "fake", 1, None)


def _tasks(root, *names):
    for name in names:
        (root / name).write_bytes(b"not really an image")
    return [Task(name, f"{i:064x}", 19, 1) for i, name in enumerate(names)]


def test_a_file_done_while_the_driver_was_busy_past_its_limit_is_done_once(local_ray, tmp_path, monkeypatch):
    """One actor holds a and b; b runs while the driver's caller keeps it busy with a's rows (a checkpoint) for
    longer than the limit. b's rows are there when the driver looks again: b is done, not failed as a hang."""
    backend = _backend(monkeypatch, tmp_path, fake_analyzer(), file_timeout=LIMIT)
    seen = []
    for rows in backend.analyze(_tasks(tmp_path, "a", "b", "c")):
        seen.append((rows.image.path, rows.image.status))
        if len(seen) == 1:
            time.sleep(LIMIT + 2)
    assert sorted(seen) == [("a", "noface"), ("b", "noface"), ("c", "noface")]


def test_a_hanging_file_fails_once_at_its_limit_and_the_rest_goes_on(local_ray, tmp_path, monkeypatch):
    backend = _backend(monkeypatch, tmp_path, fake_analyzer(), file_timeout=LIMIT, max_file_bytes=100)
    tasks = _tasks(tmp_path, "a", "hang", "b", "big", "gone")
    (tmp_path / "big").write_bytes(bytes(101))
    (tmp_path / "gone").unlink()  # removed since the scan
    out = list(backend.analyze(tasks))
    assert Counter(r.image.path for r in out) == Counter(t.rel for t in tasks)  # each file exactly once
    rows = {r.image.path: r.image for r in out}
    assert {p: r.status for p, r in rows.items() if r.status != "failed"} == {"a": "noface", "b": "noface"}
    assert "per-file limit" in rows["hang"].reason and rows["hang"].run_failures == 1  # the run's: retried later
    assert rows["gone"].reason.startswith("cannot read") and rows["gone"].run_failures == 1
    assert "100-byte limit" in rows["big"].reason and rows["big"].run_failures == 0  # the file's own


def test_a_model_that_cannot_load_raises_its_typed_error(local_ray, tmp_path, monkeypatch):
    base = fake_analyzer()

    class MissingModel(base):
        def __init__(self, settings):
            self.init_error = ModelMissing("face_landmarker.task is missing: run `memeindex models fetch`")

    backend = _backend(monkeypatch, tmp_path, MissingModel)
    with pytest.raises(ModelMissing, match="models fetch"):
        list(backend.analyze(_tasks(tmp_path, "a", "b")))


def test_workers_that_never_get_ready_end_the_build_with_a_typed_error(local_ray, tmp_path, monkeypatch):
    """An actor whose models never load (or that the cluster has no CPU for) gets no file: the build gives up
    after backends.START_LIMIT_S with WorkerFailed instead of waiting for ever."""
    from memeindex import backends
    from memeindex.errors import WorkerFailed

    class NeverReady(fake_analyzer()):
        def __init__(self, settings):
            time.sleep(600)

    monkeypatch.setattr(backends, "START_LIMIT_S", 2.0)
    backend = _backend(monkeypatch, tmp_path, NeverReady, file_timeout=LIMIT)
    with pytest.raises(WorkerFailed, match="no Ray worker loaded the models"):
        list(backend.analyze(_tasks(tmp_path, "a", "b")))
