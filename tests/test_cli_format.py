"""The CLI's text for people (memeindex/cli.py `format_*`): rendered from the library's data, nothing else.

Unit tests on hand-made data; the end-to-end CLI tests (test_cli.py, test_results.py, test_video.py) run the same
functions on real queries.
"""
from __future__ import annotations

from dataclasses import fields
from types import SimpleNamespace

from memeindex.cli import VARIANTS_SHOWN, format_build, format_eval, format_match, format_query, format_video
from memeindex.indexer import BuildSummary
from memeindex.search import Match, QueryResult, Variant
from memeindex.traits import Trait
from memeindex.video import Segment


def match(path: str, score: float, variants: int = 0, weak: bool = False, traits=()) -> Match:
    return Match(id="0" * 16, path=path, name=path, score=score, distance=(1 - score) * 2 ** 0.5, box=(0, 0, 9, 9),
                 frame=0, traits=list(traits), variants=[Variant(f"{i:016x}", f"v/{path}-{i}.jpg")
                                                         for i in range(variants)], weak=weak)


def result(matches, calibrated=True) -> QueryResult:
    face = SimpleNamespace(box=(10.2, 20.6, 110.4, 130.5), frame=0, score=0.9)
    return QueryResult(faces=[face, face], face_index=1, matches=matches, model_id="m-v1", calibrated=calibrated)


def test_build_line_names_every_count_of_the_summary():
    counts = {f.name: n for n, f in enumerate(fields(BuildSummary), 1) if f.type == "int"}
    line = format_build(BuildSummary(**counts, seconds=12.34, model_id="m-v1", detector="d7", backend="pool"))
    said = dict(part.split("=") for part in line.split() if "=" in part)
    assert {k: int(said[k]) for k in counts if k != "failed_now"} == {k: v for k, v in counts.items()
                                                                      if k != "failed_now"}
    assert f"(new {counts['failed_now']})" in line and said["model"] == "m-v1" and said["detector"] == "d7"
    assert line.startswith("memeindex build: ") and line.endswith(" in 12.3s") and "\n" not in line


def test_match_rows_line_up_under_the_header():
    rows = [format_match(m, rank) for rank, m in enumerate(
        [match("a.jpg", 0.876, variants=1, traits=[Trait("smiling", 0.83)]), match("b.png", 0.05, 2, weak=True),
         match("c.gif", 1.0)], 1)]
    assert rows[0] == " 1    88%  0.175  a.jpg  [smiling 0.8]  +1 variant"
    assert rows[1].endswith("b.png  +2 variants  (weak match)") and rows[2].endswith("c.gif")
    header = format_query(result([])).splitlines()[1]
    assert [r.index(p) for r, p in zip(rows, ("a.jpg", "b.png", "c.gif"))] == [header.index("meme")] * 3


def test_a_file_name_holding_a_newline_stays_on_its_row():
    m = match("new\nline.jpg", 0.9)
    m.variants, m.variants_total = [Variant("1" * 16, "tab\there.jpg")], 1
    table = format_query(result([m]))
    assert "new\\x0aline.jpg" in table and "also: tab\\x09here.jpg" in table and len(table.splitlines()) == 4
    assert m.to_dict()["path"] == "new\nline.jpg"  # --json keeps the name as it is (JSON escapes it)


def test_query_table_caps_a_long_variant_list_but_json_keeps_it():
    many = match("top.jpg", 0.9, variants=VARIANTS_SHOWN + 7)
    few = match("two.jpg", 0.5, variants=VARIANTS_SHOWN)
    lines = format_query(result([many, few], calibrated=False)).splitlines()
    assert lines[0] == "query face 2 of 2 at (10,21)-(110,130), model m-v1"
    assert f"+{VARIANTS_SHOWN + 7} variants" in lines[2]
    shown = ", ".join(v.path for v in many.variants[:VARIANTS_SHOWN])
    assert lines[3].strip() == f"also: {shown} and 7 more"
    assert lines[5].strip() == f"also: {', '.join(v.path for v in few.variants)}"  # short lists stay whole
    assert lines[-1].startswith("(no calibration for m-v1")
    assert len(many.to_dict()["variants"]) == VARIANTS_SHOWN + 7
    assert format_query(result([])).splitlines()[2] == "    (the index holds no faces)"


def test_video_segments_with_their_span_and_matches():
    text = format_video([Segment(0.0, 2.25, [match("a.jpg", 0.9)], 9), Segment(62.5, 125.04, [], 3),
                         Segment(-1.0, 0.5, [match("b.jpg", 0.4, weak=True)], 1)])
    lines = text.splitlines()
    assert lines[0] == "segment 1  0:00.0-0:02.2  (9 frame(s) with the face)"
    assert lines[1] == "  " + format_match(match("a.jpg", 0.9), 1)
    assert lines[2:4] == ["segment 2  1:02.5-2:05.0  (3 frame(s) with the face)", "      (the index holds no faces)"]
    assert lines[4].startswith("segment 3  0:00.0-0:00.5") and lines[5].endswith("(weak match)")


def test_eval_table_one_aligned_column_per_model():
    figures = {"faces": 40, "images": 38, "P@1": 0.5, "P@3": 0.41234, "mAP": 0.333, "triplet": 0.61,
               "triplets": 2000}
    text = format_eval({"dataset": "/data/fer", "images": 50, "models": {
        "blendshapes-v1": figures, "expression-v1": {**figures, "P@1": None, "triplet": None}}})
    lines = text.splitlines()
    assert lines[0] == "/data/fer: 50 images"
    first, second = lines[1].index("blendshapes-v1"), lines[1].index("expression-v1")
    assert all(line[c - 2:c] == "  " and line[c] != " " for line in lines[2:] for c in (first, second))
    table = {line[:first].strip(): (line[first:second].strip(), line[second:]) for line in lines[2:]}
    assert table["faces found"] == ("40 in 38/50 images", "40 in 38/50 images")
    assert table["P@1 (cross-identity)"] == ("0.500", "-") and table["P@3 (cross-identity)"][0] == "0.412"
    assert table["triplet (raters, chance 0.333)"] == ("0.610 of 2000", "-")
    assert not any("identity-blind" in line for line in lines)  # no identity figures: no identity rows


def test_every_line_breaking_character_of_a_name_is_shown_escaped():
    from memeindex.generation import shown_path

    shown = shown_path("a\nb\rc\x85d\u2028e\u2029f\x7fg\tök.jpg")
    assert shown == "a\\x0ab\\x0dc\\x85d\\u2028e\\u2029f\\x7fg\\x09ök.jpg"
    assert "".join(shown.splitlines()) == shown  # str.splitlines breaks at all of them


def test_a_video_segment_lists_its_matches_variants_as_the_photo_table_does():
    """The video table said '+2 variants' and never which; the photo table's 'also:' line names them."""
    m = match("a.jpg", 0.9, variants=2)
    photo = format_query(result([m])).splitlines()[2:4]
    video = format_video([Segment(0.0, 2.0, [m], 8)]).splitlines()[1:3]
    assert video == ["  " + line for line in photo]
    assert video[1].strip() == "also: v/a.jpg-0.jpg, v/a.jpg-1.jpg"


def test_a_video_on_an_index_without_faces_says_so_as_a_photo_query_does():
    """The video table said 'no matches: the index is empty' of an index holding files, none with a face (what a
    photo query says, in these words)."""
    photo = format_query(result([])).splitlines()[2]
    assert format_video([Segment(0.0, 2.0, [], 8)]).splitlines()[1] == "  " + photo
