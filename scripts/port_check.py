#!/usr/bin/env python
"""Issue 7's port check and untrained floor on the current detector (models/README.md, "Port check").

Prints P@3 on fer2013-publictest / muxspace / ckplus48 (FER: also the triplet accuracy) of

* face-api.js's 256-d feature alone (the Keras port, `memeindex.train.model.faceapi_net`, run as float32 LiteRT by
  `train.loop.FaceApiRunner`), L2-normalised, no mirror: the issue quotes 0.697 / 0.558 / 0.923;
* the issue's floor: v1's 64-d ++ that feature (each unit length), centred PCA-64 fitted on unlabelled faces (the
  FER-2013 Training fit part of `make train`'s split + muxspace's faces; no label read), renormalised: the issue
  quotes 0.773 / 0.623 / 0.919,

for each colour crop asked for (`--crops`):

* `box10`: the product's (`learned.COLOR_CROPS["box10"]`): the detector's box (clipped to the frame) widened 10 %
  per side and stretched to 112 x 112; where the widened box leaves the frame the border pixels are replicated;
* `inframe10`: the same widened box clipped to the frame first, cut out with array slicing and resized
  (cv2.resize, bilinear): only the frame's own pixels, no replicated border;
* `faceapi10`: face-api.js's own input: the widened box clipped to the frame (extractFaces), padded with black to
  a square, centred (NetInput.toBatchTensor(112, true)), resized bilinearly.

These are evaluation-set figures: a check of the port and of the floor, never a selection (issue 7, Deliver 2).
Faces: the product's detector and crop code through `memeindex.train.data.extract`, cached in the training cache
(`make train`'s FER fit and muxspace caches are reused; the evaluation sets get `eval-SET` caches). Runs from the
training venv (TensorFlow converts the port once):

    .venv-train/bin/python scripts/port_check.py [--crops box10 inframe10 faceapi10] [--json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EVAL_SETS = ("fer2013-publictest", "muxspace", "ckplus48")
ISSUE = {"alone": (0.697, 0.558, 0.923), "floor": (0.773, 0.623, 0.919)}  # issue 7's figures, in EVAL_SETS order
FLOOR_DIM = 64


def _widened_in_frame(box, shape, margin: float) -> tuple[float, float, float, float]:
    """The box widened by `margin` of its side per side, then clipped to the frame (h, w)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    return max(0.0, x0 - dx), max(0.0, y0 - dy), min(float(shape[1]), x1 + dx), min(float(shape[0]), y1 + dy)


def inframe_crop(rgb: np.ndarray, box, landmarks, margin: float = 0.10) -> np.ndarray:
    """The widened box clipped to the frame, cut out with array slicing (bounds rounded) and resized bilinearly
    (cv2.resize) to FACE_SIDE: only the frame's own pixels, no replicated border."""
    import cv2

    from memeindex.embedders.learned import FACE_SIDE, _rgb

    x0, y0, x1, y1 = (int(round(v)) for v in _widened_in_frame(box, rgb.shape, margin))
    face = np.ascontiguousarray(_rgb(rgb)[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)])
    return cv2.resize(face, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_LINEAR)


def faceapi_crop(rgb: np.ndarray, box, landmarks, margin: float = 0.10) -> np.ndarray:
    """face-api.js's own input: the widened box floored and clipped at the image borders, padded with zeros to a
    centred square, resized bilinearly to FACE_SIDE."""
    import cv2

    from memeindex.embedders.learned import FACE_SIDE, _rgb

    x0, y0, x1, y1 = (int(np.floor(v)) for v in _widened_in_frame(box, rgb.shape, margin))
    face = _rgb(rgb)[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    h, w = face.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side, 3), np.uint8)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = face
    return cv2.resize(square, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_LINEAR)


def crops() -> dict:
    from memeindex.embedders.learned import COLOR_CROPS

    return {"box10": COLOR_CROPS["box10"], "inframe10": inframe_crop, "faceapi10": faceapi_crop}


def l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def eval_labels(folder: Path, image: np.ndarray):
    """(labels, subjects, triplets or None) of the faces found, as `memeindex eval` reads the set."""
    from memeindex.evaluate import read_index
    from memeindex.metrics import sample_triplets

    rows, vote_names = read_index(folder)
    labels = [rows[i]["label"] for i in image]
    subjects = [rows[i].get("subject", "") for i in image]
    if not vote_names:
        return labels, subjects, None
    votes = np.array([[float(rows[i].get(f"vote_{v}") or 0) for v in vote_names] for i in image])
    return labels, subjects, sample_triplets(votes, subjects)


def figures(emb: np.ndarray, labels, subjects, triplets) -> dict:
    from memeindex.metrics import retrieval_metrics, triplet_accuracy

    out = {"P@3": retrieval_metrics(emb, labels, subjects)["P@3"]}
    if triplets is not None:
        out["triplet"] = triplet_accuracy(emb, *triplets)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", nargs="+", default=["box10", "inframe10", "faceapi10"], choices=list(crops()))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    from memeindex.embedders.learned import LearnedEmbedder
    from memeindex.embedders.registry import LEARNED_MODELS
    from memeindex.faces import detector_id
    from memeindex.settings import Settings
    from memeindex.train import data as D
    from memeindex.train import loop as L
    from memeindex.train import model as M

    settings = Settings.from_env()
    config = L.V2Config(workers=args.workers, threads=args.threads)
    expressions = config.data / "expressions"
    # the unlabelled faces of `make train`'s read-out fit (same names and keys: its caches are reused)
    split = D.fer_training_split(expressions, config.seed, config.n_val, config.n_fit)
    faces = {"fer-fit": D.extract("fer-fit", [expressions / "fer2013" / r["path"] for r in split.fit],
                                  config.cache, settings, config.workers)}
    _, mux_paths = D.labelled_set(expressions / "muxspace")
    faces["muxspace"] = D.extract("muxspace", mux_paths, config.cache, settings, config.workers)
    for name in EVAL_SETS:
        if name != "muxspace":
            faces[name] = D.extract(f"eval-{name}", D.labelled_set(expressions / name)[1], config.cache, settings,
                                    config.workers)
    labels = {name: eval_labels(expressions / name, faces[name]["image"]) for name in EVAL_SETS}

    v1_model = LEARNED_MODELS["expression-v1"]
    v1 = LearnedEmbedder(v1_model.verified_path(), model_id=v1_model.model_id, num_threads=args.threads)
    v1_emb = {name: v1.embed_inputs(f["gray48"], f["shapes"]) for name, f in faces.items()}
    runner = L.FaceApiRunner(M.faceapi_net(M.read_faceapi_weights(config.faceapi)), args.threads)

    report = {"detector": detector_id(settings), "faces": {n: int(len(f["image"])) for n, f in faces.items()},
              "issue": ISSUE, "crops": {}}
    for crop in args.crops:
        feature = {name: l2(runner(D.color_crops(f, crops()[crop], settings))[0]) for name, f in faces.items()}
        joined = {name: np.concatenate([v1_emb[name], feature[name]], axis=1) for name in faces}
        mean, bases = L.pca(np.concatenate([joined["fer-fit"], joined["muxspace"]]), (FLOOR_DIM,))
        basis = bases[FLOOR_DIM][0]
        report["crops"][crop] = {
            "alone": {n: figures(feature[n], *labels[n]) for n in EVAL_SETS},
            "floor": {n: figures(l2((joined[n] - mean) @ basis), *labels[n]) for n in EVAL_SETS}}
        logging.info("%s done", crop)
    report["v1"] = {n: figures(v1_emb[n], *labels[n]) for n in EVAL_SETS}

    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"detector {report['detector']}; faces {report['faces']}; P@3 on {' / '.join(EVAL_SETS)}")
    print(f"{'':24}{'face-api alone':>26}{'floor (PCA-64)':>26}  floor FER triplet")
    print(f"{'issue 7':24}{' / '.join(f'{v:.3f}' for v in ISSUE['alone']):>26}"
          f"{' / '.join(f'{v:.3f}' for v in ISSUE['floor']):>26}")
    for crop, r in report["crops"].items():
        alone = " / ".join(f"{r['alone'][n]['P@3']:.3f}" for n in EVAL_SETS)
        floor = " / ".join(f"{r['floor'][n]['P@3']:.3f}" for n in EVAL_SETS)
        print(f"{crop:24}{alone:>26}{floor:>26}  {r['floor']['fer2013-publictest']['triplet']:.3f}")
    v1_line = " / ".join(f"{report['v1'][n]['P@3']:.3f}" for n in EVAL_SETS)
    print(f"{'expression-v1 alone':24}{v1_line:>26}")


if __name__ == "__main__":
    main()
