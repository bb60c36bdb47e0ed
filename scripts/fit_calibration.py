"""Fit the calibrated score of one expression embedder: distance -> P(people call the two expressions the same).

    .venv/bin/python scripts/fit_calibration.py                      # the default embedder (expression-v1 now)
    .venv/bin/python scripts/fit_calibration.py --model expression-v2

Every face of `fer2013-publictest` (held out from training) goes through the product's detector and the model;
the images are split in two halves by a seeded shuffle. Pairs of faces within the first half fit a monotone
(isotonic) curve P(same | distance) whose target is 1 when the FER+ raters' majority labels of the two faces
agree, 0 otherwise; pairs within
the second half check it (Brier score, reliability per distance bin), and both are printed. The fitted curve is
written into memeindex/calibration.json under the model id (other models' entries are kept): commit that file.
Run it for every new embedder; `memeindex.calibrate` reads it, and a model missing there gets the fallback.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_DATASET = REPO.parent / "shared" / "data" / "expressions" / "fer2013-publictest"


def faces_of(dataset: Path, model: str | None):
    """(model_id, embeddings [n, dim], blendshapes [n, 52], labels [n], votes [n, k]) of the images with a face."""
    from tqdm import tqdm

    from memeindex.embedders import get_embedder
    from memeindex.evaluate import read_index
    from memeindex.faces import FaceDetector
    from memeindex.images import decode
    from memeindex.settings import Settings

    settings = Settings.from_env()
    rows, vote_names = read_index(dataset)
    embedder = get_embedder(settings, model)
    emb, shapes, labels, votes = [], [], [], []
    with FaceDetector(settings) as detector:
        for row in tqdm(rows, desc=f"faces of {dataset.name}", unit="img", file=sys.stderr):
            rgb = decode(dataset / row["path"], max_frames=1)[0].rgb
            faces = detector.detect(rgb)
            if not faces:
                continue
            emb.append(embedder.embed(rgb, faces[:1])[0])
            shapes.append(faces[0].blendshapes)
            labels.append(row["label"])
            votes.append([float(row.get(f"vote_{v}") or 0) for v in vote_names])
    close = getattr(embedder, "close", None)
    if close:
        close()
    return embedder.model_id, np.stack(emb), np.stack(shapes), np.array(labels), np.array(votes)


def pairs(idx: np.ndarray, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    a = idx[rng.integers(0, len(idx), n)]
    b = idx[rng.integers(0, len(idx), n)]
    keep = a != b
    return a[keep], b[keep]


def print_check(report: dict) -> None:
    print(f"  held-out Brier {report['brier']:.4f} (constant base rate {report['brier_base']:.4f}), "
          f"log loss {report['log_loss']:.4f}, base rate {report['base_rate']:.3f}")
    print("  distance bin     pairs   predicted  observed")
    for row in report["bins"]:
        print(f"  {row['lo']:.3f}-{row['hi']:.3f}  {row['n']:>8,}   {row['predicted']:.3f}      {row['observed']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="embedder name or model id (default: MEMEINDEX_EMBEDDER / auto)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--pairs", type=int, default=400_000, help="random pairs per half")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print the fit, write nothing")
    parser.add_argument("--check-only", action="store_true",
                        help="fit nothing: check the committed curve of the model on pairs of --dataset (labels only)")
    parser.add_argument("--traits", action="store_true", help="also print the trait levels (memeindex/traits.py)")
    parser.add_argument("--cache", type=Path, help="keep the faces' vectors in this .npz (re-runs skip detection)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from memeindex import calibrate

    if args.cache and args.cache.exists():
        z = np.load(args.cache, allow_pickle=False)
        model_id, emb, shapes, labels, votes = str(z["model_id"]), z["emb"], z["shapes"], z["labels"], z["votes"]
    else:
        model_id, emb, shapes, labels, votes = faces_of(args.dataset, args.model)
        if args.cache:
            np.savez(args.cache, model_id=model_id, emb=emb, shapes=shapes, labels=labels, votes=votes)
    rng = np.random.default_rng(args.seed)
    if args.check_only:
        a, b = pairs(np.arange(len(emb)), args.pairs, rng)
        curve = calibrate.curve_for(model_id)
        report = calibrate.check(curve, np.linalg.norm(emb[a] - emb[b], axis=1), (labels[a] == labels[b]) * 1.0)
        print(f"{model_id}: committed curve checked on {len(a):,} pairs of {len(emb)} faces of {args.dataset.name}")
        print_check(report)
        return 0
    order = rng.permutation(len(emb))
    halves = order[: len(order) // 2], order[len(order) // 2:]
    (fa, fb), (ca, cb) = (pairs(h, args.pairs, rng) for h in halves)

    def data(a, b):
        d = np.linalg.norm(emb[a] - emb[b], axis=1)
        return d, (labels[a] == labels[b]).astype(np.float64)

    fit_d, fit_y = data(fa, fb)
    check_d, check_y = data(ca, cb)
    curve = calibrate.fit_isotonic(fit_d, fit_y)
    report = calibrate.check(curve, check_d, check_y)
    print(f"{model_id}: {len(emb)} faces of {args.dataset.name}; fit on {len(fit_d):,} pairs of one half, "
          f"checked on {len(check_d):,} pairs of the other")
    print("  P(same) at distance " + ", ".join(f"{d:.2f}: {curve.score(d):.2f}"
                                             for d in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)))
    print_check(report)
    if args.traits:
        from memeindex.traits import measure_levels

        print("  trait levels (resting, strong) for memeindex/traits.py LEVELS:")
        for name, level in measure_levels(shapes).items():
            print(f"    {name!r}: {level},")
    if not args.dry_run:
        path = calibrate.save(model_id, curve, {"dataset": args.dataset.name, "faces": int(len(emb)),
                                                "fit_pairs": int(len(fit_d)), "check_pairs": int(len(check_d)),
                                                "brier": round(report["brier"], 4),
                                                "brier_base": round(report["brier_base"], 4)})
        print(f"wrote {path.relative_to(REPO)} [{model_id}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
