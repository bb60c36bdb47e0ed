#!/usr/bin/env python
"""Where the detector's time goes: model CPU time and faces added per detector round, over the shared memes.

    .venv/bin/python scripts/profile_rounds.py [--memes ../shared/data/memes] [--limit N]

Runs memeindex.faces.FaceDetector (one inference thread, so a model run's CPU time is its cost whatever the load)
on every frame memeindex.images.decode gives, and books each model run (detector, full-range, mesh, blendshapes)
to the round it belongs to: `first` (the full frame, what the plain Face Landmarker does), `pad` (close-up),
`detector-tiles` (panels, quarters), `full-frame` and `full-tiles` (the full-range detector), `turned` (the turned
mesh retry), `rescue` (the last resort for a frame without a face), `vouch-rescue` (detector 4's very last look),
`vouch-doubted` (detector 5's: strong boxes the mesh doubts);
the full-range vouch on a box's own crop is booked to the round that asked for it; `agree` counts the faces the
detector agreement adds. A profiling aid, not a test: it wraps the detector's private methods, so it follows
memeindex/faces/detector.py and may need a touch when that changes.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memefiles import meme_files  # noqa: E402 (scripts/ is on sys.path when run)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memes", type=Path, default=REPO.parent / "shared" / "data" / "memes")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args(argv)

    from memeindex.errors import MemeIndexError
    from memeindex.faces import FaceDetector, bundle
    from memeindex.faces import detector as det_mod
    from memeindex.images import decode
    from memeindex.settings import Settings

    files = meme_files(args.memes)[: args.limit or None]
    settings = Settings.from_env(workers=1)
    detector = FaceDetector(settings, num_threads=1)
    cur = {"round": None, "cpu": 0.0, "faces": 0, "size": (0, 0)}
    booked = collections.defaultdict(lambda: [0, 0.0, 0])  # round -> [times run, model CPU s, faces added]

    def timed(fn):
        def wrapper(self, key, *a):
            started = time.process_time()
            try:
                return fn(self, key, *a)
            finally:
                cur["cpu"] += time.process_time() - started
        return wrapper

    bundle.BundleModels.run = timed(bundle.BundleModels.run)
    bundle.BundleModels.run_image = timed(bundle.BundleModels.run_image)

    def book(seen) -> None:
        if cur["round"] is not None:
            row = booked[cur["round"]]
            row[0] += 1
            row[1] += cur["cpu"]
            row[2] += len(seen.faces) - cur["faces"]
        cur.update(cpu=0.0, faces=len(seen.faces))

    region, confirm = det_mod.FaceDetector._detect_region, det_mod.FaceDetector._confirm
    agree, vouch = det_mod.FaceDetector._agree, det_mod.FaceDetector._vouch

    def _detect_region(self, pyr, x0, y0, x1, y1, value=0, min_score=None, model="detector", weak=None):
        whole = (x0, y0, x1, y1) == (0, 0, *cur["size"])
        if cur["round"] is None:  # a frame's first run: the full frame, short-range
            cur["round"] = "first"
        else:
            cur["round"] = "pad" if x0 < 0 else f"{model}-{'frame' if whole else 'tiles'}"
        return region(self, pyr, x0, y0, x1, y1, value, min_score, model, weak)

    def _confirm(self, pyr, dets, seen, model):
        added = confirm(self, pyr, dets, seen, model)
        book(seen)
        return added

    def last_look(name: str, step):
        """A round the detector runs as one method (the looks after the regions): booked under `name`."""
        def wrapper(self, pyr, seen, *a):
            cur["round"] = name
            added = step(self, pyr, seen, *a)
            book(seen)
            return added
        return wrapper

    def _vouch(self, pyr, seen, box):
        asking = cur["round"]  # the vouch's own detector run belongs to the round that asks for it
        try:
            return vouch(self, pyr, seen, box)
        finally:
            cur["round"] = asking

    def _agree(self, seen):
        added = agree(self, seen)
        booked["agree"][2] += added
        cur["faces"] = len(seen.faces)
        return added

    det_mod.FaceDetector._detect_region = _detect_region
    det_mod.FaceDetector._confirm = _confirm
    det_mod.FaceDetector._agree = _agree
    det_mod.FaceDetector._vouch = _vouch
    for name, method in (("turned", "_turned_retry"), ("rescue", "_rescue"), ("vouch-rescue", "_vouch_rescue"),
                         ("vouch-doubted", "_vouch_doubted")):
        setattr(det_mod.FaceDetector, method, last_look(name, getattr(det_mod.FaceDetector, method)))

    frames = 0
    for path in files:
        try:
            decoded = decode(str(path), max_pixels=settings.max_pixels, hard_max_pixels=settings.hard_max_pixels,
                             max_frames=settings.max_frames)
        except MemeIndexError:
            continue
        for frame in decoded:
            frames += 1
            cur.update(round=None, cpu=0.0, faces=0, size=(frame.rgb.shape[1], frame.rgb.shape[0]))
            detector.detect(frame.rgb)
    detector.close()
    n = len(files)
    total = sum(row[1] for row in booked.values())
    print(f"{n} files, {frames} frames under {args.memes}; model CPU time, one inference thread")
    print(f"{'round':>15} | {'runs':>5} | {'ms a file':>9} | {'share':>6} | {'faces added':>11}")
    print("-" * 60)
    for name, (runs, cpu, faces) in sorted(booked.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:>15} | {runs:5d} | {cpu / n * 1000:9.2f} | {cpu / max(total, 1e-9):6.1%} | {faces:11d}")
    print(f"{'all':>15} |       | {total / n * 1000:9.2f} |        | {sum(r[2] for r in booked.values()):11d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
