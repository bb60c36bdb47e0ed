"""Are the results three *different* memes, with a score and traits? Real face photos against the shared memes.

    .venv/bin/python scripts/measure_results.py            # builds/updates indexes/shared-memes first (~1-2 min)
    .venv/bin/python scripts/measure_results.py --queries 30 -k 3 --index DIR

Queries: muxspace photos (real faces, mostly LFW), taken round-robin over its expression labels in file order,
skipping photos without a face, until `--queries` have one. For each query the top k (what `memeindex query
--json` prints: `QueryResult.to_dict()`) is checked, and the figures printed:

* near-duplicate pairs in a top k, judged from the pixels independently of the index's grouping: two results
  whose whole pictures hash within 12 bits, or whose matched faces (cropped from the files) hash within 12 bits;
* the same, for what the index would answer without templates (the k nearest distinct files), for comparison;
* matches whose `score` is a number in 0..1 and whose `traits` is a list of {name, strength in 0..1};
* how many templates the index holds, and how many group several files.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
SAME_BITS = 12


def queries(folder: Path, n: int, analyzer) -> list[Path]:
    """`n` photos with a face: round-robin over the labels, file order within each."""
    with open(folder / "index.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_label: dict[str, list[Path]] = {}
    for row in sorted(rows, key=lambda r: r["path"]):
        by_label.setdefault(row["label"], []).append(folder / row["path"])
    picked = []
    for path in itertools.chain.from_iterable(itertools.zip_longest(*by_label.values())):
        if path is not None and analyzer.analyze(path):
            picked.append(path)
            if len(picked) == n:
                break
    return picked


def picture_hashes(root: Path, path: str, box) -> tuple[str, str]:
    """(hash of the whole first frame, hash of the face at `box`) of an indexed file."""
    from memeindex.images import decode
    from memeindex.templates import perceptual_hash

    frame = decode(root / path, max_frames=1)[0]
    x0, y0, x1, y1 = (int(round(v * frame.scale)) for v in box)
    face = frame.rgb[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)]
    return perceptual_hash(frame.rgb), perceptual_hash(face)


def duplicate_pairs(root: Path, matches: list[dict], cache: dict) -> list[tuple[str, str]]:
    from memeindex.templates import hash_distance

    hashes = []
    for m in matches:
        key = (m["path"], tuple(m["box"]))
        if key not in cache:
            cache[key] = picture_hashes(root, m["path"], m["box"])
        hashes.append(cache[key])
    return [(a["path"], b["path"]) for (a, ha), (b, hb) in itertools.combinations(zip(matches, hashes), 2)
            if hash_distance(ha[0], hb[0]) <= SAME_BITS or hash_distance(ha[1], hb[1]) <= SAME_BITS]


def valid(m: dict) -> bool:
    score_ok = isinstance(m.get("score"), float) and 0.0 <= m["score"] <= 1.0
    traits = m.get("traits")
    traits_ok = isinstance(traits, list) and all(isinstance(t.get("name"), str) and 0 <= t.get("strength", -1) <= 1
                                                 for t in traits)
    return score_ok and traits_ok


def without_templates(searcher, vector: np.ndarray, k: int) -> list[dict]:
    """The k nearest distinct files, as the index answered before templates (for comparison only)."""
    from memeindex import vectors

    gen = searcher.loaded_generation
    dist, ids = vectors.search(gen.index, np.asarray(vector, np.float32)[None, :], min(gen.index.ntotal, 64 * k))
    out, seen = [], set()
    for i in ids[0]:
        if i >= 0 and gen.meme_id(int(i)) not in seen:
            seen.add(gen.meme_id(int(i)))
            out.append({"path": gen.path(int(i)), "box": [float(v) for v in gen.face_row(i)["box"]]})
            if len(out) == k:
                break
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memes", type=Path, default=SHARED / "memes")
    parser.add_argument("--photos", type=Path, default=SHARED / "expressions" / "muxspace")
    parser.add_argument("--index", type=Path, default=REPO / "indexes" / "shared-memes")
    parser.add_argument("--queries", type=int, default=18)
    parser.add_argument("-k", type=int, default=3)
    parser.add_argument("--no-build", action="store_true", help="use --index as it is")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import memeindex
    from memeindex.cli import format_build
    from memeindex.quiet import native_stderr_filtered
    from memeindex.search import Searcher
    from memeindex.settings import Settings

    if not args.no_build:
        print(format_build(memeindex.build(args.memes, args.index, progress=True)), file=sys.stderr)
    with native_stderr_filtered():
        searcher = Searcher(args.index, Settings.from_env())
        photos = queries(args.photos, args.queries, searcher.analyzer)
        results = [(p, searcher.search(p, k=args.k)) for p in photos]
    root = searcher.root
    cache: dict = {}
    dup_after = dup_before = matches = good = with_variants = 0
    for photo, result in results:
        data = json.loads(json.dumps(result.to_dict()))  # exactly what `memeindex query --json` prints
        pairs = duplicate_pairs(root, data["matches"], cache)
        old = duplicate_pairs(root, without_templates(searcher, result.query_face.embedding, args.k), cache)
        dup_after += bool(pairs)
        dup_before += bool(old)
        matches += len(data["matches"])
        good += sum(valid(m) for m in data["matches"])
        with_variants += sum(bool(m["variants"]) for m in data["matches"])
        print(f"{photo.relative_to(args.photos)}")
        for m in data["matches"]:
            shared = ", ".join(f"{t['name']} {t['strength']:.1f}" for t in m["traits"]) or "-"
            more = f"  +{len(m['variants'])} variants" if m["variants"] else ""
            print(f"   {m['score'] * 100:4.0f}%  {m['distance']:.3f}  {m['path']}  [{shared}]{more}"
                  f"{'  (weak)' if m['weak'] else ''}")
        for a, b in pairs:
            print(f"   NEAR-DUPLICATES in the top {args.k}: {a} ~ {b}")
    searcher.close()
    from collections import Counter

    from memeindex.generation import IndexDir

    images = IndexDir(args.index).generation().images(["template", "status"]).to_pylist()
    sizes = Counter(r["template"] for r in images if r["status"] != "failed")
    n = len(results)
    print(f"\nindex: {sum(sizes.values())} files in {len(sizes)} templates, {sum(v > 1 for v in sizes.values())} "
          f"of them with 2-{max(sizes.values())} files")
    print(f"{n} real face queries (muxspace) against {args.memes} (top {args.k}, model {results[0][1].model_id}):")
    print(f"  top-{args.k} lists holding two near-duplicate images: {dup_after} of {n} "
          f"(without templates: {dup_before} of {n})")
    print(f"  matches with a 0..1 score and a traits list: {good} of {matches}; "
          f"with variants listed: {with_variants}")
    return 0 if dup_after == 0 and good == matches else 1


if __name__ == "__main__":
    sys.exit(main())
