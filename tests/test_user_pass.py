"""What a new user trips over (qa5's pass), end to end on real photos and the real models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from memeindex.errors import RootMissing
from memeindex.generation import IndexDir

from test_build_hardening import two  # noqa: F401 (a fixture: grace.jpg and a faceless wall.png)
from test_cli import run, summary


@pytest.mark.parametrize("how", ["removed", "emptied", "share emptied"])
def test_an_image_folder_that_vanishes_during_a_build_leaves_the_index_as_it_was(tmp_path, two, grace_path,
                                                                                 monkeypatch, how):
    """An unmounted share mid-build (its mount point gone or left empty): every file still to analyse fails to
    read. The build published them all as failed (exit 0: a --rebuild left the index without a face until the next
    night's build); it stops like a build that finds the folder missing at its start, and the next build, the
    folder back, finishes the work."""
    from memeindex import indexer

    share = two
    if how == "share emptied":  # a share mounted inside the image folder (memes/nas/): the folder itself stays
        share = two / "nas"
        share.mkdir()
        for f in [f for f in two.iterdir() if f != share]:
            f.rename(share / f.name)
    index = tmp_path / "index"
    assert run("build", two, "--index", index, "--backend", "inprocess").exit_code == 0
    before = IndexDir(index).current()
    away = tmp_path / "away"
    real, seen = indexer.fingerprint, []

    def unmount_after_the_plan(path):  # the plan hashes both files for --rebuild; then the folder goes
        fp = real(path)
        seen.append(path)
        if len(seen) == 2:
            if how == "removed":
                two.rename(away)
            else:
                away.mkdir()
                for f in list(share.iterdir()):
                    f.rename(away / f.name)
        return fp

    monkeypatch.setattr(indexer, "fingerprint", unmount_after_the_plan)
    gone = run("build", two, "--index", index, "--backend", "inprocess", "--rebuild")
    assert gone.exit_code == RootMissing.exit_code, gone.output  # was 0: failed=2 (new 2) images=2 faces=0
    assert "index is left as it was" in gone.stderr and "skipping" not in gone.stderr
    assert IndexDir(index).current() == before
    q = run("query", grace_path, "--index", index, "--json")
    assert json.loads(q.stdout)["matches"][0]["path"] == str((share / "grace.jpg").relative_to(two))

    monkeypatch.setattr(indexer, "fingerprint", real)
    if how == "removed":
        away.rename(two)
    else:
        for f in list(away.iterdir()):
            f.rename(share / f.name)
    s = summary(run("build", two, "--index", index, "--backend", "inprocess", "--rebuild"))
    assert (s["images"], s["faces"], s["failed"]) == ("2", "1", "0")


@pytest.mark.parametrize("name", ["me.jpg", "me.mp4"])  # a video's name: refused the same way, not 'no such file'
def test_query_of_a_fifo_is_refused_not_waited_on(tmp_path, two, name):
    """`memeindex query` of a named pipe nobody writes to: the decoder refuses what is not a regular file ('reading it
    could block forever'), but the video sniff opened it first and blocked in open() for ever. In a subprocess, so
    the old code fails the test instead of hanging the run."""
    import os
    import subprocess
    import sys

    from memeindex.errors import NotAnImage

    index = tmp_path / "index"
    assert run("build", two, "--index", index, "--backend", "inprocess").exit_code == 0
    fifo = tmp_path / name
    os.mkfifo(fifo)
    try:
        done = subprocess.run([sys.executable, "-m", "memeindex.cli", "query", str(fifo), "--index", str(index)],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("memeindex query waited on the FIFO")
    assert done.returncode == NotAnImage.exit_code, done.stderr
    assert f"{name}: not a regular file" in done.stderr


def test_no_face_says_what_to_try_in_the_cli_as_in_the_api(tmp_path, two):
    """A photo without a face: the API said what to try ('a closer, well-lit, front-facing photo'), the CLI only
    'no face found in the query image', without the file's name that its other refusals of a query file carry."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from memeindex.errors import NoFace
    from memeindex.server import create_app
    from memeindex.settings import Settings

    index = tmp_path / "index"
    assert run("build", two, "--index", index, "--backend", "inprocess").exit_code == 0
    cli = run("query", two / "wall.png", "--index", index)
    assert cli.exit_code == NoFace.exit_code
    with TestClient(create_app(index, Settings.from_env())) as client:
        api = client.post("/api/search", files={"image": ("wall.png", (two / "wall.png").read_bytes(), "image/png")})
    assert api.status_code == 422
    assert "front-facing photo" in api.json()["detail"]
    assert cli.stderr.strip() == f"memeindex: error: {two / 'wall.png'}: {api.json()['detail']}"


def test_a_video_without_a_face_says_what_to_try_as_a_photo_does(tmp_path, media_index, two):
    """A clip in which no sampled frame shows a face said 'no face found in any sampled frame of clip.mp4' and
    stopped; a photo without one says what to try. Both end with the library's one hint."""
    import media_fixtures as media
    from memeindex.errors import NoFace
    from memeindex.search import NO_FACE_HINT

    clip = media.write_mp4(tmp_path / "clip.mp4", [(np.full((360, 480, 3), 30, np.uint8), 1.0)])
    video = run("query", clip, "--index", media_index[1])
    photo = run("query", two / "wall.png", "--index", media_index[1])
    assert video.exit_code == photo.exit_code == NoFace.exit_code, video.output
    assert "front-facing" in video.stderr and video.stderr.rstrip().endswith(NO_FACE_HINT)
    assert photo.stderr.rstrip().endswith(NO_FACE_HINT)


def test_a_memes_file_goes_out_with_the_type_of_its_bytes(tmp_path, grace_path):
    """A JPEG saved under a .gif name (a renamed download) went out as image/gif, the type guessed from its name;
    with the service's nosniff a browser takes the header at its word."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from memeindex.server import create_app
    from memeindex.settings import Settings

    memes = tmp_path / "memes"
    memes.mkdir()
    (memes / "grace.gif").write_bytes(grace_path.read_bytes())
    index = tmp_path / "index"
    assert run("build", memes, "--index", index, "--backend", "inprocess").exit_code == 0
    with TestClient(create_app(index, Settings.from_env())) as client:
        found = client.post("/api/search", files={"image": ("q.jpg", grace_path.read_bytes(), "image/jpeg")})
        served = client.get(found.json()["matches"][0]["image_url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    assert served.content == grace_path.read_bytes()


def test_eval_says_1_image_and_gives_every_figure_to_3_decimals(tmp_path, grace_path, astronaut_rgb):
    """`memeindex eval` on a one-row dataset said '1 images' and 'in 1/1 images'; and a distance that is float noise
    below 0 (expression-v1 on a face and its copy) read -0.000 beside 0.000. --json keeps every figure whole."""
    import re

    from PIL import Image

    (tmp_path / "g.jpg").write_bytes(grace_path.read_bytes())
    Image.fromarray(astronaut_rgb).save(tmp_path / "a.png")
    (tmp_path / "index.csv").write_text("path,label,subject\ng.jpg,neutral,grace\n")
    one = run("eval", tmp_path, "--embedder", "baseline")
    assert one.exit_code == 0, one.output
    assert one.stdout.splitlines()[0] == f"{tmp_path}: 1 image"
    assert "1 in 1/1 image" in one.stdout and "images" not in one.stdout
    (tmp_path / "index.csv").write_text("path,label,subject\ng.jpg,neutral,grace\na.png,happy,eileen\n"
                                        "g.jpg,happy,grace\na.png,neutral,eileen\n")
    text = run("eval", tmp_path)
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[0] == f"{tmp_path}: 4 images" and "4 in 4/4 images" in text.stdout
    figures = re.findall(r"-?\d+\.\d+", text.stdout)
    assert figures and all(re.fullmatch(r"\d\.\d{3}", f) for f in figures), figures
    whole = json.loads(run("eval", tmp_path, "--json").stdout)
    assert any(round(v, 3) != v for m in whole["models"].values() for v in m.values() if isinstance(v, float))


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_models_fetch_refuses_a_timeout_that_is_not_positive(tmp_path, timeout):
    """`models fetch --timeout -1` went on to the network and failed there, exit 3 with pip's 'timed out after -4.0
    seconds' in the message; a bad command line is exit 2 and names the option, before any fetch. nan and inf passed
    click's FloatRange (nan compares false with its bound)."""
    result = run("models", "fetch", "--models-dir", tmp_path / "models", "--timeout", timeout)
    assert result.exit_code == 2, result.output
    assert "'--timeout'" in result.output and not (tmp_path / "models").exists()


def test_a_sheet_whose_match_is_gone_names_the_file_once(tmp_path, two, grace_path):
    """A matched file deleted since the build: the sheet draws without it and says so on stderr. The line named the
    file twice ('cannot read /x/grace.jpg: /x/grace.jpg: no such file'): the missing file's error carries its name."""
    index = tmp_path / "index"
    assert run("build", two, "--index", index, "--backend", "inprocess").exit_code == 0
    (two / "grace.jpg").unlink()
    result = run("query", grace_path, "--index", index, "--sheet", tmp_path / "sheet.png")
    assert result.exit_code == 0 and (tmp_path / "sheet.png").is_file()
    warned = [line for line in result.stderr.splitlines() if "grace.jpg" in line]
    assert len(warned) == 1 and warned[0].count("grace.jpg") == 1, result.stderr
    assert "no such file" in warned[0]


def test_a_refused_private_address_says_how_to_allow_it(tmp_path):
    """'127.0.0.1 is a private, loopback or link-local address' did not say that --allow-private fetches from one
    (a NAS, a local mirror). Refused at the address check: nothing listens on the port."""
    from memeindex.errors import DownloadFailed

    listing = tmp_path / "list.txt"
    listing.write_text("http://127.0.0.1:9/grace.jpg\n")
    result = run("download", "urls", listing, tmp_path / "dest", "--json")
    assert result.exit_code == DownloadFailed.exit_code
    reason = json.loads(result.stdout)["files"][0]["reason"]
    assert "loopback" in reason and "--allow-private" in reason, reason


@pytest.mark.parametrize("where", ["folder", "cwd"])
def test_a_build_refuses_an_index_folder_that_holds_other_files(tmp_path, two, monkeypatch, where):
    """`--index ~/Documents` (or `--index "$UNSET"`, which is the current folder): the publish swept every `gen-*`
    folder and every stale-looking `.NAME.tmpPID` file there as its own, and deleted the user's. A folder that holds
    files but no index is refused, untouched; a new or empty one is an index's."""
    from memeindex.errors import IndexUnwritable

    docs = tmp_path / "docs"
    (docs / "gen-notes").mkdir(parents=True)
    (docs / "gen-notes" / "todo.txt").write_text("precious")
    (docs / ".thesis.tmp999999999").write_text("precious too")
    if where == "cwd":
        monkeypatch.chdir(docs)
    result = run("build", two, "--index", docs if where == "folder" else "", "--backend", "inprocess")
    assert result.exit_code == IndexUnwritable.exit_code, result.output
    assert "holds other files" in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in docs.iterdir()) == [".thesis.tmp999999999", "gen-notes"]
    assert (docs / "gen-notes" / "todo.txt").read_text() == "precious"
    empty = tmp_path / "empty"  # an empty folder will do, or a fresh disk's (lost+found) or one a Mac has visited
    (empty / "lost+found").mkdir(parents=True)
    (empty / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    assert run("build", two, "--index", empty, "--backend", "inprocess").exit_code == 0
    assert summary(run("build", two, "--index", empty, "--backend", "inprocess"))["unchanged"] == "2"


def test_an_image_over_the_pixel_cap_says_which_setting_raises_it(tmp_path, two, grace_path):
    """'512x600 is over the 100,000-pixel cap' did not say that MEMEINDEX_HARD_MAX_PIXELS sets it (the per-file time
    limit and the file-size limit name theirs); with it raised, --retry-failed indexes the file."""
    from memeindex.errors import ImageTooLarge

    index = tmp_path / "index"
    env = {"MEMEINDEX_HARD_MAX_PIXELS": "100000"}  # grace is 512x600
    built = run("build", two, "--index", index, "--backend", "inprocess", env=env)
    assert summary(built)["failed"] == "1"
    assert "skipping grace.jpg: 512x600 is over the 100,000-pixel cap (MEMEINDEX_HARD_MAX_PIXELS)" in built.stderr
    q = run("query", grace_path, "--index", index, env=env)
    assert q.exit_code == ImageTooLarge.exit_code and "(MEMEINDEX_HARD_MAX_PIXELS)" in q.stderr, q.stderr
    again = summary(run("build", two, "--index", index, "--backend", "inprocess", "--retry-failed"))
    assert (again["failed"], again["faces"]) == ("0", "1")


def test_a_url_list_saved_with_a_byte_order_mark_reads_its_first_url(tmp_path):
    """A list saved by an editor that writes a UTF-8 BOM (Notepad): its first URL was refused as 'not an http(s) URL:
    \\ufeffhttp://...', the mark invisible in the message. CRLF line ends too. No network: the loopback address is
    refused before any connection, which shows the URL was read as one."""
    listing = tmp_path / "list.txt"
    listing.write_bytes("\ufeffhttp://127.0.0.1:9/grace.jpg\r\nhttp://127.0.0.1:9/astronaut.jpg astro\r\n".encode())
    files = json.loads(run("download", "urls", listing, tmp_path / "dest", "--json").stdout)["files"]
    assert [(f["url"], f["name"]) for f in files] == [("http://127.0.0.1:9/grace.jpg", "grace"),
                                                      ("http://127.0.0.1:9/astronaut.jpg", "astro")]
    assert all("loopback" in f["reason"] for f in files), files


def test_the_pages_thumbnail_of_an_animated_match_shows_the_matched_frame(tmp_path, grace_rgb, grace_path):
    """A GIF meme whose face shows only in a later frame: the API's match says which, but its thumb_url gave the
    first frame (blank here), so the page showed a picture without the face that matched, where the contact sheet
    draws the matched frame. The thumb_url names the frame; the page adds its size to it."""
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from memeindex.server import create_app
    from memeindex.settings import Settings

    root = tmp_path / "memes"
    root.mkdir()
    blank, face = Image.new("RGB", (512, 600), (128, 128, 128)), Image.fromarray(grace_rgb)
    blank.save(root / "late.gif", save_all=True, append_images=[blank] * 4 + [face] * 3, duration=250)
    index = tmp_path / "index"
    assert run("build", root, "--index", index, "--backend", "inprocess").exit_code == 0
    with TestClient(create_app(index, Settings.from_env())) as client:
        found = client.post("/api/search", files={"image": ("g.jpg", grace_path.read_bytes(), "image/jpeg")})
        top = found.json()["matches"][0]
        assert top["path"] == "late.gif" and top["frame"] >= 1  # Pillow keeps equal frames as one
        page_url = top["thumb_url"] + ("&" if "?" in top["thumb_url"] else "?") + "size=256"  # as app.js asks
        thumb = client.get(page_url)
        assert thumb.status_code == 200, thumb.text
        assert np.asarray(Image.open(io.BytesIO(thumb.content)).convert("L")).std() > 20  # grace, not the blank
        assert client.get(f"/api/memes/{top['id']}/thumb?frame=x").status_code == 400
        assert client.get(f"/api/memes/{top['id']}/thumb?frame=99").status_code == 200  # no such frame: the first


def test_query_of_a_symlink_loop_says_so(tmp_path, two):
    """A link that points at itself is not a missing file: the query said 'no such file' where the build's skip line
    says 'Too many levels of symbolic links'."""
    from memeindex.errors import FileMissing

    index = tmp_path / "index"
    assert run("build", two, "--index", index, "--backend", "inprocess").exit_code == 0
    loop = tmp_path / "me.jpg"
    loop.symlink_to("me.jpg")
    result = run("query", loop, "--index", index)
    assert result.exit_code == FileMissing.exit_code
    assert result.stderr.strip() == f"memeindex: error: {loop}: Too many levels of symbolic links"
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "nowhere.jpg")
    assert run("query", dangling, "--index", index).stderr.strip() == f"memeindex: error: {dangling}: no such file"
