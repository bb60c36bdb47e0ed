#!/usr/bin/env python
"""Every face the detector and the learned embedders give, written exactly: the proof that a refactor changed no output.

    .venv/bin/python scripts/fingerprint_faces.py --out /tmp/before.txt [--memes ../shared/data/memes] [--limit N]
    ... change the code ...
    .venv/bin/python scripts/fingerprint_faces.py --out /tmp/after.txt && cmp /tmp/before.txt /tmp/after.txt

Runs memeindex.faces.FaceDetector (default settings) on every frame memeindex.images.decode gives for each shared
meme, and on variants of grace_hopper.jpg (matplotlib's sample data) built here: turned, scaled, in a wide and a tall
canvas. Writes one line per face: file, frame, box and score (repr: exact floats), a sha256 of the landmarks, the
blendshapes and each learned embedder's embedding (their bytes), and a frame with no face as one line too. The last
line is the sha256 of all lines before it, also printed, so two runs compare by one digest.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memefiles import meme_files  # noqa: E402 (scripts/ is on sys.path when run)


def grace_hopper_variants():
    """(name, RGB) variants of grace_hopper.jpg that take the detector through its rounds and its turned meshes."""
    import cv2
    import numpy as np
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        from PIL import Image

        rgb = np.asarray(Image.open(f).convert("RGB"))
    h, w = rgb.shape[:2]
    yield "grace_hopper", rgb
    for k in (1, 2, 3):
        yield f"grace_hopper-rot{90 * k}", np.ascontiguousarray(np.rot90(rgb, k))
    for angle in (30, -45, 60):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        yield f"grace_hopper-turn{angle}", cv2.warpAffine(rgb, m, (w, h), borderValue=(255, 255, 255))
    for scale in (0.12, 0.25, 2.0):
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        yield f"grace_hopper-scale{scale}", cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    small = cv2.resize(rgb, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    for name, shape in (("wide", (h // 4, w * 2, 3)), ("tall", (h * 2, w // 4, 3))):
        canvas = np.full(shape, 255, np.uint8)
        y, x = (shape[0] - small.shape[0]) // 3, (shape[1] - small.shape[1]) // 3
        canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
        yield f"grace_hopper-{name}", canvas
    yield "grace_hopper-closeup", np.ascontiguousarray(rgb[h // 8: h // 2, w // 4: 3 * w // 4])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memes", type=Path, default=REPO.parent / "shared" / "data" / "memes")
    ap.add_argument("--limit", type=int, default=0, help="the first N memes only (0: all)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-variants", action="store_true", help="the memes only (no grace_hopper.jpg variants: a "
                    "Python without matplotlib, such as the training environment)")
    args = ap.parse_args(argv)

    from memeindex.embedders import get_embedder
    from memeindex.embedders.registry import LEARNED_MODELS
    from memeindex.errors import MemeIndexError
    from memeindex.faces import FaceDetector
    from memeindex.images import decode
    from memeindex.settings import Settings

    def digest(a) -> str:
        return hashlib.sha256(a.tobytes()).hexdigest()[:16]

    settings = Settings.from_env(workers=1)
    detector = FaceDetector(settings, num_threads=1)
    embedders = [get_embedder(settings, model_id) for model_id in LEARNED_MODELS]

    def frames():
        for path in meme_files(args.memes)[: args.limit or None]:
            name = str(path.relative_to(args.memes))
            try:
                decoded = decode(str(path), max_pixels=settings.max_pixels, hard_max_pixels=settings.hard_max_pixels,
                                 max_frames=settings.max_frames)
            except MemeIndexError as e:
                yield name, 0, None, type(e).__name__
                continue
            for frame in decoded:
                yield name, frame.index, frame.rgb, None
        for name, rgb in ([] if args.no_variants else grace_hopper_variants()):
            yield name, 0, rgb, None

    lines, faces = [], 0
    for name, index, rgb, error in frames():
        if rgb is None:
            lines.append(f"{name}\t{index}\t{error}")
            continue
        found = detector.detect(rgb, index)
        if not found:
            lines.append(f"{name}\t{index}\tno face")
        embeddings = [e.embed(rgb, found) for e in embedders]
        for i, face in enumerate(found):
            faces += 1
            lines.append("\t".join([name, str(index), repr(tuple(face.box)), repr(face.score),
                                    digest(face.landmarks), digest(face.blendshapes),
                                    *(digest(emb[i]) for emb in embeddings)]))
    detector.close()
    for e in embedders:
        e.close()
    total = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    args.out.write_text("\n".join(lines + [f"sha256\t{total}"]) + "\n")
    print(f"{len(lines)} lines, {faces} faces; sha256 {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
