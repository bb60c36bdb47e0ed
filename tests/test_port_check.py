"""scripts/port_check.py's colour crops (issue 7's port check), on skimage's astronaut with a detector-like box at
the frame's top-left corner (the detector clips its boxes to the frame), so the 10 % margin leaves the frame: the
product's box10 fills that margin with the frame's edge replicated, the in-frame crop holds only the frame's own
pixels, and face-api.js's own crop pads the non-square in-frame box with black, centred."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "port_check.py"


def _port_check():
    spec = importlib.util.spec_from_file_location("port_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_crops_where_the_widened_box_leaves_the_frame():
    import cv2
    from skimage import data

    from memeindex.embedders.learned import COLOR_CROPS

    pc = _port_check()
    rgb = data.astronaut()
    box = (0.0, 0.0, 100.0, 200.0)  # widened 10 % per side: 10 px left of and 20 px above the frame
    product = COLOR_CROPS["box10"](rgb, box, None)
    inframe = pc.inframe_crop(rgb, box, None)
    faceapi = pc.faceapi_crop(rgb, box, None)
    assert product.shape == inframe.shape == faceapi.shape == (112, 112, 3)

    above = 112 * 20 // 240  # the product crop's rows that lie above the frame
    assert np.ptp(product[:above - 1].astype(int), axis=0).max() == 0  # one row (the frame's top), replicated
    assert np.ptp(inframe[:above - 1].astype(int), axis=0).max() > 30  # the frame's own rows
    # the in-frame crop is the widened box cut at the frame's edges (0..110 x 0..220), stretched
    expected = cv2.resize(np.ascontiguousarray(rgb[:220, :110]), (112, 112), interpolation=cv2.INTER_LINEAR)
    assert np.abs(inframe.astype(int) - expected).max() == 0

    # face-api.js's input: 110 x 220 px padded to 220 x 220, the face centred: black bands of 55/220 of the width
    band = 112 * 55 // 220
    assert faceapi[:, :band - 1].max() == 0 and faceapi[:, 112 - band + 1:].max() == 0
    middle = faceapi[:, band + 1:112 - band - 1]
    assert middle.mean() > 20 and (middle.max(axis=2) == 0).mean() < 0.05
