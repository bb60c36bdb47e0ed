"""The CLI's text for people (memeindex/cli.py `format_*`): rendered from the library's data, nothing else.

Unit tests on hand-made data; the end-to-end CLI tests (test_cli.py, test_results.py, test_video.py) run the same
functions on real queries.
"""
from __future__ import annotations

from dataclasses import fields

from memeindex.cli import format_build
from memeindex.indexer import BuildSummary


def test_build_line_names_every_count_of_the_summary():
    counts = {f.name: n for n, f in enumerate(fields(BuildSummary), 1) if f.type == "int"}
    line = format_build(BuildSummary(**counts, seconds=12.34, model_id="m-v1", detector="d7", backend="pool"))
    said = dict(part.split("=") for part in line.split() if "=" in part)
    assert {k: int(said[k]) for k in counts if k != "failed_now"} == {k: v for k, v in counts.items()
                                                                      if k != "failed_now"}
    assert f"(new {counts['failed_now']})" in line and said["model"] == "m-v1" and said["detector"] == "d7"
    assert line.startswith("memeindex build: ") and line.endswith(" in 12.3s") and "\n" not in line
