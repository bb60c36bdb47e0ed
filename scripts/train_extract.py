#!/usr/bin/env python
"""Extract, once, what the expression model trains on: per image the landmark-aligned crop and the blendshapes.

Runs the product's own FaceDetector (one per worker process; it is not picklable) on every image of an
index.csv, keeps the largest face, and caches into one .npz:

    found [n] bool, crop [n, 64, 64] uint8 (memeindex.embedders.learned.face_inputs at zoom 64/48: the model's 48 px crop
    is its centre, the rest is room for jitter), shapes [n, 52] float32, matrix [n, 2, 3] (frame -> crop),
    raw [n, 48, 48] uint8 (FER only: the original pixels, the fallback for faces the detector misses).

    python scripts/train_extract.py /work/shared/data/expressions/fer2013 .cache/train/fer2013.npz
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memeindex.embedders.learned import CROP, alignment_matrix, face_inputs  # noqa: E402

CACHE_SIDE = 64
ZOOM = CACHE_SIDE / CROP

_detector = None


def _init():
    global _detector
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.disable(logging.WARNING)
    from memeindex.faces import FaceDetector
    from memeindex.settings import Settings

    _detector = FaceDetector(Settings.from_env(workers=1))


def _one(path: str):
    from memeindex.images import decode
    from memeindex.embedders.learned import to_gray

    raw = None
    try:
        rgb = decode(path)[0].rgb
    except Exception:  # noqa: BLE001 - an unreadable file is just "not found"
        return False, None, None, None, None
    if rgb.shape[0] == 48 and rgb.shape[1] == 48:
        raw = to_gray(rgb)
    faces = _detector.detect(rgb)
    if not faces:
        return False, None, None, None, raw
    face = faces[0]
    crops, shapes = face_inputs(rgb, [face], CACHE_SIDE, ZOOM)
    return True, crops[0], shapes[0], alignment_matrix(face.landmarks, CACHE_SIDE, ZOOM), raw


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="folder with index.csv (path column relative to it)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--usage", default=None, help="keep rows whose usage column is this (comma-separated)")
    args = ap.parse_args(argv)

    with open(args.dataset / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if args.usage:
        keep = set(args.usage.split(","))
        rows = [r for r in rows if r.get("usage") in keep]
    paths = [str(args.dataset / r["path"]) for r in rows]
    n = len(paths)
    found = np.zeros(n, bool)
    crop = np.zeros((n, CACHE_SIDE, CACHE_SIDE), np.uint8)
    shapes = np.zeros((n, 52), np.float32)
    matrix = np.zeros((n, 2, 3), np.float32)
    raw = np.zeros((n, 48, 48), np.uint8)
    t0 = time.time()
    with get_context("spawn").Pool(args.workers, initializer=_init) as pool:
        for i, (ok, c, s, m, r) in enumerate(pool.imap(_one, paths, chunksize=64)):
            if r is not None:
                raw[i] = r
            if ok:
                found[i], crop[i], shapes[i], matrix[i] = True, c, s, m
            if (i + 1) % 2000 == 0:
                print(f"{i + 1}/{n} found {found[:i + 1].mean():.3f} {time.time() - t0:.0f}s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, path=np.array([r["path"] for r in rows]), found=found, crop=crop,
                        shapes=shapes, matrix=matrix, raw=raw)
    print(f"done {n} images, faces found {found.mean():.3f}, {time.time() - t0:.0f}s -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
