"""atomicfile.replacing: the one temp-file-and-rename every whole-file writer uses."""
import pytest

from memeindex.atomicfile import replacing


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "index.tsv"
    dest.write_text("old\n")
    with replacing(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".")  # beside it (an atomic rename), hidden
        tmp.write_text("new\n")
        assert dest.read_text() == "old\n"  # readers see the old file until the rename
    assert dest.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["index.tsv"]

    with pytest.raises(ValueError), replacing(dest) as tmp:
        tmp.write_text("half")
        raise ValueError("the download broke off")
    assert dest.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["index.tsv"]

    own = tmp_path / ".index.tsv.part-1"  # a folder whose clean-up looks for its own temp names
    with replacing(dest, tmp=own) as tmp:
        assert tmp == own
        tmp.write_text("newer\n")
    assert dest.read_text() == "newer\n" and not own.exists()


def dead_pid() -> int:
    """A PID no process has: a child's, once reaped (the other tests that plant a killed writer's temp use it)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has it (until the kernel hands it out again, long after this test)


def test_temps_of_killed_writers_are_swept_and_a_live_writers_kept(tmp_path):
    import os
    import time

    from memeindex.atomicfile import STALE_AFTER_S, remove_stale_temps

    dead = tmp_path / f".face_landmarker.task.tmp{dead_pid()}"
    live = tmp_path / f".sheet.png.tmp{os.getppid()}"
    old = tmp_path / f".other.bin.tmp{os.getppid()}"
    unrelated = tmp_path / ".notes.tmp"
    for path in (dead, live, old, unrelated):
        path.write_bytes(b"half")
    an_hour_ago = time.time() - STALE_AFTER_S - 60
    os.utime(old, (an_hour_ago, an_hour_ago))  # its PID may be another process's by now
    assert sorted(remove_stale_temps(tmp_path)) == sorted([dead, old])
    assert live.exists() and unrelated.exists()

    sheet = tmp_path / "sheet.png"
    left = tmp_path / f".sheet.png.tmp{dead_pid()}"  # a query --sheet killed mid-write
    left.write_bytes(b"half")
    with replacing(sheet) as tmp:
        tmp.write_bytes(b"png")
    assert not left.exists() and live.exists()
