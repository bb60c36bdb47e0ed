#!/usr/bin/env python
"""Per-face CPU latency: the learned embedder (alignment + TFLite, one face a call) vs the face landmarker.

    python scripts/bench_embedding.py [--model models/expression-v1.tflite] [--runs 200]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _photos():
    import matplotlib
    from PIL import Image
    from skimage import data

    grace = np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
                       .convert("RGB"))
    return {"grace_hopper": grace, "astronaut": data.astronaut()}


def _time(fn, runs):
    fn()  # warm up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def main(argv=None):
    from memeindex.embedding import learned_model_files
    from memeindex.faces import FaceDetector
    from memeindex.learned import LearnedEmbedder
    from memeindex.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    path = args.model or learned_model_files(settings.models_dir)[-1]
    embedder = LearnedEmbedder(path)
    print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB")
    with FaceDetector(settings) as det:
        for name, rgb in _photos().items():
            faces = det.detect(rgb)
            box, score = faces[0].box, faces[0].score
            t_embed = _time(lambda: embedder.embed(rgb, faces[:1]), args.runs)
            t_land = _time(lambda: det._describe(rgb, box, score), max(20, args.runs // 4))
            print(f"{name}: learned embedding {t_embed:.2f} ms/face (align + tflite), "
                  f"landmarker {t_land:.2f} ms/face, ratio {t_land / t_embed:.1f}x")


if __name__ == "__main__":
    main()
