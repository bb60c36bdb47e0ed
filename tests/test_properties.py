"""Property-based tests (hypothesis): arbitrary bytes through the one decoder, arbitrary file names through a
real build. Example counts are bounded so the whole file stays in seconds; run with
`pytest tests/test_properties.py --hypothesis-show-statistics` to see them."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from memeindex.errors import ImageTooLarge, NotAnImage  # noqa: E402
from memeindex.images import decode  # noqa: E402

# CI replays the same examples every run (a red CI names a real regression, not a lucky draw); a developer's run
# explores new ones.
CI = bool(os.environ.get("CI"))
QUICK = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=CI)


def _encode(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


SEEDS = [_encode(Image.new("RGB", (24, 16), (200, 30, 60)), fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")]


@st.composite
def damaged_images(draw) -> bytes:
    """A small valid image of some format, then truncated, with bytes flipped, or with junk spliced in."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=64))
    return bytes(data)


def _check_frames(frames, max_pixels):
    assert frames
    for f in frames:
        assert f.rgb.dtype == np.uint8 and f.rgb.ndim == 3 and f.rgb.shape[2] == 3 and f.rgb.flags.c_contiguous
        assert 0 < f.rgb.shape[0] * f.rgb.shape[1] <= max_pixels and 0 < f.scale <= 1.0


@QUICK
@given(st.one_of(st.binary(max_size=2048), damaged_images()))
def test_decode_of_any_bytes_returns_rgb_frames_or_a_typed_error(data):
    try:
        frames = decode(data, max_pixels=100_000, hard_max_pixels=10_000_000)
    except (NotAnImage, ImageTooLarge):
        return
    _check_frames(frames, 100_000)


FORMATS = {"PNG": {"1", "L", "P", "RGB", "RGBA", "LA", "I;16"}, "TIFF": {"1", "L", "RGB", "RGBA", "CMYK", "I", "F"},
           "JPEG": {"L", "RGB", "CMYK"}, "GIF": {"L", "P"}, "WEBP": {"RGB", "RGBA"}, "BMP": {"1", "L", "P", "RGB"}}
MODE_FORMAT = sorted((mode, fmt) for fmt, modes in FORMATS.items() for mode in modes)


@QUICK
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.just(3))),
       st.sampled_from(MODE_FORMAT), st.integers(1, 2000))
def test_any_small_picture_in_any_mode_and_format_decodes_to_its_size(rgb, mode_format, max_pixels):
    mode, fmt = mode_format
    data = _encode(Image.fromarray(rgb).convert(mode), fmt)
    frames = decode(data, max_pixels=max_pixels)
    _check_frames(frames, max_pixels)
    h, w = rgb.shape[:2]
    got_h, got_w = frames[0].rgb.shape[:2]
    if h * w <= max_pixels:
        assert (got_h, got_w) == (h, w) and frames[0].scale == 1.0
    elif min(got_h, got_w) > 1:  # shrunk to the cap, the aspect ratio kept (to the rounding of two steps)
        assert abs(got_w / got_h - w / h) <= (w / h) * 2 * (1 / got_h + 1 / got_w) + 1e-9


# -- file names through a real build ------------------------------------------------------------------------
NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0")
names = st.one_of(
    st.text(NAME_CHARS, min_size=1, max_size=40),
    st.binary(min_size=1, max_size=40).map(lambda b: os.fsdecode(b.replace(b"/", b"_").replace(b"\0", b"_"))),
).filter(lambda n: n not in (".", "..") and not n.startswith(".") and len(os.fsencode(n)) <= 200)


@pytest.fixture(scope="module")
def face_jpeg(grace_rgb) -> bytes:
    return _encode(Image.fromarray(grace_rgb[::2, ::2]), "JPEG")


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=CI)
@given(st.lists(names, min_size=3, max_size=8, unique_by=lambda n: os.fsencode(n).lower()))
def test_build_accounts_for_every_file_whatever_its_name(tmp_path_factory, face_jpeg, file_names):
    from memeindex.cli import main
    from click.testing import CliRunner
    import json

    root = tmp_path_factory.mktemp("names")
    for i, name in enumerate(file_names):
        # every third file is not an image: it must be counted too, never crash the build
        (root / name).write_bytes(face_jpeg if i % 3 != 2 else b"not a picture " + os.fsencode(name))
    index = tmp_path_factory.mktemp("index")
    result = CliRunner().invoke(main, ["build", str(root), "--index", str(index), "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    n_images = sum(1 for i in range(len(file_names)) if i % 3 != 2)
    assert summary["indexed"] + summary["skipped"] + summary["ignored"] == len(file_names), summary
    assert summary["images"] >= n_images and summary["faces"] >= n_images, summary
    checked = CliRunner().invoke(main, ["check", "--index", str(index)])
    assert checked.exit_code == 0, checked.output
