"""Contact sheets: query face boxed, matches outlined, score, traits and variants under each."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import media_fixtures as media
from memeindex.errors import SheetFormatUnknown
from memeindex.sheet import CAPTION, MATCH_COLOUR, PAD, QUERY_COLOUR, SHEET_FORMATS, WEAK_COLOUR, write_sheet

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def colour_pixels(img: Image.Image, colour, region=None) -> int:
    arr = np.asarray(img.convert("RGB").crop(region) if region else img.convert("RGB"))
    return int(np.all(arr == np.array(colour, np.uint8), axis=-1).sum())


def test_sheet_boxes_and_layout(searcher, tmp_path):
    query = tmp_path / "query.jpg"
    Image.fromarray(media.grace()).save(query)
    result = searcher.search(query, k=3)
    out = write_sheet(result, query, searcher, tmp_path / "deep" / "sheet.png", cell=200)
    sheet = Image.open(out)
    assert sheet.size == (PAD + 4 * (200 + PAD), PAD + 200 + CAPTION + PAD)
    cells = [(PAD + n * (200 + PAD), PAD, PAD + n * (200 + PAD) + 200, PAD + 200) for n in range(4)]
    assert colour_pixels(sheet, QUERY_COLOUR, cells[0]) > 200  # the query face, boxed
    assert colour_pixels(sheet, QUERY_COLOUR, cells[1]) == 0
    for cell, match in zip(cells[1:], result.matches):
        colour = WEAK_COLOUR if match.weak else MATCH_COLOUR
        assert colour_pixels(sheet, colour, cell) > 100  # each matched face, outlined (greyed when weak)
    assert [m.weak for m in result.matches] == [False, False, True]  # grace twice, then the astronaut
    # The query box sits where grace's face is: roughly the middle of the fitted picture.
    arr = np.all(np.asarray(sheet.crop(cells[0])) == QUERY_COLOUR, axis=-1)
    ys, xs = np.nonzero(arr)
    assert 60 < xs.mean() < 140 and 40 < ys.mean() < 130
    ARTIFACTS.mkdir(exist_ok=True)
    sheet.save(ARTIFACTS / "sheet.png")


def test_sheet_from_root_array_and_missing_file(searcher, tmp_path):
    both = np.concatenate([media.fit(media.grace(), 512, 512), media.astronaut()], axis=1)
    result = searcher.search(both, k=2)
    assert len(result.faces) == 2
    out = write_sheet(result, both, searcher.root, tmp_path / "sheet.jpg", cell=128)
    assert Image.open(out).format == "JPEG"
    result.matches[0].path = "gone.jpg"  # deleted since the build: a placeholder, not a crash
    result.matches[0].id = "ffffffffffffffff"
    write_sheet(result, both, searcher.root, tmp_path / "a.png", cell=128)
    write_sheet(result, both, searcher, tmp_path / "b.png", cell=128)


def test_a_sheet_is_replaced_whole_or_not_at_all(searcher, tmp_path, monkeypatch):
    grace = media.grace()
    result = searcher.search(grace, k=1)
    out = write_sheet(result, grace, searcher, tmp_path / "sheet.png", cell=64)
    before = out.read_bytes()
    assert Image.open(out).format == "PNG" and [p.name for p in tmp_path.iterdir()] == ["sheet.png"]

    def half_then_fail(self, fp, format=None, **params):  # a full disk (or a kill) in the middle of the write
        Path(fp).write_bytes(before[:100])
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_then_fail)
    with pytest.raises(OSError):
        write_sheet(result, grace, searcher, out, cell=64)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["sheet.png"]


def test_a_sheet_is_written_in_the_formats_it_lists_and_no_other(searcher, tmp_path):
    grace = media.grace()
    result = searcher.search(grace, k=1)
    for suffix, fmt in SHEET_FORMATS.items():
        out = write_sheet(result, grace, searcher, tmp_path / f"sheet{suffix.upper()}", cell=32)
        assert Image.open(out).format == fmt
    with pytest.raises(SheetFormatUnknown, match=r"\.png"):  # Pillow writes GIF; a sheet is not one of its formats
        write_sheet(result, grace, searcher, tmp_path / "sheet.gif", cell=32)
    assert not list(tmp_path.glob("*.gif")) and not list(tmp_path.glob(".*"))


def test_an_animated_query_is_searched_and_drawn_at_the_frame_its_face_shows_up(searcher, tmp_path):
    face = media.fit(media.grace(), 480, 360)
    frames = [Image.new("RGB", (480, 360), (40 + 8 * i, 40, 40)) for i in range(11)]
    frames[6:8] = [Image.fromarray(face), Image.fromarray(face[:, ::-1])]  # 1.2-1.6 s of a 2.2 s GIF
    query = tmp_path / "late.gif"
    frames[0].save(query, save_all=True, append_images=frames[1:], duration=200)
    result = searcher.search(query, k=1)  # NoFace before: only frames 0, 5 and 10 were looked at
    assert result.faces[0].frame == 7  # sampled 4 times a second: frame 6 (from 1.2 s) shares 1.0-1.25 s with 5
    out = write_sheet(result, query, searcher, tmp_path / "sheet.png", cell=200)
    query_cell = Image.open(out).convert("RGB").crop((PAD, PAD, PAD + 200, PAD + 200))
    assert len(query_cell.getcolors(1 << 16)) > 500  # the photo the face is in, not the first (blank) frame


def test_a_sheet_keeps_the_searchers_pixel_cap(searcher, tmp_path, caplog):
    """The matches' pictures are decoded under the searcher's hard pixel cap (MEMEINDEX_HARD_MAX_PIXELS), which
    the cap's message tells people to raise: the sheet had decoded them under the default cap whatever was set."""
    from memeindex.search import Searcher
    from memeindex.settings import Settings

    grace = media.grace()
    result = searcher.search(grace, k=2)
    capped = Searcher(searcher.index_dir.path, Settings.from_env(hard_max_pixels=1000))
    try:
        with caplog.at_level("WARNING", logger="memeindex.sheet"):
            out = write_sheet(result, grace, capped, tmp_path / "sheet.png", cell=64)
    finally:
        capped.close()
    assert Image.open(out).format == "PNG"  # drawn, with placeholders for what the cap refused
    refused = [r.getMessage() for r in caplog.records if "1,000-pixel cap" in r.getMessage()]
    assert len(refused) == len(result.matches) == 2
