#!/usr/bin/env python
"""Does the difference hash keep the joins the perceptual hash makes alone, and stop the chance ones? Real pictures.

    .venv/bin/python scripts/measure_hash_joins.py [--index indexes/shared-memes]

`templates.assign` joins two files on their hashes alone when no face can confirm it (both faceless, or one with
faces and one without): pHashes within SAME_PICTURE_BITS and, where both files have one, dHashes within
DHASH_BITS. Each file of the index (a build of the shared memes: `scripts/measure_results.py` makes one) is decoded
again and both hashes taken from its first frame (`templates.picture_hashes`); the index gives its status and
template. Printed:

* pairs within SAME_PICTURE_BITS of pHash (the joins the pHash alone would make): how many also agree by dHash, all
  and both-faceless, and the ones that do not (to judge by eye). On the shared memes the 48 faceless pairs are the
  same picture by their names but one: a blank white picture and a transparency checkerboard (two blank templates,
  alike to both hashes); the pairs with faces that the dHash would not confirm are joined by a face, or not, as
  before (the dHash confirms faceless pairs only);
* unrelated pairs nearest by pHash: pairs the index keeps apart whose pHashes lie just beyond (SAME_PICTURE_BITS + 2
  to 26 bits), a stand-in for the unrelated pairs that meet within SAME_PICTURE_BITS by chance in a bigger
  collection: the share whose dHashes agree too is the factor by which the dHash cuts chance joins.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FAR_BITS = 26


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, default=REPO / "indexes" / "shared-memes")
    args = ap.parse_args(argv)

    from memeindex.generation import IndexDir
    from memeindex.images import decode
    from memeindex.templates import DHASH_BITS, SAME_PICTURE_BITS, hash_distance, picture_hashes

    g = IndexDir(args.index).generation()
    root = Path(g.facts["root"])
    rows = [r for r in g.images(["path", "status", "template"]).to_pylist() if r["status"] != "failed"]
    hashes = {}
    for r in rows:
        try:
            hashes[r["path"]] = picture_hashes(decode(root / r["path"], max_frames=1)[0].rgb)
        except Exception as exc:  # noqa: BLE001 (a file gone or changed since the build: left out, said)
            print(f"left out {r['path']}: {exc}", file=sys.stderr)
    rows = [r for r in rows if r["path"] in hashes]
    same, near_apart = [], []
    for a, b in itertools.combinations(rows, 2):
        (pa_, da), (pb, db) = hashes[a["path"]], hashes[b["path"]]
        bits = hash_distance(pa_, pb)
        if bits <= SAME_PICTURE_BITS:
            same.append((bits, hash_distance(da, db), a["status"] == b["status"] == "noface", a["path"], b["path"]))
        elif bits <= FAR_BITS and a["template"] != b["template"]:
            near_apart.append(hash_distance(da, db))
    kept = [s for s in same if s[1] <= DHASH_BITS]
    faceless = [s for s in same if s[2]]
    print(f"{len(rows)} files of {args.index}")
    print(f"pairs within {SAME_PICTURE_BITS} pHash bits: {len(same)}; dHash within {DHASH_BITS}: {len(kept)} "
          f"({len(kept) / max(1, len(same)):.1%}); both faceless: {sum(s[1] <= DHASH_BITS for s in faceless)} of "
          f"{len(faceless)}; dHash bits of all: median {np.median([s[1] for s in same]):.0f}, "
          f"max {max(s[1] for s in same)}")
    for bits, dbits, both_faceless, a, b in sorted(s for s in same if s[1] > DHASH_BITS):
        print(f"  not confirmed: {a} ~ {b} (pHash {bits}, dHash {dbits}{', both faceless' if both_faceless else ''})")
    passed = sum(d <= DHASH_BITS for d in near_apart)
    print(f"unrelated pairs (apart in the index) {SAME_PICTURE_BITS + 2}-{FAR_BITS} pHash bits apart: "
          f"{len(near_apart)}; dHash within {DHASH_BITS}: {passed} ({passed / max(1, len(near_apart)):.2%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
