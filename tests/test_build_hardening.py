"""Issue #9 (build side) end to end on real photos and the real models: odd names, dying workers, symlinks,
the hash/analysis race, a summary that accounts for every entry, `memeindex check`, detector upgrades."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memeindex import generation as gen
from memeindex.errors import IndexDamaged, IndexMissing, IndexUnwritable, RootMissing
from memeindex.generation import IndexDir
from memeindex.settings import Settings

from test_cli import run, save, summary


@pytest.fixture
def two(tmp_path, grace_rgb):
    root = tmp_path / "memes"
    save(grace_rgb, root / "grace.jpg", quality=90)
    save(np.full((120, 160, 3), 200, np.uint8), root / "wall.png")
    return root


def _images(index) -> dict:
    g = IndexDir(index).generation()
    t = g.images()
    return dict(zip(gen.row_keys(t), t.to_pylist()))


def test_non_utf8_file_name_is_indexed_and_opens(tmp_path, two, grace_path):
    odd = os.fsdecode(b"dir/\xff\xfe.jpg")
    (two / "dir").mkdir()
    (two / odd).write_bytes((two / "grace.jpg").read_bytes()[:-2] + b"\xff\xd9")  # other bytes, same picture
    index = tmp_path / "index"
    result = run("build", two, "--index", index, "--backend", "inprocess")
    assert result.exit_code == 0, result.output
    s = summary(result)
    assert (s["images"], s["failed"], s["faces"]) == ("3", "0", "2")
    rows = _images(index)
    assert rows[odd]["status"] == "faces" and rows[odd]["path"] == "dir/\\xff\\xfe.jpg"
    assert run("check", "--index", index).exit_code == 0

    from memeindex.server.service import SearchService

    service = SearchService(index, Settings.from_env())  # the server opens the exact file by id
    try:
        path = service.image_file(rows[odd]["sha256"][:16])
        assert path is not None and path.read_bytes() == (two / odd).read_bytes()
        q = json.loads(run("query", grace_path, "--index", index, "--json").stdout)
        assert "dir/\\xff\\xfe.jpg" in {m["path"] for m in q["matches"]}
    finally:
        service.close()
    assert summary(run("build", two, "--index", index))["unchanged"] == "3"  # and it stays found


def test_index_folder_with_a_non_utf8_name_builds_answers_and_resumes(tmp_path, two, grace_path):
    index = tmp_path / os.fsdecode(b"idx-\xff")  # pyarrow and FAISS take paths only as UTF-8 text
    result = run("build", two, "--index", index, "--backend", "inprocess")
    assert result.exit_code == 0, result.output
    assert (summary(result)["images"], summary(result)["faces"]) == ("2", "1")
    assert run("check", "--index", index).exit_code == 0
    q = json.loads(run("query", grace_path, "--index", index, "--json").stdout)
    assert q["matches"][0]["path"] == "grace.jpg"
    assert summary(run("build", two, "--index", index))["unchanged"] == "2"
    odd_root = two.rename(tmp_path / os.fsdecode(b"memes-\xfe"))  # the image folder too
    assert summary(run("build", odd_root, "--index", index))["unchanged"] == "2"
    (odd_root / "wall.png").unlink()
    checked = run("check", "--index", index)
    assert checked.exit_code == 0 and "memes-\\xfe since the build" in checked.stdout, checked.output


def test_a_moved_image_folder_is_recorded_by_the_next_build_though_no_file_changed(tmp_path, two):
    index = tmp_path / "index"
    run("build", two, "--index", index, "--backend", "inprocess")
    moved = two.rename(tmp_path / "moved")
    assert summary(run("build", moved, "--index", index))["unchanged"] == "2"
    from memeindex.status import index_info

    assert index_info(index)["root"] == str(moved)  # it kept the old folder: the server then found no file
    assert "note:" not in run("check", "--index", index).stdout


def test_an_index_kept_among_the_images_is_not_scanned(tmp_path, two):
    index = two / "index"  # `memeindex build . --index index`
    run("build", two, "--index", index, "--backend", "inprocess")
    again = summary(run("build", two, "--index", index, "--backend", "inprocess"))
    assert (again["ignored"], again["unchanged"], again["images"]) == ("0", "2", "2")  # its files were 'ignored'


def test_skip_lines_show_a_non_utf8_name_as_the_index_does(tmp_path):
    root = tmp_path / "memes"
    root.mkdir()
    (root / os.fsdecode(b"broken\xff.jpg")).write_bytes(b"\xff\xd8\xff\xe0 not a whole JPEG")  # fails analysis
    os.mkfifo(root / os.fsdecode(b"pipe\xfe.jpg"))  # skipped by the scan
    (root / "new\nline.jpg").write_bytes(b"not an image")  # a newline in a name must not split its skip line
    result = run("build", root, "--index", tmp_path / "index", "--backend", "inprocess")
    assert result.exit_code == 0, result.output
    assert "skipping broken\\xff.jpg: " in result.stderr
    assert "skipping pipe\\xfe.jpg: not a regular file" in result.stderr
    assert "skipping new\\x0aline.jpg: not an image Pillow can read\n" in result.stderr
    assert "\\udc" not in result.stderr  # never Python's surrogate escapes


KILL_WORKERS_HOLDING_FILES_5_AND_9 = """
import os, signal, sys

if __name__ == "__main__":  # worker processes import this file too: only the build process does this
    from memeindex.backends import pool
    from memeindex.cli import main

    give, given = pool._Worker.give, []

    def give_then_kill(self, task):
        delivered = give(self, task)
        given.append(task.rel)
        if delivered and len(given) in (5, 9):  # as the OOM killer would: SIGKILL to a worker holding a file
            os.kill(self.process.pid, signal.SIGKILL)
            print("killed the worker analysing", task.rel, file=sys.stderr, flush=True)
        return delivered

    pool._Worker.give = give_then_kill
    main(sys.argv[1:], prog_name="memeindex")
"""


def test_a_killed_worker_fails_one_file_and_the_build_goes_on(tmp_path, grace_rgb):
    root = tmp_path / "memes"
    rng = np.random.default_rng(7)
    for i in range(30):
        img = grace_rgb[::2, ::2].copy() if i % 2 else grace_rgb.copy()
        img[:4, :4] = rng.integers(0, 255, (4, 4, 3))
        save(img, root / f"face-{i:02d}.png")
    index = tmp_path / "index"
    # The real CLI and models; the build kills the worker it just handed the 5th and the 9th file to, so two
    # workers always die holding a file, however fast or loaded the machine (killing from outside after a poll
    # raced the build: workers between two files, or a build already done).
    script = tmp_path / "build_killing_two_workers.py"
    script.write_text(KILL_WORKERS_HOLDING_FILES_5_AND_9)
    cmd = [sys.executable, str(script), "build", str(root), "--index", str(index), "--no-progress", "--workers", "2",
           "--json"]
    proc = subprocess.run(cmd, env={**os.environ, "MEMEINDEX_CHECKPOINT_EVERY": "4"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    killed = [line.rsplit(" ", 1)[1] for line in proc.stderr.splitlines() if line.startswith("killed the worker")]
    assert len(killed) == 2
    s = json.loads(proc.stdout)
    assert s["images"] == 30 and s["indexed"] == 30
    rows = _images(index)
    died = {p: r["reason"] for p, r in rows.items() if r["status"] == "failed"}
    assert sorted(died) == sorted(killed) and all("died (signal 9)" in why for why in died.values())
    assert s["faces"] == 30 - 2 and s["failed"] == 2
    for name in killed:
        assert f"skipping {name}: the worker analysing it died (signal 9)" in proc.stderr
    assert not list((index / "partial").glob("*.parquet"))
    # the lock was released; the files whose worker died (the run's failure, not theirs) are retried
    again = run("build", root, "--index", index, "--backend", "inprocess")
    assert again.exit_code == 0 and (summary(again)["failed"], summary(again)["retried"]) == ("0", "2")
    assert summary(again)["indexed"] == "2" and summary(again)["faces"] == "30"


def test_a_file_over_the_time_limit_fails_alone(tmp_path, grace_rgb):
    # Large frames: a file's analysis takes far longer (~0.1 s) than a loaded machine may keep the parent from
    # noticing the 1 ms limit; on small ones a late-woken parent found one already done.
    two = tmp_path / "memes"
    save(np.repeat(np.repeat(grace_rgb, 5, axis=0), 5, axis=1), two / "grace.jpg", quality=90)
    save(np.full((3000, 4000, 3), 200, np.uint8), two / "wall.png")
    index = tmp_path / "index"
    result = run("build", two, "--index", index, "--workers", "1", env={"MEMEINDEX_FILE_TIMEOUT": "0.001"})
    assert result.exit_code == 0, result.output
    rows = _images(index)
    assert {r["status"] for r in rows.values()} == {"failed"}
    assert all("per-file limit" in r["reason"] and r["run_failures"] == 1 for r in rows.values())
    assert "skipping grace.jpg: took longer" in result.stderr
    retry = summary(run("build", two, "--index", index, "--backend", "inprocess"))  # the run's fault: tried again
    assert (retry["retried"], retry["indexed"], retry["failed"], retry["faces"]) == ("2", "2", "0", "1")


def test_file_symlinks_are_indexed_and_served_wherever_they_point(tmp_path, two, grace_rgb):
    outside = save(grace_rgb[::2, ::2], tmp_path / "elsewhere" / "kept-elsewhere.jpg")
    os.symlink(outside, two / "outside-link.jpg")
    os.symlink(two / "grace.jpg", two / "inside-link.jpg")
    os.symlink(outside.parent, two / "linked-folder")  # folder links are never followed (loops, escapes)
    index = tmp_path / "index"
    result = run("build", two, "--index", index, "--backend", "inprocess")
    assert result.exit_code == 0, result.output
    rows = _images(index)
    assert rows["outside-link.jpg"]["status"] == rows["inside-link.jpg"]["status"] == "faces"
    assert not any(p.startswith("linked-folder") for p in rows)
    assert summary(result)["skipped"] == "1" and "skipping linked-folder: symlink to a folder" in result.stderr

    from memeindex.server.service import SearchService

    service = SearchService(index, Settings.from_env())
    try:  # every id the index holds is one the server opens
        for row in rows.values():
            assert service.image_file(row["sha256"][:16]) is not None
    finally:
        service.close()


def test_a_file_replaced_between_hashing_and_analysis_gets_rows_of_what_was_analysed(tmp_path, two, grace_rgb,
                                                                                      monkeypatch):
    from memeindex import indexer

    wall = (two / "wall.png").read_bytes()
    face = (two / "grace.jpg").read_bytes()
    real = indexer.fingerprint

    def racing_fingerprint(path):
        fp = real(path)
        if Path(path).name == "grace.jpg":
            Path(path).write_bytes(wall)  # replaced after hashing, before the analysis reads it
        return fp

    monkeypatch.setattr(indexer, "fingerprint", racing_fingerprint)
    index = tmp_path / "index"
    assert run("build", two, "--index", index, "--backend", "inprocess").exit_code == 0
    rows = _images(index)
    assert rows["grace.jpg"]["status"] == "noface"
    assert rows["grace.jpg"]["sha256"] == hashlib.sha256(wall).hexdigest()  # the bytes analysed, not hashed
    assert run("check", "--index", index).exit_code == 0
    monkeypatch.setattr(indexer, "fingerprint", real)
    (two / "copy.jpg").write_bytes(face)  # the face picture's content, new: analysed, not "known as noface"
    s = summary(run("build", two, "--index", index, "--backend", "inprocess"))
    assert _images(index)["copy.jpg"]["status"] == "faces" and (s["indexed"], s["unchanged"]) == ("1", "2")


def test_summary_accounts_for_every_entry(tmp_path, two, grace_rgb):
    (two / "index.tsv").write_text("path\tlabel\n")
    (two / "README").write_text("my memes\n")
    (two / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (two / "broken.jpg").write_bytes(b"not really a jpeg")
    os.symlink(two / "gone.jpg", two / "dangling.jpg")
    index = tmp_path / "index"
    first = summary(run("build", two, "--index", index, "--backend", "inprocess"))
    scanned = 7  # grace, wall, index.tsv, README, .DS_Store, broken.jpg, dangling.jpg
    assert (first["ignored"], first["skipped"], first["failed"], first["indexed"]) == ("3", "1", "1", "3")
    assert sum(int(first[k]) for k in ("indexed", "unchanged", "reused", "skipped", "ignored")) == scanned
    again = summary(run("build", two, "--index", index, "--backend", "inprocess"))
    assert again["failed"] == "1" and again["unchanged"] == "3"  # the index still holds that failure
    assert (again["retried"], again["indexed"]) == ("0", "0")  # a broken file is not retried every night
    asked = json.loads(run("build", two, "--index", index, "--backend", "inprocess", "--retry-failed", "--json").stdout)
    assert (asked["retried"], asked["indexed"], asked["failed"], asked["failed_now"]) == (1, 1, 1, 1)
    (two / "wall.png").unlink()
    (two / "broken.jpg").unlink()
    rebuilt = summary(run("build", two, "--index", index, "--rebuild", "--backend", "inprocess"))
    assert rebuilt["removed"] == "2" and rebuilt["images"] == "1"


def test_check_passes_a_good_index_and_names_the_damage(tmp_path, two):
    index = tmp_path / "index"
    run("build", two, "--index", index, "--backend", "inprocess")
    ok = run("check", "--index", index, "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    (two / "wall.png").unlink()  # the folder moving on is not damage, only a note
    moved_on = run("check", "--index", index)
    assert moved_on.exit_code == 0 and "1 indexed file(s) gone" in moved_on.stdout
    faces = IndexDir(index).generation().faces_path
    faces.write_bytes(faces.read_bytes()[: faces.stat().st_size // 2])
    bad = run("check", "--index", index)
    assert bad.exit_code == IndexDamaged.exit_code and "faces.parquet" in bad.stderr and "DAMAGED" in bad.stdout
    assert run("check", "--index", tmp_path / "nothing").exit_code == IndexMissing.exit_code


def test_check_says_how_many_failed_files_the_next_build_retries(tmp_path, two):
    from memeindex.generation import RUN_FAILURE_RETRIES

    index = tmp_path / "index"
    run("build", two, "--index", index, "--backend", "inprocess")
    g = IndexDir(index).generation()
    images = g.images()
    # grace.jpg as failed by the run once (retried), wall.png as failed by it too often (left alone)
    by_path = {"grace.jpg": 1, "wall.png": RUN_FAILURE_RETRIES}
    paths = images.column("path").to_pylist()
    images = images.set_column(images.schema.get_field_index("status"), "status", pa.array(["failed"] * len(paths)))
    images = images.set_column(images.schema.get_field_index("faces"), "faces",
                               pa.array([0] * len(paths), images.schema.field("faces").type))
    images = images.set_column(images.schema.get_field_index("run_failures"), "run_failures",
                               pa.array([by_path[p] for p in paths], pa.int32()))
    pq.write_table(images, g.images_path)
    checked = run("check", "--index", index, "--json")
    assert json.loads(checked.stdout)["to_retry"] == 1, checked.output
    assert "failed-to-retry=1" in run("check", "--index", index).stdout
    assert summary(run("build", two, "--index", index, "--backend", "inprocess"))["retried"] == "1"  # as it said


def test_commands_on_a_damaged_index_say_so_in_one_line(tmp_path, two, grace_path):
    index = tmp_path / "index"
    run("build", two, "--index", index, "--backend", "inprocess")
    faces = IndexDir(index).generation().faces_path
    faces.write_bytes(faces.read_bytes()[: faces.stat().st_size // 2])  # a disk that filled up, a bad copy
    for args in (("query", grace_path), ("build", two)):
        damaged = run(*args, "--index", index)
        assert damaged.exit_code == IndexDamaged.exit_code, damaged.output
        assert "Traceback" not in damaged.stderr and "faces.parquet" in damaged.stderr
        assert "--rebuild" in damaged.stderr
    assert run("build", two, "--index", index, "--rebuild").exit_code == 0  # the way out it names works
    assert run("check", "--index", index).exit_code == 0
    assert run("query", grace_path, "--index", index).exit_code == 0
    vectors = IndexDir(index).generation().index_path
    vectors.write_bytes(vectors.read_bytes()[: vectors.stat().st_size // 2])  # damage, not an index of another kind
    damaged = run("query", grace_path, "--index", index)
    assert damaged.exit_code == IndexDamaged.exit_code and "index.faiss" in damaged.stderr, damaged.output
    images = IndexDir(index).generation().images_path
    images.write_bytes(images.read_bytes()[:100])
    rebuilt = run("build", two, "--index", index, "--rebuild")  # it read the damaged images table's paths, exit 11
    assert rebuilt.exit_code == 0 and run("check", "--index", index).exit_code == 0, rebuilt.output
    (index / "CURRENT").write_bytes(b"gen-\xff\xfe")  # the pointer itself: not text
    for args in (("query", grace_path), ("build", two), ("build", tmp_path / "gone")):
        damaged = run(*args, "--index", index)
        assert "Traceback" not in damaged.stderr, damaged.output
    assert damaged.exit_code == RootMissing.exit_code and "refusing" in damaged.stderr  # it does not say there is none
    assert run("query", grace_path, "--index", index).exit_code == IndexDamaged.exit_code
    assert run("build", two, "--index", index, "--rebuild").exit_code == 0
    assert run("query", grace_path, "--index", index).exit_code == 0


def test_noface_files_of_an_older_detector_are_analysed_again(tmp_path, two):
    index = tmp_path / "index"
    run("build", two, "--index", index, "--backend", "inprocess")
    g = IndexDir(index).generation()
    assert g.facts["detector"] and set(g.images().column("detector").to_pylist()) == {g.facts["detector"]}
    # As an index made by an older detector: its noface rows and facts name detector "0".
    images = g.images()
    older = images.set_column(images.schema.get_field_index("detector"), "detector",
                              pa.array(["0"] * images.num_rows))
    pq.write_table(older, g.images_path)
    facts = json.loads(g.facts_path.read_text())
    g.facts_path.write_text(json.dumps({**facts, "detector": "0"}))
    assert "re-analyses 1 file" in run("check", "--index", index).stdout
    s = summary(run("build", two, "--index", index, "--backend", "inprocess"))
    assert (s["redetected"], s["indexed"], s["unchanged"]) == ("1", "1", "1")
    assert summary(run("build", two, "--index", index, "--backend", "inprocess"))["indexed"] == "0"


def test_files_indexed_without_a_phash_gain_one_without_reanalysis(tmp_path, two):
    index = tmp_path / "index"
    run("build", two, "--index", index, "--backend", "inprocess")
    g = IndexDir(index).generation()
    images = g.images()
    hashes = images.select(["phash", "dhash"]).to_pylist()
    assert all(len(h["phash"]) == len(h["dhash"]) == 16 for h in hashes)
    for name in ("phash", "dhash"):  # as a v1 index has them
        images = images.set_column(images.schema.get_field_index(name), name, pa.array([""] * images.num_rows))
    pq.write_table(images, g.images_path)
    s = summary(run("build", two, "--index", index, "--backend", "inprocess"))
    assert (s["indexed"], s["unchanged"]) == ("0", "2")
    assert IndexDir(index).generation().images().select(["phash", "dhash"]).to_pylist() == hashes
    images = IndexDir(index).generation().images()  # as schema 3 wrote it: a pHash, no dHash
    pq.write_table(images.set_column(images.schema.get_field_index("dhash"), "dhash", pa.array([""] * 2)),
                   IndexDir(index).generation().images_path)
    assert summary(run("build", two, "--index", index, "--backend", "inprocess"))["indexed"] == "0"
    after = IndexDir(index).generation().images().select(["status", "dhash"]).to_pylist()
    want = {h["dhash"] for h, r in zip(hashes, images.select(["status"]).to_pylist()) if r["status"] == "noface"}
    assert {r["dhash"] for r in after if r["status"] == "noface"} == want and want != {""}
    assert {r["dhash"] for r in after if r["status"] == "faces"} == {""}  # its joins go by its faces: not re-read


def test_a_build_with_nothing_to_do_clears_stale_checkpoints(tmp_path, two):
    index = tmp_path / "index"
    run("build", two, "--index", index, "--backend", "inprocess")
    g = IndexDir(index).generation()
    partial = IndexDir(index).partial
    partial.mkdir()
    for kind in ("images", "faces"):  # as a killed build leaves them, for files since deleted
        (partial / f"{kind}-1-00001.parquet").write_bytes(getattr(g, f"{kind}_path").read_bytes())
    assert json.loads(run("info", "--index", index, "--json").stdout)["interrupted"] is True
    assert summary(run("build", two, "--index", index, "--backend", "inprocess"))["indexed"] == "0"
    assert IndexDir(index).generation().folder == g.folder and not list(partial.glob("*.parquet"))
    assert json.loads(run("info", "--index", index, "--json").stdout)["interrupted"] is False


def test_fast_build_then_a_full_build_finds_what_only_the_rounds_see(tmp_path, grace_rgb):
    """`build --fast` runs the full frame only (the plain landmarker's coverage) and says so in the detector it
    records; a later build without it re-analyses the files the full frame found no face in, and only those."""
    from PIL import Image

    root = tmp_path / "memes"
    save(grace_rgb, root / "grace.jpg", quality=90)
    small = Image.fromarray(grace_rgb)
    small = np.asarray(small.resize((300, round(small.height * 300 / small.width)), Image.LANCZOS))
    strip = np.full((1400, 500, 3), 255, np.uint8)  # a tall strip: the full frame's letterbox shrinks the face
    strip[100:100 + small.shape[0], 40:340] = small
    save(strip, root / "strip.png")
    index = tmp_path / "index"

    fast = json.loads(run("build", root, "--index", index, "--backend", "inprocess", "--fast", "--json").stdout)
    rows = _images(index)
    assert (rows["grace.jpg"]["status"], rows["strip.png"]["status"]) == ("faces", "noface")
    assert fast["detector"] == IndexDir(index).generation().facts["detector"] == rows["strip.png"]["detector"]
    assert fast["detector"].endswith("-full-frame")

    full = json.loads(run("build", root, "--index", index, "--backend", "inprocess", "--json").stdout)
    rows = _images(index)
    assert (full["redetected"], full["indexed"], full["unchanged"]) == (1, 1, 1)
    assert rows["strip.png"]["status"] == "faces" and rows["strip.png"]["detector"] == full["detector"]
    assert not full["detector"].endswith("-full-frame")
    assert run("check", "--index", index).exit_code == 0


WRITE_AT_MOST_1_KB = """
import resource, signal, sys

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
from memeindex.cli import main

sys.exit(main())
"""


def test_an_index_that_cannot_be_written_is_one_line_and_the_last_good_one_stays(tmp_path, two, grace_path):
    index = tmp_path / "index"
    run("build", two, "--index", index, "--backend", "inprocess")
    before = IndexDir(index).current()
    (two / "grace-again.png").write_bytes(grace_path.read_bytes())  # something new to write
    full = subprocess.run([sys.executable, "-c", WRITE_AT_MOST_1_KB, "build", str(two), "--index", str(index),
                           "--backend", "inprocess"], capture_output=True, text=True)
    assert full.returncode == IndexUnwritable.exit_code, full.stderr  # was a traceback, exit 1
    assert "cannot write the index" in full.stderr and "Traceback" not in full.stderr
    assert IndexDir(index).current() == before and run("query", grace_path, "--index", index).exit_code == 0
    assert summary(run("build", two, "--index", index, "--backend", "inprocess"))["images"] == "3"


@pytest.mark.parametrize("rebuild", [(), ("--rebuild",)], ids=["incremental", "rebuild"])
def test_a_subfolder_that_cannot_be_listed_keeps_its_rows(tmp_path, two, grace_rgb, monkeypatch, rebuild):
    """Root reads everything (chmod does not stop it), so the listing of `sub` fails the way an NFS hiccup or a
    permission does: os.scandir raises, and os.walk reports it. A --rebuild analyses what it can read afresh and
    keeps the rows it cannot (it dropped them)."""
    save(grace_rgb[::2, ::2], two / "sub" / "small-grace.png")
    index = tmp_path / "index"
    run("build", two, "--index", index, "--backend", "inprocess")
    before = _images(index)
    assert "sub/small-grace.png" in before
    scandir = os.scandir

    def unlistable(path="."):
        if os.fspath(path).endswith(os.sep + "sub"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", unlistable)
    result = run("build", two, "--index", index, "--backend", "inprocess", *rebuild)
    assert "skipping sub: Permission denied" in result.stderr
    got = summary(result)
    assert (got["removed"], got["indexed"], got["skipped"], got["images"]) == ("0", "2" if rebuild else "0", "1", "3")
    assert _images(index)["sub/small-grace.png"] == before["sub/small-grace.png"]
    assert _images(index) == before  # nothing re-analysed next time: the rows stand as they were
    from memeindex.scan import walk

    assert walk(two).unlisted == ["sub"]


def test_a_file_whose_stat_fails_keeps_its_row(tmp_path, two, monkeypatch):
    """EIO from stat (an NFS hiccup) on one file: its row stands, one skip line, nothing removed."""
    index = tmp_path / "index"
    run("build", two, "--index", index, "--backend", "inprocess")
    before = _images(index)
    victim = sorted(before)[0]
    real_stat = os.stat

    def failing(path, *args, **kwargs):
        if os.fsdecode(path).endswith(os.sep + victim):
            raise OSError(5, "Input/output error", os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing)
    result = run("build", two, "--index", index, "--backend", "inprocess")
    assert f"skipping {victim}: Input/output error" in result.stderr
    got = summary(result)
    assert (got["removed"], got["indexed"], got["skipped"], got["images"]) == ("0", "0", "1", str(len(before)))
    assert _images(index) == before


def test_a_folder_tree_deeper_than_the_recursion_limit_is_walked(tmp_path, two):
    """With the limit lowered to 100 frames above this test's own, 200 nested folders are too deep for a walk that
    recurses once a level (os.walk of Python 3.11 died of RecursionError under ~1000); the tree stays shallow
    enough for pytest's own (recursive) clean-up of tmp_path."""
    import inspect
    import sys

    from memeindex.scan import walk

    deep = two
    for _ in range(200):
        deep = deep / "d"
        deep.mkdir()
    (deep / "deepest.jpg").write_bytes((two / "grace.jpg").read_bytes())
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 100)
    try:
        found = walk(two)
    finally:
        sys.setrecursionlimit(limit)
    assert [f.rel.rsplit("/", 1)[-1] for f in found.files] == ["deepest.jpg", "grace.jpg", "wall.png"]
    assert not found.skipped
