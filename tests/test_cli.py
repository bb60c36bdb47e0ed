"""The real CLI end to end, on folders made at test time from real face photos, with the real models."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from memeindex.cli import main
from memeindex.errors import BuildLocked, IndexMismatch, IndexMissing, IndexTypeUnsupported, RootMissing
from memeindex.generation import IndexDir


def run(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def summary(result) -> dict:
    return dict(part.split("=") for part in result.stdout.split() if "=" in part)


def save(rgb, path: Path, fmt=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, fmt, **kw)
    return path


@pytest.fixture
def folder(tmp_path, grace_rgb, astronaut_rgb):
    root = tmp_path / "memes"
    save(grace_rgb, root / "grace.jpg", quality=92)
    save(astronaut_rgb, root / "space" / "astronaut.png")
    save(np.full((200, 300, 3), 180, np.uint8), root / "wall.png")
    return root


def test_build_query_and_rerun(tmp_path, folder, grace_path):
    index = tmp_path / "index"
    first = run("build", folder, "--index", index)
    assert first.exit_code == 0, first.output
    s = summary(first)
    assert (s["indexed"], s["images"], s["noface"], s["failed"]) == ("3", "3", "1", "0")
    assert int(s["faces"]) == 2

    q = run("query", grace_path, "--index", index, "--json")
    assert q.exit_code == 0, q.output
    result = json.loads(q.stdout)
    assert result["matches"][0]["path"] == "grace.jpg"  # the indexed photo of the same face comes first
    assert result["matches"][0]["distance"] < 0.1 < result["matches"][1]["distance"]
    assert len({m["id"] for m in result["matches"]}) == len(result["matches"])  # one entry per meme

    table = run("query", grace_path, "--index", index, "-k", "2")
    assert "grace.jpg" in table.stdout.splitlines()[2] and "%" in table.stdout

    generation = IndexDir(index).current()
    again = summary(run("build", folder, "--index", index))
    assert (again["indexed"], again["unchanged"], again["reused"], again["removed"]) == ("0", "3", "0", "0")
    assert IndexDir(index).current() == generation  # a re-run does no work, not even a rewrite

    info = json.loads(run("info", "--index", index, "--json").stdout)
    assert (info["faces"], info["images"], info["no_face"]) == (2, 3, 1)


def test_add_modify_delete_rename(tmp_path, folder, grace_rgb, astronaut_rgb):
    index = tmp_path / "index"
    run("build", folder, "--index", index)
    save(astronaut_rgb[:, ::-1], folder / "new" / "mirrored astronaut.png")  # added
    save(grace_rgb[40:560, 30:500], folder / "grace.jpg", quality=80)  # modified in place
    (folder / "wall.png").unlink()  # deleted
    (folder / "space" / "astronaut.png").rename(folder / "space" / "renamed.png")  # renamed
    s = summary(run("build", folder, "--index", index))
    assert (s["indexed"], s["reused"], s["removed"], s["unchanged"]) == ("2", "1", "2", "0")
    assert (s["images"], s["faces"]) == ("3", "3")
    info = json.loads(run("info", "--index", index, "--json").stdout)
    assert info["no_face"] == 0 and info["faces"] == 3

    os.utime(folder / "grace.jpg", ns=(1, 1))  # touched, same bytes: hashed, found unchanged
    s = summary(run("build", folder, "--index", index))
    assert (s["indexed"], s["unchanged"]) == ("0", "3")


def _zoo(root: Path, grace_rgb: np.ndarray) -> dict[str, str]:
    """Odd files; returns the expected status of each (faces / noface / failed)."""
    face = Image.fromarray(grace_rgb)
    buf = io.BytesIO()
    face.save(buf, "JPEG")
    jpeg = buf.getvalue()
    expected = {}

    def put(rel, data, status):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expected[rel] = status

    def encode(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    put("empty.jpg", b"", "failed")
    put("truncated.jpg", jpeg[: len(jpeg) // 3], "failed")
    put("notes.jpg", b"this is a text file wearing a .jpg", "failed")
    put("png-named.jpg", encode(face, "PNG"), "faces")
    put("cmyk.jpg", encode(face.convert("CMYK"), "JPEG"), "faces")
    deep = np.asarray(face.convert("L")).astype(np.uint16) * 257
    put("deep-16bit.png", encode(Image.fromarray(deep), "PNG"), "faces")
    put("palette-alpha.png", encode(face.convert("RGBA").convert("P"), "PNG", transparency=0), "faces")
    frames = [face.convert("P"), Image.new("RGB", face.size, (128, 90, 60)).convert("P"),
              ImageOps.mirror(face).convert("P")]
    put("animated.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                                  disposal=2, optimize=False), "faces")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned: upright only once the EXIF rotation is applied
    put("exif-rotated.jpg", encode(face.rotate(-90, expand=True), "JPEG", exif=exif), "faces")
    put("ünïcødé nämé/spaced file name.jpg", jpeg, "faces")
    put("a/b/c/deep nested.jpg", encode(face.resize((256, 300)), "JPEG"), "faces")
    put("scenery.png", encode(Image.new("RGB", (320, 200), (90, 140, 200)), "PNG"), "noface")
    put(".hidden.jpg", jpeg, "skip")
    (root / "empty folder" / "inner").mkdir(parents=True)
    (root / "loop").mkdir()
    os.symlink("..", root / "loop" / "back-to-root")
    return expected


def test_bad_file_zoo_every_file_accounted_for(tmp_path, grace_rgb):
    root = tmp_path / "zoo"
    expected = _zoo(root, grace_rgb)
    index = tmp_path / "index"
    result = run("build", root, "--index", index)
    assert result.exit_code == 0, result.output
    counted = {k: v for k, v in expected.items() if v != "skip"}
    s = summary(result)
    assert int(s["images"]) == len(counted)
    assert int(s["failed"]) == 3 and int(s["noface"]) == 1
    for rel, status in counted.items():
        if status == "failed":
            assert f"skipping {rel}:" in result.stderr
    assert "Traceback" not in result.stderr and "W0000" not in result.stderr

    import pyarrow.parquet as pq

    gen = IndexDir(index).current()
    images = {r["path"]: r for r in pq.read_table(gen / "images.parquet").to_pylist()}
    assert {p: r["status"] for p, r in images.items()} == counted
    assert all(images[p]["reason"] for p, s in counted.items() if s == "failed")
    faces = pq.read_table(gen / "faces.parquet").to_pylist()
    gif_frames = sorted(r["frame"] for r in faces if r["path"] == "animated.gif")
    assert gif_frames == [0, 2]  # one row per face per frame; the blank middle frame has none
    rotated = next(r for r in faces if r["path"] == "exif-rotated.jpg")
    plain = next(r for r in faces if r["path"] == "png-named.jpg")
    # The box is in upright pixels: the same place as in the unrotated copy.
    assert np.allclose(rotated["box"], plain["box"], atol=15)


def test_missing_or_empty_root_never_wipes_the_index(tmp_path, folder):
    index = tmp_path / "index"
    run("build", folder, "--index", index)
    generation = IndexDir(index).current()
    gone = run("build", tmp_path / "not-there", "--index", index)
    assert gone.exit_code == RootMissing.exit_code and "refusing" in gone.stderr
    (tmp_path / "empty").mkdir()
    empty = run("build", tmp_path / "empty", "--index", index)
    assert empty.exit_code == RootMissing.exit_code
    (tmp_path / "mount").mkdir()  # an unmounted share whose mount point holds a note
    (tmp_path / "mount" / "README.txt").write_text("the meme share is mounted here\n")
    no_images = run("build", tmp_path / "mount", "--index", index)
    assert no_images.exit_code == RootMissing.exit_code and "no image files" in no_images.stderr
    a_file = run("build", folder / "grace.jpg", "--index", index)
    assert a_file.exit_code == RootMissing.exit_code and "is not a folder" in a_file.stderr
    assert IndexDir(index).current() == generation
    assert json.loads(run("info", "--index", index, "--json").stdout)["images"] == 3
    first = run("build", tmp_path / "empty", "--index", tmp_path / "new-index")  # no index yet: none to wipe
    assert first.exit_code == RootMissing.exit_code and first.stderr.endswith("holds no files: nothing to index\n")


def test_an_index_of_faceless_images_answers_no_match(tmp_path, grace_path):
    save(np.full((200, 300, 3), 180, np.uint8), tmp_path / "walls" / "wall.png")  # every file faceless
    index = tmp_path / "index"
    assert summary(run("build", tmp_path / "walls", "--index", index, "--backend", "inprocess"))["faces"] == "0"
    result = run("query", grace_path, "--index", index, "--json")  # was exit 4: "not in the same order: rebuild"
    assert result.exit_code == 0 and json.loads(result.stdout)["matches"] == [], result.output


def test_an_index_path_that_is_a_file_is_one_error_line(tmp_path, folder):
    (tmp_path / "afile").write_text("not an index")
    for args in (("info",), ("check",), ("build", folder)):
        result = run(*args, "--index", tmp_path / "afile")
        assert result.exit_code == IndexMissing.exit_code and "it is a file" in result.stderr, result.output
    assert (tmp_path / "afile").read_text() == "not an index"


def test_second_build_is_refused_while_one_runs(tmp_path, folder):
    index = tmp_path / "index"
    with IndexDir(index).lock():
        result = run("build", folder, "--index", index)
    assert result.exit_code == BuildLocked.exit_code and "another build" in result.stderr


def test_query_errors_are_clean(tmp_path, folder, grace_path):
    index = tmp_path / "index"
    missing = run("query", grace_path, "--index", index)
    assert missing.exit_code == IndexMissing.exit_code and "memeindex build" in missing.stderr
    run("build", folder, "--index", index)
    noface = run("query", folder / "wall.png", "--index", index)
    assert noface.exit_code == 2 and "no face" in noface.stderr
    out_of_range = run("query", grace_path, "--index", index, "--face", "3")
    assert out_of_range.exit_code == 2


def test_index_of_another_model_is_refused_until_rebuilt(tmp_path, folder, grace_path):
    index = tmp_path / "index"
    run("build", folder, "--index", index, env={"MEMEINDEX_EMBEDDER": "baseline"})
    facts_file = IndexDir(index).current() / "index.json"
    facts = json.loads(facts_file.read_text())
    facts["model_id"] = "some-other-model-v0"  # as if built by another embedder
    facts_file.write_text(json.dumps(facts))
    env = {"MEMEINDEX_EMBEDDER": "baseline"}
    q = run("query", grace_path, "--index", index, env=env)
    assert q.exit_code == IndexMismatch.exit_code and "rebuild" in q.stderr
    b = run("build", folder, "--index", index, env=env)
    assert b.exit_code == IndexMismatch.exit_code and "--rebuild" in b.stderr
    r = run("build", folder, "--index", index, "--rebuild", env=env)
    assert r.exit_code == 0 and summary(r)["indexed"] == "3"
    assert run("query", grace_path, "--index", index, env=env).exit_code == 0


STALL_AFTER_FIRST_CHECKPOINT = """
import sys, time

if __name__ == "__main__":  # worker processes import this file too: only the build process stalls
    from memeindex import generation
    from memeindex.cli import main

    write = generation.Checkpoints.write

    def write_then_stall(self, *args, **kwargs):
        write(self, *args, **kwargs)
        time.sleep(3600)  # the test kills the build here

    generation.Checkpoints.write = write_then_stall
    main(sys.argv[1:], prog_name="memeindex")
"""


def save_script(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_kill_9_leaves_the_last_index_and_the_next_build_resumes(tmp_path, folder, grace_rgb):
    index = tmp_path / "index"
    run("build", folder, "--index", index)
    before = IndexDir(index).current()
    rng = np.random.default_rng(0)
    for i in range(24):  # distinct files (a few changed pixels each), faces at several sizes
        img = grace_rgb[::2, ::2].copy() if i % 2 else grace_rgb.copy()
        img[:4, :4] = rng.integers(0, 255, (4, 4, 3))
        save(img, folder / "batch" / f"face-{i:02d}.png")
    env = {**os.environ, "MEMEINDEX_CHECKPOINT_EVERY": "3", "MEMEINDEX_WORKERS": "1"}
    # The real CLI, stalled right after its first checkpoint: the kill always lands while the build runs and after
    # a checkpoint, however slow or busy the machine (a poll racing a fast build, or a fixed deadline on a slow
    # one, made this test depend on the load).
    script = save_script(tmp_path / "build_stalling_after_a_checkpoint.py", STALL_AFTER_FIRST_CHECKPOINT)
    cmd = [sys.executable, str(script), "build", str(folder), "--index", str(index), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not list((index / "partial").glob("faces-*.parquet")):
            assert proc.poll() is None, f"the build ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.05)
        assert proc.poll() is None  # stalled, not finished: the kill below interrupts a running build
        running = json.loads(run("info", "--index", index, "--json").stdout)
        assert (running["building"], running["interrupted"]) == (True, False)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the build and its workers
        proc.wait()
        proc.stderr.close()
    assert IndexDir(index).current() == before  # the last good index is untouched ...
    info = json.loads(run("info", "--index", index, "--json").stdout)
    assert info["images"] == 3
    # No build runs now (info said so for ever after a kill or a Ctrl-C); its checkpoints wait for the next one.
    assert (info["building"], info["interrupted"]) == (False, True)
    q = run("query", folder / "grace.jpg", "--index", index, "--json")  # ... and still answers
    assert q.exit_code == 0 and json.loads(q.stdout)["matches"][0]["path"] == "grace.jpg"

    resumed = summary(run("build", folder, "--index", index))
    assert int(resumed["reused"]) >= 3  # the checkpointed files are not analyzed again
    assert int(resumed["indexed"]) + int(resumed["reused"]) == 24
    assert resumed["images"] == "27" and resumed["failed"] == "0"
    assert not list((index / "partial").glob("*.parquet"))
    assert summary(run("build", folder, "--index", index))["indexed"] == "0"
    done = json.loads(run("info", "--index", index, "--json").stdout)
    assert (done["building"], done["interrupted"]) == (False, False)


def test_build_from_a_script_read_on_stdin_does_not_hang(tmp_path, folder):
    # Worker processes cannot re-import a main script read from stdin: the build must still finish.
    code = f"import memeindex; print(memeindex.build({str(folder)!r}, {str(tmp_path / 'index')!r}).to_dict())"
    proc = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'indexed': 3," in proc.stdout and "'images': 3," in proc.stdout
    assert "without the per-file time limit" in proc.stderr  # the pool's fallback says what it gives up


def test_index_type_is_chosen_recorded_and_refused_when_unknown(tmp_path, folder, grace_path):
    index = tmp_path / "index"
    bad = run("build", folder, "--index", index, "--index-type", "diskann")
    assert bad.exit_code == 2 and "'diskann' is not one of auto, flat" in bad.output and not index.exists()

    built = run("build", folder, "--index", index, "--index-type", "hnsw")
    assert built.exit_code == 0, built.output
    facts = json.loads((IndexDir(index).current() / "index.json").read_text())
    assert facts["index_type"] == "hnsw" and facts["index_params"]["factory"] == "HNSW32,Flat"
    assert 0.0 <= facts["recall_at_3"] <= 1.0
    q = json.loads(run("query", grace_path, "--index", index, "--json").stdout)
    assert q["matches"][0]["path"] == "grace.jpg"
    info = json.loads(run("info", "--index", index, "--json").stdout)
    assert (info["index_type"], info["index_factory"], info["recall_at_3"]) == ("hnsw", "HNSW32,Flat",
                                                                               facts["recall_at_3"])

    # No file changed, but another index type was asked for: the generation is republished with it.
    generation = IndexDir(index).current()
    assert run("build", folder, "--index", index, "--index-type", "flat").exit_code == 0
    assert IndexDir(index).current() != generation
    facts = json.loads((IndexDir(index).current() / "index.json").read_text())
    assert (facts["index_type"], facts["recall_at_3"]) == ("flat", 1.0)

    # A generation of a type this reader cannot honour is refused with the rebuild command.
    (IndexDir(index).current() / "index.json").write_text(json.dumps({**facts, "index_type": "diskann"}))
    refused = run("query", grace_path, "--index", index)
    assert refused.exit_code == IndexTypeUnsupported.exit_code and "diskann" in refused.output and "--rebuild" in refused.output


def test_help_imports_no_heavy_library():
    """`memeindex --help` stays instant: the CLI module (and the backend names it offers) imports no numerical,
    image, model or cluster library; each command imports what it needs when it runs."""
    code = ("import sys; from click.testing import CliRunner; from memeindex.cli import main; "
            "assert CliRunner().invoke(main, ['build', '--help']).exit_code == 0; "
            "print(sorted(m for m in ('numpy', 'pyarrow', 'faiss', 'PIL', 'cv2', 'mediapipe', 'ray', 'tqdm') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
