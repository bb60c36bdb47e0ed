"""Video queries on mp4 clips made at test time from the test photos."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import media_fixtures as media
from memeindex.cli import format_video
from memeindex.errors import FileMissing, NoFace, NotAnImage
from memeindex.formats import is_video
from memeindex.video import Segment, follow, query_video

pytest.importorskip("cv2")


def who(segment: Segment) -> str:
    return segment.matches[0].path.split("-")[0].split("_")[0].split(".")[0]


def test_two_faces_two_segments(searcher, tmp_path):
    clip = media.write_mp4(tmp_path / "clip.mp4", [(media.grace(), 2.0), (media.astronaut(), 2.0)])
    segments = query_video(clip, k=3, searcher=searcher)
    assert len(segments) == 2
    first, second = segments
    assert abs(second.start - 2.0) <= 0.5 and first.start == 0.0 and second.end == pytest.approx(4.0, abs=0.3)
    assert first.end <= second.start  # one face's span ends where the next one's begins, not after it
    assert who(first) == "grace" and who(second) == "astronaut"
    assert [m.id for m in first.matches] != [m.id for m in second.matches]
    assert all(len(s.matches) == 3 for s in segments) and first.frames >= 6
    x0, y0, x1, y1 = first.box
    assert 0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 360  # in the video's own pixels
    text = format_video(segments)
    assert "segment 1  0:00.0-" in text and "segment 2" in text and "grace" in text and "astronaut" in text
    data = json.loads(json.dumps([s.to_dict() for s in segments]))
    assert data[1]["matches"][0]["path"].startswith("astronaut") and len(data[0]["matches"][0]["id"]) == 16
    assert "smiling" in {t["name"] for t in data[1]["matches"][0]["traits"]}  # the astronaut's smile, both faces


def test_short_interlude_is_merged_away(searcher, tmp_path):
    clip = media.write_mp4(tmp_path / "blip.mp4", [(media.grace(), 2.0), (media.astronaut(), 0.4),
                                                   (media.grace(), 1.6), (media.astronaut(), 2.0)])
    segments = query_video(clip, k=2, searcher=searcher)
    assert [who(s) for s in segments] == ["grace", "astronaut"]
    assert abs(segments[1].start - 4.0) <= 0.5


def test_gaps_without_a_face(searcher, tmp_path):
    blank = np.full((360, 480, 3), 90, np.uint8)
    clip = media.write_mp4(tmp_path / "gap.mp4", [(blank, 1.0), (media.astronaut(), 1.5), (blank, 2.5),
                                                  (media.astronaut(), 1.5)])
    segments = query_video(clip, k=1, searcher=searcher)
    assert len(segments) == 2 and all(who(s) == "astronaut" for s in segments)
    assert segments[0].start >= 0.75 and segments[1].start >= 4.75


def test_bad_inputs(searcher, tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(NotAnImage):
        query_video(fake, searcher=searcher)
    with pytest.raises(FileMissing):  # its own error (exit 7), not "not an image"
        query_video(tmp_path / "missing.mp4", searcher=searcher)
    empty = media.write_mp4(tmp_path / "blank.mp4", [(np.full((360, 480, 3), 30, np.uint8), 1.0)])
    with pytest.raises(NoFace):
        query_video(empty, searcher=searcher)
    assert is_video("a/B.MP4") and is_video("x.webm") and not is_video("x.jpg")


def face(x0, y0, x1, y1):
    return SimpleNamespace(box=(x0, y0, x1, y1), area=(x1 - x0) * (y1 - y0))


def test_follow_keeps_the_main_face():
    big, small = face(0, 0, 100, 100), face(300, 0, 350, 50)
    assert follow([big, small], None) == (big, False)
    assert follow([face(0, 0, 120, 120), face(305, 5, 355, 55)], small.box)[0].box == (305, 5, 355, 55)
    chosen, switched = follow([face(600, 600, 700, 700)], small.box)
    assert switched and chosen.box == (600, 600, 700, 700)
    assert follow([], small.box) == (None, False)


def test_a_video_is_known_by_its_first_bytes_whatever_its_name(tmp_path, searcher):
    from click.testing import CliRunner

    from memeindex.cli import main
    from memeindex.scan import fingerprint

    clip = media.write_mp4(tmp_path / "clip.mp4", [(media.grace(), 1.5)]).rename(tmp_path / "clip.jpg")
    result = CliRunner().invoke(main, ["query", str(clip), "--index", str(searcher.index_dir.path), "--json"])
    assert result.exit_code == 0, result.output
    segments = json.loads(result.stdout)
    assert len(segments) == 1 and segments[0]["matches"][0]["path"].startswith("grace")
    assert fingerprint(clip).image is False  # a build indexes images: it ignores the clip, not fails it
    photo = tmp_path / "photo.mp4"
    photo.write_bytes(media.jpeg(media.grace()))
    assert not is_video(photo)  # a JPEG named .mp4 is a photo query
    from memeindex.formats import looks_like_image, looks_like_video, sniff_video

    webm, avi = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01" + bytes(23), b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(16)
    assert (sniff_video(webm), sniff_video(avi)) == ("mkv", "avi")
    png = b"\x89PNG\r\n\x1a\n" + bytes(24)
    # One rule each way, first bytes before the name: never both an image and a video, a name only when they are mute
    for head, name, video in [(webm, "a.jpg", True), (png, "a.mp4", False), (b"", "a.MKV", True),
                              (bytes(32), "a.png", False), (bytes(32), "a.mov", True), (avi, "a.txt", True)]:
        assert looks_like_video(head, name) is video, (head[:4], name)
        assert not (video and looks_like_image(head, name))


def test_a_video_query_given_only_an_index_opens_its_own_searcher(searcher, tmp_path):
    # The library entry point, as `memeindex.query` is for photos: no Searcher and no Settings handed in.
    clip = media.write_mp4(tmp_path / "clip.mp4", [(media.grace(), 1.5)])
    segments = query_video(clip, searcher.index_dir.path, k=1)
    assert len(segments) == 1 and who(segments[0]) == "grace"


def test_a_clip_whose_name_is_not_utf8_is_read_not_a_crash(tmp_path):
    """OpenCV dies of SIGSEGV on such a name (a subprocess, so that the old code fails this test, not the run)."""
    import os
    import subprocess
    import sys

    odd = media.write_mp4(tmp_path / "clip.mp4", [(media.grace(), 1.0)]).rename(tmp_path / os.fsdecode(b"clip\xff.mp4"))
    (tmp_path / os.fsdecode(b"junk\xff.mp4")).write_bytes(b"not a video")
    code = ("import sys; from memeindex.video import sample_frames; print(sum(1 for _ in sample_frames(sys.argv[1])))\n"
            "try:\n    next(sample_frames(sys.argv[2]))\nexcept Exception as exc:\n    print(exc)")
    proc = subprocess.run([sys.executable, "-c", code, os.fsencode(odd), os.fsencode(odd.with_name(
        os.fsdecode(b"junk\xff.mp4")))], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    count, refused = proc.stdout.splitlines()
    assert int(count) >= 3 and refused.startswith("cannot read ") and "junk\\xff.mp4" in refused  # shown as stored
