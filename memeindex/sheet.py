"""Contact sheets: the query with its face boxed, then the top-k memes with the matched face outlined and, under
each, the score (calibrated P(same expression)), the traits both faces share and the variants.
`memeindex query face.jpg --sheet out.png`."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .atomicfile import replacing
from .errors import FileMissing, MemeIndexError, SheetFormatUnknown
from .images import frames
from .settings import Settings

log = logging.getLogger(__name__)

QUERY_COLOUR, MATCH_COLOUR, WEAK_COLOUR, OTHER_COLOUR = (39, 174, 96), (255, 140, 0), (150, 150, 160), (190, 190, 190)
PAD, CAPTION, COLUMNS = 14, 96, 6
# What a contact sheet is saved as, by the out path's suffix: the one list the CLI checks --sheet against.
SHEET_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def sheet_format(out_path: str | Path) -> str:
    """The Pillow format a sheet at `out_path` is written in (by its suffix). Raises SheetFormatUnknown."""
    fmt = SHEET_FORMATS.get(Path(out_path).suffix.lower())
    if fmt is None:
        raise SheetFormatUnknown(f"{Path(out_path).name}: a contact sheet is saved as {', '.join(SHEET_FORMATS)}")
    return fmt


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def _picture(source, frame: int, hard_max_pixels: int):
    """(PIL RGB image, scale from file pixels to its pixels) of a path, bytes or RGB array; None if unreadable."""
    from PIL import Image

    if source is None:
        return None
    if isinstance(source, np.ndarray):
        return Image.fromarray(np.ascontiguousarray(source[..., :3], dtype=np.uint8)), 1.0
    try:
        # the frame the face is in (the first when there is none such)
        chosen = next(frames(source, hard_max_pixels=hard_max_pixels, only=frame))
    except FileMissing as exc:  # its message names the file
        log.warning("contact sheet: cannot read %s", exc)
        return None
    except (MemeIndexError, OSError) as exc:
        log.warning("contact sheet: cannot read %s: %s", source if not isinstance(source, bytes) else "bytes", exc)
        return None
    return Image.fromarray(chosen.rgb), chosen.scale


def _fit(draw_on, picture, cell: int, x: int, y: int, boxes):
    """Paste `picture` (image, scale) fitted into the cell at x, y and outline each (box, colour, width)."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(draw_on)
    if picture is None:
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(235, 235, 238))
        draw.text((x + cell // 2, y + cell // 2), "file missing", fill=(120, 120, 130), font=_font(16), anchor="mm")
        return
    img, scale = picture
    f = min(cell / img.width, cell / img.height)
    shown = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.LANCZOS)
    ox, oy = x + (cell - shown.width) // 2, y + (cell - shown.height) // 2
    draw_on.paste(shown, (ox, oy))
    for box, colour, width in boxes:
        x0, y0, x1, y1 = (v * scale * f for v in box)
        draw.rectangle((ox + x0, oy + y0, ox + x1, oy + y1), outline=colour, width=width)


def _caption(draw, x: int, y: int, cell: int, lines):
    for n, (text, colour, size) in enumerate(lines):
        font = _font(size)
        while text and draw.textlength(text, font=font) > cell:
            text = text[:-2] + "…"
        draw.text((x, y + 6 + n * 22), text, fill=colour, font=font)


def write_sheet(result, source, searcher_or_root, out_path: str | Path, *, cell: int = 256) -> Path:
    """Draw `result` (a search.QueryResult for `source`: path, bytes or RGB array) as one picture at out_path.

    `searcher_or_root` finds the meme files: a Searcher (by meme id; its settings' pixel cap applies) or the indexed
    root folder (by path; the default cap).
    The format follows out_path's suffix (SHEET_FORMATS; another raises SheetFormatUnknown before any drawing).
    Returns out_path.
    """
    from PIL import Image, ImageDraw

    from .cli import format_traits, format_variant_count  # the words people read have one owner

    out_path = Path(out_path)
    fmt = sheet_format(out_path)  # the temp file's name cannot tell Pillow
    count = 1 + len(result.matches)
    columns = min(count, COLUMNS)
    rows = -(-count // columns)
    sheet = Image.new("RGB", (PAD + columns * (cell + PAD), PAD + rows * (cell + CAPTION + PAD)), "white")
    draw = ImageDraw.Draw(sheet)

    def origin(n):
        return PAD + (n % columns) * (cell + PAD), PAD + (n // columns) * (cell + CAPTION + PAD)

    face = result.query_face
    settings = getattr(searcher_or_root, "settings", None)
    cap = settings.hard_max_pixels if settings is not None else Settings.hard_max_pixels
    others = [(f.box, OTHER_COLOUR, 2) for i, f in enumerate(result.faces) if i != result.face_index]
    x, y = origin(0)
    _fit(sheet, _picture(source, face.frame, cap), cell, x, y, others + [(face.box, QUERY_COLOUR, 4)])
    note = f"face {result.face_index + 1} of {len(result.faces)}" if len(result.faces) > 1 else "your face"
    _caption(draw, x, y + cell, cell, [("query", QUERY_COLOUR, 18), (note, (90, 90, 100), 15)])

    for n, m in enumerate(result.matches, 1):
        x, y = origin(n)
        colour = WEAK_COLOUR if m.weak else MATCH_COLOUR
        _fit(sheet, _picture(_meme_path(searcher_or_root, m), m.frame, cap), cell, x, y, [(m.box, colour, 4)])
        detail = f"score {m.score * 100:.0f}%" + (" (weak)" if m.weak else "") + f"  distance {m.distance:.3f}"
        shared = format_traits(m.traits) or "no strong trait in common"
        lines = [(f"{n}. {m.name}", (30, 30, 36), 18), (detail, colour, 15), (shared, (70, 70, 80), 15)]
        if m.variants:
            lines.append((f"{format_variant_count(m.variants_total)}: "
                          + ", ".join(v.path.rsplit("/", 1)[-1] for v in m.variants), (120, 120, 130), 13))
        _caption(draw, x, y + cell, cell, lines)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out_path) as tmp:  # a killed query leaves the old sheet or none, never half of one
        (sheet.convert("RGB") if fmt == "JPEG" else sheet).save(tmp, fmt)
    log.info("wrote contact sheet %s (%d matches)", out_path, len(result.matches))
    return out_path


def _meme_path(searcher_or_root, match) -> Path | None:
    if hasattr(searcher_or_root, "image_file"):
        try:
            return Path(searcher_or_root.image_file(match.id))
        except KeyError:
            return None
    return Path(searcher_or_root) / match.path
