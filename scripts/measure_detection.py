#!/usr/bin/env python
"""Share of the shared memes with at least one face: plain FaceLandmarker ("before") vs FaceDetector ("after").

    .venv/bin/python scripts/measure_detection.py [--memes ../shared/data/memes] [--limit N] [--out FILE]

Every meme is decoded with memeindex.images.decode (first frame only). "before" is one FaceLandmarker call on
the whole image (num_faces=8, default confidences), "after" is memeindex.faces.FaceDetector.detect. Prints the
share of memes with >= 1 face, total faces and ms/image for each, and writes a TSV of every file with both
counts and boxes (--out), so the files where the two disagree can be looked at.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memeindex.errors import ImageTooLarge, NotAnImage  # noqa: E402
from memeindex.faces import FaceDetector  # noqa: E402
from memeindex.images import decode  # noqa: E402
from memeindex.models import FACE_LANDMARKER, model_path  # noqa: E402
from memeindex.settings import Settings  # noqa: E402

from memefiles import meme_files  # noqa: E402 (scripts/ is on sys.path when run)


def plain_landmarker(settings: Settings):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    task = model_path(FACE_LANDMARKER, settings.models_dir)
    lm = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(task)), running_mode=vision.RunningMode.IMAGE,
        num_faces=8, output_face_blendshapes=True))

    def detect(rgb):
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        result = lm.detect(image)
        h, w = rgb.shape[:2]
        boxes = []
        for pts in result.face_landmarks:
            xs = [p.x * w for p in pts]
            ys = [p.y * h for p in pts]
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
        return boxes

    return lm, detect


def fmt_boxes(boxes) -> str:
    return ";".join(",".join(str(round(v)) for v in b) for b in boxes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memes", type=Path, default=REPO.parent / "shared" / "data" / "memes")
    ap.add_argument("--limit", type=int, default=0, help="only the first N files (0 = all)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/measure_detection.tsv"))
    ap.add_argument("--after-only", action="store_true", help="skip the plain landmarker (faster tuning)")
    args = ap.parse_args(argv)

    files = meme_files(args.memes)
    if args.limit:
        files = files[: args.limit]
    if not files:
        print(f"no images under {args.memes}", file=sys.stderr)
        return 1
    settings = Settings.from_env()
    frames = []
    for path in files:
        try:
            frames.append((path, decode(path, max_pixels=settings.max_pixels, max_frames=1)[0].rgb))
        except (NotAnImage, ImageTooLarge) as exc:
            print(f"skip {path}: {exc}", file=sys.stderr)

    lm, plain = (None, None) if args.after_only else plain_landmarker(settings)
    detector = FaceDetector(settings)
    rows = []
    t_before = t_after = 0.0
    for path, rgb in frames:
        before = []
        if plain:
            t0 = time.perf_counter()
            before = plain(rgb)
            t_before += time.perf_counter() - t0
        t0 = time.perf_counter()
        after = detector.detect(rgb)
        t_after += time.perf_counter() - t0
        rows.append((path, rgb.shape, before, [f.box for f in after], [f.score for f in after]))
    detector.close()
    if lm:
        lm.close()

    n = len(rows)
    with open(args.out, "w") as out:
        out.write("file\twidth\theight\tbefore\tafter\tbefore_boxes\tafter_boxes\tafter_scores\n")
        for path, shape, before, after, scores in rows:
            out.write(f"{path.relative_to(args.memes)}\t{shape[1]}\t{shape[0]}\t{len(before)}\t{len(after)}\t"
                      f"{fmt_boxes(before)}\t{fmt_boxes(after)}\t{','.join(f'{s:.2f}' for s in scores)}\n")

    def line(label, key, seconds):
        with_face = sum(1 for r in rows if r[key])
        total = sum(len(r[key]) for r in rows)
        print(f"{label:<34} {with_face:4d}/{n} = {100 * with_face / n:5.1f}% with >=1 face, "
              f"{total:4d} faces, {1000 * seconds / n:6.1f} ms/image")

    print(f"{n} memes under {args.memes} (first frame of each)")
    if plain:
        line("before: plain FaceLandmarker", 2, t_before)
    line("after:  memeindex FaceDetector", 3, t_after)
    if plain:
        gained = [r for r in rows if r[3] and not r[2]]
        lost = [r for r in rows if r[2] and not r[3]]
        print(f"found by after only: {len(gained)}, by before only: {len(lost)}; per-file table: {args.out}")
        for label, group in (("after only", gained), ("before only", lost)):
            listing = args.out.with_name(args.out.stem + f"_{label.replace(' ', '_')}.txt")
            listing.write_text("".join(f"{r[0].relative_to(args.memes)}\n" for r in group))
            print(f"  {label}: {listing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
