"""Meme-condition augmentation of the cached aligned gray crops (the expression-v1 recipe)."""
from __future__ import annotations

import numpy as np

from ..embedders.base import MIRRORED_BLENDSHAPES
from ..embedders.learned import CROP

CACHE_SIDE = 64  # the v1 cache's aligned crops: the 48 px model crop at their centre, the rest room for jitter
FLIP_PERM = MIRRORED_BLENDSHAPES


def center_crop(crops: np.ndarray) -> np.ndarray:
    o = (CACHE_SIDE - CROP) // 2
    return crops[:, o:o + CROP, o:o + CROP]


def augment(crops: np.ndarray, shapes: np.ndarray, rng: np.random.Generator):
    """Meme-condition augmentation of cached 64 px aligned crops -> 48 px model crops (+ matching blendshapes)."""
    import cv2

    n = len(crops)
    out = np.empty((n, CROP, CROP), np.uint8)
    shapes = shapes.copy()
    flip = rng.random(n) < 0.5
    shapes[flip] = shapes[flip][:, FLIP_PERM]
    c = CACHE_SIDE / 2
    for i in range(n):
        img = crops[i]
        if flip[i]:
            img = img[:, ::-1]
        s = np.exp(rng.uniform(np.log(0.88), np.log(1.14)))  # >1 zooms in
        ang = rng.normal(0, 6)
        tx, ty = rng.normal(0, 1.6, 2)
        m = cv2.getRotationMatrix2D((c, c), ang, s)
        m[:, 2] += (CROP / 2 - c) + np.array([tx, ty])
        im = cv2.warpAffine(np.ascontiguousarray(img), m, (CROP, CROP), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        r = rng.random(6)
        if r[0] < 0.2:  # low resolution: a small face in a meme
            f = rng.uniform(0.35, 0.7)
            small = cv2.resize(im, (max(8, int(CROP * f)),) * 2, interpolation=cv2.INTER_AREA)
            im = cv2.resize(small, (CROP, CROP), interpolation=cv2.INTER_LINEAR)
        if r[1] < 0.2:
            im = cv2.GaussianBlur(im, (0, 0), rng.uniform(0.4, 1.3))
        imf = im.astype(np.float32)
        if r[2] < 0.8:  # contrast, brightness, gamma (a colour shift is a gray-level shift after the gray step)
            imf = (imf - imf.mean()) * rng.uniform(0.6, 1.4) + imf.mean() + rng.normal(0, 18)
            imf = np.clip(imf, 0, 255)
            imf = 255.0 * (imf / 255.0) ** np.exp(rng.normal(0, 0.25))
        if r[3] < 0.15:
            imf = imf + rng.normal(0, rng.uniform(2, 8), imf.shape)
        im = np.clip(imf, 0, 255).astype(np.uint8)
        if r[4] < 0.25:  # JPEG artefacts
            ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(15, 60))])
            if ok:
                im = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        if r[5] < 0.25:  # partial occlusion: a caption bar or block of text over part of the face
            im = im.copy()
            h = int(rng.uniform(0.12, 0.3) * CROP)
            if rng.random() < 0.6:  # a horizontal caption band at the top or bottom
                y0 = int(rng.uniform(0, 0.15) * CROP) if rng.random() < 0.5 else CROP - h - int(rng.uniform(0, 0.1) * CROP)
                x0, x1 = 0, CROP
            else:  # a block somewhere
                y0 = int(rng.uniform(0, CROP - h))
                w = int(rng.uniform(0.2, 0.5) * CROP)
                x0 = int(rng.uniform(0, CROP - w))
                x1 = x0 + w
            fg, bg = (255, 0) if rng.random() < 0.5 else (0, 255)
            im[y0:y0 + h, x0:x1] = bg
            for _ in range(rng.integers(2, 7)):  # letter-like strokes
                yy = y0 + int(rng.uniform(0.2, 0.8) * h)
                xa = int(rng.uniform(x0, x1))
                cv2.line(im, (xa, yy - h // 4), (min(x1 - 1, xa + int(rng.uniform(2, 8))), yy + h // 4), fg, 1)
        out[i] = im
    shapes = shapes + rng.normal(0, 0.02, shapes.shape).astype(np.float32)  # landmarker jitter
    return out, np.clip(shapes, 0, 1)
