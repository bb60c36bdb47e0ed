"""Measure how far apart an embedder puts the same face in two copies of one picture, for near-duplicate grouping.

    .venv/bin/memeindex build ../shared/data/memes --index /tmp/memes-v2      # with MEMEINDEX_EMBEDDER=expression-v2
    .venv/bin/python scripts/fit_templates.py --index /tmp/memes-v1 --index /tmp/memes-v2 [--write]

Each --index is a built index of the same folder (the shared memes), one per embedder. Same-picture face pairs are
chosen without the embedding, so they are the same pairs for every model: faces of two different files whose
whole pictures hash within `templates.SAME_PICTURE_BITS` and whose 52 blendshapes (the face mesh, not the embedder)
are within 0.30. The root mean square of their embedding distances is the model's same-picture distance; `templates.py` scales its embedding limits by (model's / reference model's). With --write the figures
go into memeindex/templates.json under each model id (other models' entries are kept): commit that file.

Printed per index: the pairs and their distance quantiles, the scale, and the templates `assign` makes over the
index with the limits as written (the reference's scale, which is what every build did before) and with the
model's own scale; then how the indexes' groupings agree (files whose group differs between two of them).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAME_FACE_BLEND = 0.30


def tables(index: Path):
    from memeindex.generation import IndexDir

    gen = IndexDir(index).generation()
    images = gen.images(["path", "sha256", "phash", "status"])
    faces = gen.faces(["path", "sha256", "blendshapes", "embedding"])
    return gen.facts["model_id"], images, faces


def same_picture_distances(images, faces) -> np.ndarray:
    """Embedding distances of the same-picture face pairs (chosen by hash and blendshapes only)."""
    from memeindex.templates import SAME_PICTURE_BITS, _matrix, hash_distance

    phash = dict(zip(images.column("sha256").to_pylist(), images.column("phash").to_pylist()))
    shas = faces.column("sha256").to_pylist()
    shapes = _matrix(faces, "blendshapes")
    emb = _matrix(faces, "embedding")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    d_blend = np.linalg.norm(shapes[:, None, :] - shapes[None, :, :], axis=2)
    out = []
    for i, j in zip(*np.nonzero(np.triu(d_blend <= SAME_FACE_BLEND, 1))):
        a, b = phash.get(shas[i], ""), phash.get(shas[j], "")
        if shas[i] != shas[j] and len(a) == 16 and len(b) == 16 and hash_distance(a, b) <= SAME_PICTURE_BITS:
            out.append(float(np.linalg.norm(emb[i] - emb[j])))
    return np.array(out)


def groups_summary(groups: dict[str, str], images) -> str:
    ok = {p for p, st in zip(images.column("path").to_pylist(), images.column("status").to_pylist())
          if st != "failed"}
    sizes = Counter(t for p, t in groups.items() if p in ok)
    return (f"{sum(sizes.values())} files in {len(sizes)} templates, {sum(v > 1 for v in sizes.values())} "
            f"with 2-{max(sizes.values())} files")


def differing(a: dict[str, str], b: dict[str, str]) -> int:
    """Files whose set of fellow members differs between two groupings."""
    def members(g):
        by = {}
        for p, t in g.items():
            by.setdefault(t, set()).add(p)
        return {p: frozenset(by[t]) for p, t in g.items()}

    ma, mb = members(a), members(b)
    return sum(ma[p] != mb.get(p) for p in ma)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, action="append", required=True, help="a built index (repeatable)")
    parser.add_argument("--write", action="store_true", help="write the figures into memeindex/templates.json")
    args = parser.parse_args()
    from memeindex import templates

    measured, grouped = {}, {}
    for index in args.index:
        model_id, images, faces = tables(index)
        d = same_picture_distances(images, faces)
        q = np.quantile(d, [0.5, 0.9, 1.0])
        rms = float(np.sqrt(np.mean(d ** 2)))
        measured[model_id] = {"pairs": int(len(d)), "distance": round(rms, 4), "median": round(float(q[0]), 4),
                              "q90": round(float(q[1]), 4), "max": round(float(q[2]), 4)}
        print(f"{model_id} ({index}): {len(d)} same-picture face pairs; embedding distance RMS {rms:.4f}, "
              f"median {q[0]:.4f}, q90 {q[1]:.4f}, max {q[2]:.4f}")
        grouped[model_id] = (images, faces)
    ref = measured.get(templates.REFERENCE_MODEL)
    if args.write:
        from memeindex.atomicfile import replacing

        path = templates.SCALES_FILE
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        data["about"] = ("RMS embedding distance ('distance') of the same face in two copies of one picture, per "
                         "embedder (shared memes); templates.py scales its limits by it; "
                         "written by scripts/fit_templates.py")
        data.setdefault("models", {}).update(measured)
        with replacing(path) as tmp:  # an interrupted --write leaves the committed file whole
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")
        templates._measured.cache_clear()
        templates.embedding_scale.cache_clear()
    results = {}
    for model_id, (images, faces) in grouped.items():
        scale = (measured[model_id]["distance"] / ref["distance"]) if ref else templates.embedding_scale(model_id)
        as_written = templates.assign(images, faces, rules=templates.FACE_MATCH)
        own = templates.assign(images, faces, rules=tuple((b, bl, e * scale) for b, bl, e in templates.FACE_MATCH))
        results[model_id] = own
        print(f"{model_id}: scale {scale:.3f}; limits as written: {groups_summary(as_written, images)}; "
              f"scaled: {groups_summary(own, images)}")
    ids = list(results)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            print(f"{a} vs {b} (scaled): {differing(results[a], results[b])} files grouped differently")
    return 0


if __name__ == "__main__":
    sys.exit(main())
