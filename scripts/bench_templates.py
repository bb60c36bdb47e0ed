#!/usr/bin/env python
"""Near-duplicate grouping at scale: `templates.assign` over synthetic tables with planted near-duplicates.

    .venv/bin/python scripts/bench_templates.py --files N [--search auto|exact|approximate] [--no-dhash] [--json]

`assign` runs at every publish over the whole generation, so its cost is paid by every incremental build. The
tables look like a real generation's to `assign`: a tenth of the files belong to planted templates of 2-4 files
(the same picture resized or recompressed: its perceptual hash with up to 8 bits flipped, its faces' embeddings
moved by 0.02-0.12 and blendshapes by up to 0.25, all within `FACE_MATCH`'s first rule), a tenth of the
pictures hold no face (their copies are found by the hashes alone: a copy's difference hash has up to 6 bits
flipped too), the rest are files of their own with 1-3 faces drawn around 2,000 expression centres. Hashes of
different pictures are random 64-bit words, so the hash joins of unrelated faceless pictures counted here are the
chance ones; `--no-dhash` drops the dhash column (an index written before it: the pHash alone decides).

Reported: grouping wall time (`templates.template_ids`, what a build's publish runs), peak RSS (VmHWM) of the
process, its RSS before grouping (the synthetic tables) and the difference (`grouping_mb`: what grouping adds at its
peak), the planted templates recovered whole (`recall`: every copy in its original's template) and files wrongly
joined to another template (`false_joins`),
and which face-pair search ran (`auto`: exact up to `templates.EXACT_PAIRS_MAX` faces, approximate above; `exact` or
`approximate` force one). A benchmark, not a test: it prints figures and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchkit import expression_vectors, reset_peak_rss, status_mb  # noqa: E402 (scripts/ is on sys.path when run)

MODEL = "expression-v1"  # the reference model: FACE_MATCH's limits as written
DIM = 64


def synthetic(n_files: int, seed: int = 0):
    """(images, faces, truth): pyarrow tables with the columns `assign` reads, and each file's planted group."""
    import pyarrow as pa

    from memeindex import generation as gen

    rng = np.random.default_rng(seed)
    sizes = np.where(rng.random(n_files) < 0.1 / 3, rng.integers(2, 5, n_files), 1)  # ~10 % of files in groups
    sizes = sizes[np.cumsum(sizes) <= n_files]
    sizes = np.append(sizes, np.ones(n_files - sizes.sum(), np.int64))
    group = np.repeat(np.arange(len(sizes)), sizes)
    first = np.r_[True, group[1:] != group[:-1]]
    n_groups = len(sizes)
    base_hash = rng.integers(0, np.iinfo(np.uint64).max, n_groups, dtype=np.uint64, endpoint=True)
    flips = np.zeros(n_files, np.uint64)
    for bits in range(8):  # up to 8 bits flipped in a copy (the original keeps its own)
        on = (~first) & (rng.random(n_files) < 0.5)
        flips |= np.where(on, np.uint64(1) << rng.integers(0, 64, n_files).astype(np.uint64), np.uint64(0))
    hashes = base_hash[group] ^ flips
    drng = np.random.default_rng(seed + 1)  # its own stream: the files and faces are those drawn before it existed
    base_dhash = drng.integers(0, np.iinfo(np.uint64).max, n_groups, dtype=np.uint64, endpoint=True)
    dflips = np.zeros(n_files, np.uint64)
    for bits in range(6):  # up to 6 bits of the difference hash flipped in a copy
        on = (~first) & (drng.random(n_files) < 0.5)
        dflips |= np.where(on, np.uint64(1) << drng.integers(0, 64, n_files).astype(np.uint64), np.uint64(0))
    dhashes = base_dhash[group] ^ dflips
    n_faces_of_group = np.where(rng.random(n_groups) < 0.1, 0, rng.integers(1, 4, n_groups))
    counts = n_faces_of_group[group]

    base_emb = expression_vectors(rng, (n_groups, 3), DIM)
    base_shapes = rng.random((n_groups, 3, gen.N_BLENDSHAPES), dtype=np.float32)

    file_of_face = np.repeat(np.arange(n_files), counts)
    face_no = np.concatenate([np.arange(c) for c in counts if c]).astype(np.int64)
    g = group[file_of_face]
    emb = base_emb[g, face_no].copy()
    shapes = base_shapes[g, face_no].copy()
    copy = ~first[file_of_face]
    noise = rng.standard_normal((int(copy.sum()), DIM)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    emb[copy] += noise * rng.uniform(0.02, 0.12, (len(noise), 1)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    bnoise = rng.standard_normal((int(copy.sum()), gen.N_BLENDSHAPES)).astype(np.float32)
    bnoise /= np.linalg.norm(bnoise, axis=1, keepdims=True)
    shapes[copy] += bnoise * rng.uniform(0.0, 0.25, (len(bnoise), 1)).astype(np.float32)

    shas = [os.urandom(32).hex() for _ in range(n_files)]
    paths = [f"memes/{i:08d}.jpg" for i in range(n_files)]
    images = pa.table({"path": paths, "sha256": shas, "phash": [f"{int(h):016x}" for h in hashes],
                       "dhash": [f"{int(h):016x}" for h in dhashes],
                       "status": ["faces" if c else "noface" for c in counts]})
    faces = pa.table({
        "path": pa.array(paths).take(pa.array(file_of_face)), "sha256": pa.array(shas).take(pa.array(file_of_face)),
        "blendshapes": pa.FixedSizeListArray.from_arrays(pa.array(shapes.ravel()), gen.N_BLENDSHAPES),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), DIM)})
    return images, faces, group


def score(image_templates, truth: np.ndarray) -> tuple[float, int]:
    """(planted templates recovered whole / planted templates, files joined to a template not their own), given
    each file's template id (an Arrow string array in the images table's row order)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(image_templates, pa.ChunkedArray):
        image_templates = image_templates.combine_chunks()
    got = pc.dictionary_encode(image_templates).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    # Each planted group is a run of files (truth is sorted): whole when its files share one template.
    starts = np.flatnonzero(np.r_[True, truth[1:] != truth[:-1]])
    sizes = np.diff(np.r_[starts, len(truth)])
    same = np.r_[got[1:] == got[:-1], False]  # file i and i+1 share a template
    within = np.add.reduceat(same.astype(np.int64), starts) - same[starts + sizes - 1]
    multi = sizes > 1
    whole = int((within[multi] == sizes[multi] - 1).sum())
    # A file is wrongly joined when its template holds a file of another planted group: per template, the files
    # beyond those of its first group.
    order = np.lexsort((truth, got))
    first_of_template = np.r_[True, got[order][1:] != got[order][:-1]]
    group_of_first = np.maximum.accumulate(np.where(first_of_template, np.arange(len(order)), 0))
    false = int((truth[order] != truth[order][group_of_first]).sum())
    return whole / max(1, int(multi.sum())), false


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--search", choices=("auto", "exact", "approximate"), default="auto",
                    help="face-pair search: by size (auto), or forced")
    ap.add_argument("--no-dhash", action="store_true", help="no dhash column: hash joins on the pHash alone")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from memeindex import templates

    if args.search != "auto":
        templates.EXACT_PAIRS_MAX = 1 << 62 if args.search == "exact" else 0
    t0 = time.perf_counter()
    images, faces, truth = synthetic(args.files)
    if args.no_dhash:
        images = images.drop_columns(["dhash"])
    synth_s = time.perf_counter() - t0
    rss_before = status_mb("VmRSS")  # the synthetic tables and the interpreter, before grouping
    reset_peak_rss()  # the peak read after grouping is then grouping's, not the synthesis's transient one
    t0 = time.perf_counter()
    image_templates, _ = templates.template_ids(images, faces, MODEL)
    assign_s = time.perf_counter() - t0
    rss = status_mb("VmHWM")
    recall, false = score(image_templates, truth)
    out = {"files": images.num_rows, "faces": faces.num_rows,
           "search": "exact" if faces.num_rows <= templates.EXACT_PAIRS_MAX else "approximate",
           "dhash": not args.no_dhash, "synth_s": round(synth_s, 2), "assign_s": round(assign_s, 2),
           "rss_mb": round(rss), "rss_before_mb": round(rss_before), "grouping_mb": round(rss - rss_before),
           "recall": round(recall, 4), "false_joins": false}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['files']:,} files, {out['faces']:,} faces: grouping {out['assign_s']} s ({out['search']} pair "
              f"search, {'pHash + dHash' if out['dhash'] else 'pHash alone'}), peak RSS {out['rss_mb']} MB "
              f"({out['rss_before_mb']} MB before grouping: +{out['grouping_mb']} MB), planted templates recovered "
              f"{out['recall']:.4f}, false joins {out['false_joins']}; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
