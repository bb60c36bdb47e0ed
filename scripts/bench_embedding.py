#!/usr/bin/env python
"""Per-face CPU latency: each learned embedder (crops + TFLite, one face a call) vs the face landmarker.

    python scripts/bench_embedding.py [--model expression-v2 ...] [--runs 200]
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


def _landmarker_nets(settings):
    """A callable running the face landmarker's own networks once (mesh, then blendshapes), read from the
    pinned face_landmarker.task bundle, one thread each, as for one face."""
    import zipfile

    from ai_edge_litert.interpreter import Interpreter

    from memeindex.models import FACE_LANDMARKER, model_path

    nets = []
    with zipfile.ZipFile(model_path(FACE_LANDMARKER, settings.models_dir)) as bundle:
        for name in ("face_landmarks_detector.tflite", "face_blendshapes.tflite"):
            net = Interpreter(model_content=bundle.read(name), num_threads=1)
            net.allocate_tensors()
            for d in net.get_input_details():
                net.set_tensor(d["index"], np.random.default_rng(0).random(d["shape"]).astype(d["dtype"]))
            nets.append(net)

    def run():
        for net in nets:
            net.invoke()

    return run


def main(argv=None):
    from memeindex.embedders.registry import LEARNED_MODELS, get_embedder
    from memeindex.faces import FaceDetector
    from memeindex.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None,
                    help="learned model id (repeatable; default: every committed one)")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    embedders = [get_embedder(settings, m) for m in (args.model or sorted(LEARNED_MODELS))]
    for e in embedders:
        print(f"{e.model_id}: {e.path.name} {e.path.stat().st_size / 1e6:.2f} MB, {e.dim}-d")
    t_land = _time(_landmarker_nets(settings), args.runs)
    with FaceDetector(settings) as det:
        for name, rgb in _photos().items():
            faces = det.detect(rgb)
            t_detect = _time(lambda: det.detect(rgb), max(20, args.runs // 4))
            print(f"{name}: FaceDetector.detect {t_detect:.2f} ms for its one face; face landmarker alone "
                  f"(mesh + blendshape nets, 1 thread) {t_land:.2f} ms/face")
            for e in embedders:
                t_embed = _time(lambda: e.embed(rgb, faces[:1]), args.runs)
                print(f"  {e.model_id}: {t_embed:.2f} ms/face (crops + tflite, batch of one) = landmarker / "
                      f"{t_land / t_embed:.1f}")


if __name__ == "__main__":
    main()
