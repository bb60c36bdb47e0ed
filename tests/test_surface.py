"""The user-facing surface: usage errors and their exit codes, what messages show, the service's own pages.
Real models, the small real index of media_fixtures."""
from __future__ import annotations

import re

import pytest

from memeindex.errors import BadSetting
from memeindex.settings import Settings

from test_cli import run


@pytest.fixture(scope="module")
def index(media_index):
    return media_index[1]


def test_an_unknown_embedder_is_a_usage_error_naming_the_choices(tmp_path, index, grace_path):
    from memeindex.embedders.registry import names

    (tmp_path / "index.csv").write_text("path,label\ng.jpg,neutral\n")
    typo = run("eval", tmp_path, "--embedder", "baseline", "--embedder", "expresion-v1")
    assert typo.exit_code == 2, typo.output  # click's code for a bad command line, not a missing model's 3
    assert "Invalid value for '--embedder'" in typo.stderr and "'expresion-v1'" in typo.stderr
    assert all(name in typo.stderr for name in names())
    env = {"MEMEINDEX_EMBEDDER": "expresion-v1"}
    for args in (("query", grace_path, "--index", index), ("check", "--index", index),
                 ("build", grace_path.parent, "--index", tmp_path / "idx")):
        result = run(*args, env=env)
        assert result.exit_code == BadSetting.exit_code == 2, (args, result.output)
        line = result.stderr.strip()
        assert line.startswith("memeindex: error: unknown embedder 'expresion-v1' (MEMEINDEX_EMBEDDER): choose one "
                               "of ") and "\n" not in line and all(name in line for name in names()), line
    assert not (tmp_path / "idx").exists()  # refused before the build made anything


def test_the_service_pages_need_nothing_from_outside(index):
    """FastAPI's Swagger UI and ReDoc pages load their scripts from a CDN, blank offline: none is served; every HTML
    page served refers to this server only, and the page's API link is the schema."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from memeindex.server import create_app

    with TestClient(create_app(index, Settings.from_env())) as client:
        pages = {path: client.get(path) for path in ("/", "/docs", "/redoc", "/docs/oauth2-redirect")}
        served = {path: r.text for path, r in pages.items()
                  if r.status_code == 200 and r.headers["content-type"].startswith("text/html")}
        assert "/" in served
        for path, html in served.items():
            assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), path
        assert pages["/docs"].status_code == pages["/redoc"].status_code == 404
        api = re.search(r'href="([^"]+)">API', served["/"])[1]
        schema = client.get(api)
        assert schema.status_code == 200 and "/api/search" in schema.json()["paths"]


def test_a_file_over_the_time_limit_says_how_to_raise_it(tmp_path, grace_rgb):
    import numpy as np
    from PIL import Image

    memes = tmp_path / "memes"
    memes.mkdir()
    # a large frame: its analysis takes far longer (~0.1 s) than a loaded machine may keep the parent from noticing
    # the 1 ms limit (tests/test_build_hardening.py's reason)
    Image.fromarray(np.repeat(np.repeat(grace_rgb, 5, axis=0), 5, axis=1)).save(memes / "grace.jpg", quality=90)
    result = run("build", memes, "--index", tmp_path / "index", "--workers", "1", "--file-timeout", "0.001")
    assert result.exit_code == 0, result.output
    assert ("skipping grace.jpg: took longer than the 0.001 s per-file limit (raise it with --file-timeout or "
            "MEMEINDEX_FILE_TIMEOUT)") in result.stderr
    assert "failed=1 (new 1)" in result.stdout
    negative = run("build", memes, "--index", tmp_path / "index", "--file-timeout", "-1")
    assert negative.exit_code == 2 and "'--file-timeout'" in negative.stderr
    from_env = run("build", memes, "--index", tmp_path / "index", env={"MEMEINDEX_FILE_TIMEOUT": "-1"})
    assert from_env.exit_code == 2 and "MEMEINDEX_FILE_TIMEOUT" in from_env.stderr, from_env.output


def test_a_path_that_is_not_utf8_shows_as_every_path_shows(tmp_path, index, grace_path):
    """Every path a command's line shows goes through generation.shown_path: a byte that is not UTF-8 as \\xNN,
    never Python's surrogate escape (\\udcff) or click's replacement character."""
    import os
    import shutil

    odd = tmp_path / os.fsdecode(b"odd-\xff")
    shown = f"{tmp_path}/odd-\\xff"

    def assert_shown(result, *expected):
        assert "\\udc" not in result.output and "\ufffd" not in result.output, result.output
        for text in expected:
            assert text in result.output, (text, result.output)

    missing = run("query", f"{odd}.jpg", "--index", index)
    assert missing.exit_code == 7
    assert_shown(missing, f"memeindex: error: {shown}.jpg: no such file")
    no_index = run("query", grace_path, "--index", odd)
    assert no_index.exit_code == 4
    assert_shown(no_index, f"memeindex: error: no index at {shown}: build one")
    no_root = run("build", odd, "--index", tmp_path / "idx")
    assert no_root.exit_code == 6
    assert_shown(no_root, f"image folder {shown} ")
    sheet = run("-v", "query", grace_path, "--index", index, "--sheet", f"{odd}.png")
    assert sheet.exit_code == 0, sheet.output
    assert_shown(sheet, f"wrote contact sheet {shown}.png", f"contact sheet: {shown}.png")  # a log line, the CLI's
    models = tmp_path / os.fsdecode(b"models-\xfe")
    shutil.copytree(Settings.from_env().models_dir, models)
    fetched = run("models", "fetch", "--models-dir", models)
    assert fetched.exit_code == 0
    assert_shown(fetched, f"ok {tmp_path}/models-\\xfe/")
