"""plan(): mark and sweep on fakes (no model, no files)."""
import pytest

from memeindex.generation import RUN_FAILURE_RETRIES, ImageRow
from memeindex.plan import Fingerprint, Scanned, plan

D = "det-2"


def row(path, sha, size=10, mtime=1, status="faces", faces=1, detector=D, run_failures=0):
    return ImageRow(path, sha, size, mtime, status, faces if status == "faces" else 0,
                    "broken" if status == "failed" else "", "", "", detector, run_failures)


def hasher(contents: dict[str, str], calls: list | None = None):
    def fingerprint(rel):
        if calls is not None:
            calls.append(rel)
        if contents[rel] is None:
            raise PermissionError(13, "Permission denied")
        return Fingerprint(contents[rel], image=not rel.endswith(".tsv"))
    return fingerprint


def test_unchanged_files_are_kept_without_hashing():
    known = [row("a.jpg", "A"), row("b.png", "B", status="noface")]
    calls = []
    p = plan(known, [Scanned("a.jpg", 10, 1), Scanned("b.png", 10, 1)], hasher({}, calls), D)
    assert [r.path for r in p.keep] == ["a.jpg", "b.png"] and p.unchanged == 2
    assert calls == [] and not (p.analyze or p.reuse or p.removed)
    # rows made before pHashes were recorded get only that computed; failed files are left alone
    assert [(t.rel, t.phash_only) for t in p.rehash] == [("a.jpg", True), ("b.png", True)]
    hashed = [ImageRow("a.jpg", "A", 10, 1, "faces", 1, "", "0123456789abcdef", "", D),
              ImageRow("c.jpg", "C", 10, 1, "failed", 0, "truncated", "", "", D)]
    assert not plan(hashed, [Scanned("a.jpg", 10, 1), Scanned("c.jpg", 10, 1)], hasher({}), D).rehash


def test_faceless_rows_without_a_dhash_get_their_hashes_again():
    """An index from schema 3 or older: faceless pictures join only when their dHashes agree, so a kept faceless
    row gains one (a first-frame hash, no detection); a row with faces needs none (its joins go by its faces)."""
    h = "0123456789abcdef"
    known = [ImageRow("none.png", "N", 10, 1, "noface", 0, "", h, "", D, 0, ""),
             ImageRow("face.jpg", "F", 10, 1, "faces", 1, "", h, "", D, 0, ""),
             ImageRow("both.png", "B", 10, 1, "noface", 0, "", h, "", D, 0, h)]
    p = plan(known, [Scanned(r.path, 10, 1) for r in known], hasher({}), D)
    assert [(t.rel, t.phash_only) for t in p.rehash] == [("none.png", True)] and p.unchanged == 3


def test_new_changed_renamed_touched_removed():
    known = [row("keep.jpg", "K"), row("old-name.jpg", "R"), row("edited.jpg", "E1"), row("touched.jpg", "T"),
             row("gone.jpg", "G")]
    scanned = [Scanned("keep.jpg", 10, 1), Scanned("new-name.jpg", 10, 5), Scanned("edited.jpg", 11, 2),
               Scanned("touched.jpg", 10, 9), Scanned("brand-new.jpg", 3, 3)]
    contents = {"new-name.jpg": "R", "edited.jpg": "E2", "touched.jpg": "T", "brand-new.jpg": "N"}
    p = plan(known, scanned, hasher(contents), D)
    assert [r.path for r in p.keep] == ["keep.jpg"]
    assert sorted(t.rel for t in p.analyze) == ["brand-new.jpg", "edited.jpg"]
    assert {r.path: (r.sha256, r.mtime_ns) for r in p.reuse} == {"new-name.jpg": ("R", 5), "touched.jpg": ("T", 9)}
    assert sorted(p.removed) == ["gone.jpg", "old-name.jpg"]
    assert (p.unchanged, p.reused) == (2, 1)  # touched counts as unchanged, the rename as reused


def test_checkpointed_content_is_reused_and_copies_share_it():
    p = plan([], [Scanned("a.jpg", 1, 1), Scanned("copy-of-a.jpg", 1, 1)], hasher({"a.jpg": "X", "copy-of-a.jpg": "X"}),
             D, checkpointed=[row("a.jpg", "X", faces=2)])
    assert [(r.path, r.faces) for r in p.reuse] == [("a.jpg", 2), ("copy-of-a.jpg", 2)] and not p.analyze


def test_unreadable_files_are_skipped_and_non_images_ignored():
    p = plan([], [Scanned("locked.jpg", 1, 1), Scanned("index.tsv", 1, 1), Scanned("ok.jpg", 1, 1)],
             hasher({"locked.jpg": None, "index.tsv": "I", "ok.jpg": "O"}), D)
    assert p.skipped == [("locked.jpg", "Permission denied")] and p.ignored == ["index.tsv"]
    assert [t.rel for t in p.analyze] == ["ok.jpg"]


@pytest.mark.parametrize("old_detector, redetect", [("det-1", True), ("", True), (D, False)])
def test_noface_files_of_another_detector_are_analysed_again(old_detector, redetect):
    known = [row("noface.png", "N", status="noface", detector=old_detector),
             row("face.jpg", "F", detector=old_detector), row("failed.jpg", "B", status="failed", detector=old_detector)]
    scanned = [Scanned(r.path, 10, 1) for r in known] + [Scanned("copy-of-noface.png", 10, 1)]
    p = plan(known, scanned, hasher({"copy-of-noface.png": "N"}), D)
    analysed = sorted(t.rel for t in p.analyze)
    assert analysed == (["copy-of-noface.png", "noface.png"] if redetect else [])
    assert p.redetect == len(analysed)
    assert {r.path for r in p.keep} >= {"face.jpg", "failed.jpg"}  # faces found and failures stay as they are


def test_failures_of_the_run_are_retried_a_few_builds_and_failures_of_the_file_never():
    known = [row("broken.jpg", "B", status="failed"), row("timed-out.jpg", "T", status="failed", run_failures=1),
             row("worn-out.jpg", "W", status="failed", run_failures=RUN_FAILURE_RETRIES),
             row("copy-source.jpg", "C", status="failed", run_failures=2)]
    scanned = [Scanned(r.path, 10, 1) for r in known] + [Scanned("copy.jpg", 10, 1)]
    p = plan(known, scanned, hasher({"copy.jpg": "C"}), D)
    assert {t.rel: t.run_failures for t in p.analyze} == {"timed-out.jpg": 1, "copy-source.jpg": 2, "copy.jpg": 2}
    assert p.retried == 3 and p.redetect == 0
    assert sorted(r.path for r in p.keep) == ["broken.jpg", "worn-out.jpg"] and not p.reuse


def test_retry_failed_analyses_every_failed_file_afresh():
    known = [row("broken.heic", "B", status="failed"), row("worn-out.jpg", "W", status="failed", run_failures=3),
             row("ok.jpg", "O"), row("noface.png", "N", status="noface")]
    p = plan(known, [Scanned(r.path, 10, 1) for r in known], hasher({}), D, retry_failed=True)
    assert {t.rel: t.run_failures for t in p.analyze} == {"broken.heic": 0, "worn-out.jpg": 0}  # counted anew
    assert p.retried == 2 and sorted(r.path for r in p.keep) == ["noface.png", "ok.jpg"]


def test_content_to_retry_is_reused_from_a_settled_copy_or_checkpoint():
    """A retried file's content already analysed elsewhere (a checkpoint of the killed retry) is not analysed
    a third time; a settled row of the content wins over a failed one whichever comes first."""
    known = [row("timed-out.jpg", "T", status="failed", run_failures=1)]
    p = plan(known, [Scanned("timed-out.jpg", 10, 1)], hasher({}), D, checkpointed=[row("timed-out.jpg", "T", faces=2)])
    assert [(r.path, r.status, r.faces) for r in p.reuse] == [("timed-out.jpg", "faces", 2)] and not p.analyze
    assert (p.reused, p.retried, p.unchanged) == (1, 0, 0)
    # the killed retry timed out again: the checkpoint's count goes on
    p = plan(known, [Scanned("timed-out.jpg", 10, 1)], hasher({}), D,
             checkpointed=[row("timed-out.jpg", "T", status="failed", run_failures=2)])
    assert [(t.rel, t.run_failures) for t in p.analyze] == [("timed-out.jpg", 2)] and p.retried == 1


def test_known_rows_under_a_folder_the_scan_could_not_list_are_kept_not_removed():
    known = [row("a.jpg", "A"), row("sub/b.jpg", "B"), row("sub/deeper/c.jpg", "C"), row("subway.jpg", "S")]
    p = plan(known, [Scanned("a.jpg", 10, 1)], hasher({}), D, unlisted=["sub"])
    assert [r.path for r in p.keep] == ["a.jpg", "sub/b.jpg", "sub/deeper/c.jpg"] and p.unchanged == 3
    assert p.removed == ["subway.jpg"]  # a sibling whose name merely starts like the folder is gone


def test_a_file_the_scan_could_not_stat_keeps_its_row_and_is_not_removed():
    known = [row("a.jpg", "A"), row("eio.jpg", "E"), row("gone.jpg", "G")]
    p = plan(known, [Scanned("a.jpg", 10, 1)], hasher({}), D, unstatted=["eio.jpg"])
    assert [r for r in p.keep if r.path == "eio.jpg"] == [known[1]]  # its row as it was
    assert p.removed == ["gone.jpg"] and p.unchanged == 1  # the scan counted it skipped, not unchanged


def test_a_changed_file_that_cannot_be_read_keeps_its_old_row():
    known = [row("edited.jpg", "E1")]
    p = plan(known, [Scanned("edited.jpg", 11, 2)], hasher({"edited.jpg": None}), D)
    assert p.skipped == [("edited.jpg", "Permission denied")] and p.keep == known  # next build reads it again
    assert not (p.removed or p.analyze or p.reuse) and p.unchanged == 0


def test_rebuild_analyses_every_readable_file_and_keeps_only_what_it_cannot_read():
    known = [row("same.jpg", "A"), row("copy.jpg", "A"), row("sub/b.jpg", "B"), row("eio.jpg", "E"),
             row("locked.jpg", "L"), row("gone.jpg", "G")]
    scanned = [Scanned("same.jpg", 10, 1), Scanned("copy.jpg", 10, 1), Scanned("locked.jpg", 10, 1),
               Scanned("new.jpg", 10, 1)]
    p = plan(known, scanned, hasher({"same.jpg": "A", "copy.jpg": "A", "locked.jpg": None, "new.jpg": "A"}), D,
             checkpointed=[row("done-before-a-kill.jpg", "C")], unlisted=["sub"], unstatted=["eio.jpg"],
             rebuild=True)
    assert [t.rel for t in p.analyze] == ["same.jpg", "copy.jpg", "new.jpg"]  # known content is not reused
    assert [r.path for r in p.keep] == ["locked.jpg", "eio.jpg", "sub/b.jpg"]  # unreadable now: rows as they were
    assert p.removed == ["gone.jpg"] and p.skipped == [("locked.jpg", "Permission denied")]
    resumed = plan(known, [Scanned("x.jpg", 10, 1)], hasher({"x.jpg": "C"}), D,
                   checkpointed=[row("done-before-a-kill.jpg", "C")], rebuild=True)
    assert [r.path for r in resumed.reuse] == ["x.jpg"]  # a killed rebuild's own checkpoint still resumes it
