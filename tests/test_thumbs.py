"""Thumbnails go through the one decoder: what the build analysed is what the page shows."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from memeindex.server.thumbs import ThumbnailCache, render
from memeindex.settings import Settings


def test_16_bit_png_thumbnail_keeps_its_contrast(tmp_path, grace_rgb):
    deep = np.asarray(Image.fromarray(grace_rgb).convert("L")).astype(np.uint16) * 257
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    assert Image.open(path).mode.startswith("I;16")
    thumb = np.asarray(Image.open(io.BytesIO(render(path, 128, Settings().hard_max_pixels))).convert("L"), float)
    assert max(thumb.shape) == 128
    assert 20 < thumb.mean() < 235 and thumb.std() > 20  # a thumbnail of its own decoder was white


def test_thumbnail_is_upright_and_fitted(tmp_path, grace_rgb):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    Image.fromarray(grace_rgb).rotate(90, expand=True).save(path, exif=exif, quality=95)
    thumb = Image.open(io.BytesIO(ThumbnailCache(Settings().thumb_cache_bytes, Settings().hard_max_pixels).get(path, 100)))
    assert thumb.size == (85, 100)  # 512 x 600 upright, fitted into 100 x 100


def test_heic_thumbnail(tmp_path, grace_rgb):
    pillow_heif = pytest.importorskip("pillow_heif")
    path = tmp_path / "phone.heic"
    pillow_heif.from_pillow(Image.fromarray(grace_rgb)).save(path, quality=90)
    thumb = np.asarray(Image.open(io.BytesIO(render(path, 64, Settings().hard_max_pixels))))
    assert max(thumb.shape[:2]) == 64 and thumb.std() > 20
