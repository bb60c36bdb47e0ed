"""CLI edges of `query` and `eval`: distinct exit codes, 1-based --face, --sheet that writes or refuses, eval's
clean errors and progress bar. Real models, the small real index of media_fixtures."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import media_fixtures as media
from memeindex.cli import main
from memeindex.errors import BadSetting, DatasetInvalid, FileMissing, NotAnImage


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def index(media_index):
    return media_index[1]


def test_missing_query_file_and_non_image_have_their_own_exit_codes(tmp_path, index):
    missing = run("query", tmp_path / "nope.jpg", "--index", index)
    assert missing.exit_code == FileMissing.exit_code == 7 and "no such file" in missing.stderr
    folder = run("query", tmp_path, "--index", index)
    assert folder.exit_code == FileMissing.exit_code and "folder" in folder.stderr
    missing_clip = run("query", tmp_path / "nope.mp4", "--index", index)
    assert missing_clip.exit_code == FileMissing.exit_code
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    bad = run("query", text, "--index", index)
    assert bad.exit_code == NotAnImage.exit_code == 8 and "not an image" in bad.stderr
    assert bad.stderr.startswith(f"memeindex: error: {text}: ")  # which file, as the video's message says
    broken_clip = tmp_path / "broken.mp4"
    broken_clip.write_bytes(media.write_mp4(tmp_path / "clip.mp4", [(media.grace(), 1.0)]).read_bytes()[:3000])
    clip = run("query", broken_clip, "--index", index)
    assert clip.exit_code == NotAnImage.exit_code and clip.stderr.splitlines() == [
        f"memeindex: error: cannot read {broken_clip} as a video"], clip.stderr  # no FFmpeg log line
    assert len({7, 8, 2, 4}) == 4  # distinct from no face (2) and no index (4)
    assert "Traceback" not in missing.output + bad.output


def test_face_counts_from_one_like_the_output(tmp_path, index, grace_path):
    first = run("query", grace_path, "--index", index, "--face", "1")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("query face 1 of 1")
    beyond = run("query", grace_path, "--index", index, "--face", "2")
    assert beyond.exit_code == 2 and "no face 2" in beyond.stderr
    zero = run("query", grace_path, "--index", index, "--face", "0")
    assert zero.exit_code == 2 and "--face" in zero.stderr


def test_sheet_says_where_it_wrote(tmp_path, index, grace_path):
    out = tmp_path / "sheets" / "grace.png"
    result = run("query", grace_path, "--index", index, "--sheet", out, "--json")
    assert result.exit_code == 0, result.output
    assert f"contact sheet: {out}" in result.stderr and out.is_file()
    assert Image.open(out).size[0] > 256
    blocked = tmp_path / "file"
    blocked.write_text("x")
    bad = run("query", grace_path, "--index", index, "--sheet", blocked / "out.png")
    assert bad.exit_code != 0 and "out.png" in bad.stderr and "Traceback" not in bad.output
    # Pillow writes GIF, but a sheet is not saved as one (sheet.SHEET_FORMATS): refused before the search
    unknown = run("query", grace_path, "--index", index, "--sheet", tmp_path / "out.gif")
    assert unknown.exit_code == 2 and "out.gif" in unknown.stderr and ".webp" in unknown.stderr, unknown.output
    assert not (tmp_path / "out.gif").exists()


def test_video_with_sheet_fails_loudly_before_the_work(tmp_path, index):
    clip = media.write_mp4(tmp_path / "clip.mp4", [(media.grace(), 1.0)])
    result = run("query", clip, "--index", index, "--sheet", tmp_path / "out.png")
    assert result.exit_code == 2 and "--sheet" in result.stderr and "video" in result.stderr
    assert not (tmp_path / "out.png").exists()
    picked = run("query", clip, "--index", index, "--face", "2")  # it searched the main face as if asked for it
    assert picked.exit_code == 2 and "--face" in picked.stderr and "video" in picked.stderr, picked.output


@pytest.mark.parametrize("content", [
    b"file,label\na.png,happy\n",  # no path column
    b"path,label\n\xff\xfe\xfa,happy\n",  # not UTF-8
    b"path,label,vote_happy\na.png,happy,lots\n",  # a vote that is no number
    b"path,label\na.png\n",  # a short row
    b"path,label\n\"a.png,happy\x00\n",  # NUL inside an open quote
])
def test_eval_on_a_malformed_index_csv_is_one_clean_line(tmp_path, content):
    (tmp_path / "index.csv").write_bytes(content)
    result = run("eval", tmp_path, "--embedder", "baseline")
    assert result.exit_code == DatasetInvalid.exit_code == 10, result.output
    assert result.stderr.count("\n") == 1 and "index.csv" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("eval", empty).exit_code == DatasetInvalid.exit_code


def test_eval_shows_a_progress_bar_on_stderr(tmp_path, grace_rgb, astronaut_rgb):
    Image.fromarray(grace_rgb).save(tmp_path / "g.jpg")
    Image.fromarray(astronaut_rgb).save(tmp_path / "a.png")
    (tmp_path / "index.csv").write_text("path,label,subject\ng.jpg,neutral,grace\na.png,happy,eileen\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run([sys.executable, "-m", "memeindex", "eval", str(tmp_path), "--embedder", "baseline",
                           "--progress", "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "2/2" in proc.stderr and "img" in proc.stderr  # tqdm's bar, live on the real stderr
    assert proc.stdout.lstrip().startswith("{")


def _heic(rgb, path: Path) -> Path:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.from_pillow(Image.fromarray(rgb)).save(path, quality=90)
    return path


def test_heic_and_100_megapixel_photos_are_built_and_queried(tmp_path, grace_rgb, astronaut_rgb):
    photos = tmp_path / "photos"
    photos.mkdir()
    _heic(grace_rgb, photos / "grace.heic")
    Image.fromarray(astronaut_rgb).save(photos / "astronaut.png")
    Image.new("L", (10_000, 10_000), 128).save(photos / "huge-blank.jpg", quality=80)  # 100 MP, no face
    built = run("build", photos, "--index", tmp_path / "index", "--workers", "1", "--json")
    assert built.exit_code == 0, built.output
    import json

    summary = json.loads(built.stdout)
    assert summary["failed"] == 0 and summary["noface"] == 1, summary  # the 100 MP file is read, not refused
    query_photo = _heic(grace_rgb[:, ::-1], tmp_path / "me.heic")  # a HEIC query too
    found = run("query", query_photo, "--index", tmp_path / "index", "--json")
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["matches"][0]["path"] == "grace.heic"


@pytest.mark.parametrize("name, value", [("MAX_PIXELS", "0"), ("MAX_PIXELS", "-5"), ("WEAK_SCORE", "2"),
                                         ("MIN_FACE_SCORE", "nan"), ("WORKERS", "many")])
def test_a_malformed_or_out_of_range_setting_is_a_usage_error(tmp_path, monkeypatch, name, value):
    monkeypatch.setenv(f"MEMEINDEX_{name}", value)  # MAX_PIXELS=0 used to fail every image as "undecodable"
    result = run("query", tmp_path / "face.jpg", "--index", tmp_path)
    assert result.exit_code == BadSetting.exit_code and f"MEMEINDEX_{name}=" in result.stderr, result.output


def test_fewer_than_one_worker_is_a_usage_error(tmp_path, grace_path):
    from memeindex.indexer import build

    root = tmp_path / "memes"
    root.mkdir()
    (root / "grace.jpg").write_bytes(grace_path.read_bytes())
    result = run("build", root, "--index", tmp_path / "index", "--workers", "0")  # was silently 1
    assert result.exit_code == 2 and "--workers" in result.stderr, result.output
    with pytest.raises(BadSetting) as raised:  # the caller's argument, not a variable it never set
        build(root, tmp_path / "index", workers=0)
    assert str(raised.value) == "workers=0 is out of range: 1 or more"
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("command, name, value", [(["build", "."], "WORKERS", "0"), (["build", "."], "BACKEND", "dask"),
                                                  (["build", "."], "INDEX_TYPE", "diskann"), (["serve"], "PORT", "70000")])
def test_a_bad_value_from_a_variable_names_the_variable(monkeypatch, command, name, value):
    monkeypatch.setenv(f"MEMEINDEX_{name}", value)
    result = run(*command)
    assert result.exit_code == 2 and f"MEMEINDEX_{name}" in result.stderr, result.output
    option = f"--{name.lower().replace('_', '-')}"
    assert option not in result.stderr  # what the user set, not an option they never typed
    assert option in run(*command, option, value).stderr  # typed on the command line: the option
