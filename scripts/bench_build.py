#!/usr/bin/env python
"""Build throughput (images/s) against the plain Face Landmarker loop over the same images, on 1 and 2 processes.

    .venv/bin/python scripts/bench_build.py [--memes ../shared/data/memes] [--limit N] [--workers 1,2] [--repeat R]
    .venv/bin/python scripts/bench_build.py --paired [--limit N]
    .venv/bin/python scripts/bench_build.py --fast [--paired]   # the build as `memeindex build --fast` runs it

The images are linked (symlinks, never copies) into a temporary folder, so both sides see exactly the same
files. "plain" is the ceiling: each process creates its own mediapipe FaceLandmarker (num_faces=8, default
confidences) and runs it on every frame `memeindex.images.decode` gives (the frames the build analyses),
nothing else. "build" is `memeindex.indexer.build` into a fresh temporary index dir. Both are timed end to end,
worker start-up and model loading included. A benchmark, not a test: it prints its figures and exits 0.

`--paired` measures one process only, file by file: the plain landmarker and the build's per-file analysis
(`memeindex.workers.Analysis.run`: read, hash, decode, pHash, detect, embed, rows) alternate on each image, so a
burst of load from other processes hits both sides alike. It separates the per-file work from start-up, the driver
and the process pool, which the end-to-end figures include, and splits the build side's CPU time by stage.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memefiles import meme_files  # noqa: E402 (scripts/ is on sys.path when run)

_plain = None  # this process's (mediapipe module, FaceLandmarker, Settings)


def link_folder(files: list[Path], root: Path, dest: Path) -> Path:
    for path in files:
        link = dest / path.relative_to(root)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path.resolve(), link)
    return dest


# -- the plain loop (the ceiling) --------------------------------------------------------------------------------
def _plain_init(models_dir: str) -> None:
    global _plain
    from memeindex.workers import silence_native_stderr

    silence_native_stderr()
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from memeindex.settings import Settings

    settings = Settings.from_env(models_dir=Path(models_dir))
    landmarker = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(Path(models_dir) / "face_landmarker.task")),
        running_mode=vision.RunningMode.IMAGE, num_faces=8, output_face_blendshapes=True))
    _plain = (mp, landmarker, settings)


def _plain_task(path: str) -> int:
    from memeindex.errors import MemeIndexError
    from memeindex.images import decode

    mp, landmarker, s = _plain
    try:
        frames = decode(path, max_pixels=s.max_pixels, hard_max_pixels=s.hard_max_pixels, max_frames=s.max_frames)
    except MemeIndexError:
        return 0
    faces = 0
    for frame in frames:
        result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame.rgb))
        faces += len(result.face_landmarks)
    return faces


def plain_loop(files: list[Path], workers: int, models_dir: Path) -> tuple[float, int]:
    """(seconds, faces) of the plain landmarker over `files` on `workers` processes, start-up included."""
    started = time.perf_counter()
    ctx = multiprocessing.get_context("forkserver")  # as memeindex.workers: fresh processes, no inherited state
    with ctx.Pool(workers, initializer=_plain_init, initargs=(str(models_dir),)) as pool:
        chunk = max(1, min(8, len(files) // (workers * 8)))
        faces = sum(pool.imap_unordered(_plain_task, [str(p) for p in files], chunksize=chunk))
    return time.perf_counter() - started, faces


# -- the build --------------------------------------------------------------------------------------------------
def build_once(root: Path, workers: int, scratch: Path) -> tuple[float, int, str]:
    from memeindex.indexer import build
    from memeindex.settings import Settings

    index_dir = Path(tempfile.mkdtemp(prefix="index-", dir=scratch))
    try:
        started = time.perf_counter()
        summary = build(root, index_dir, settings=Settings.from_env(workers=workers), workers=workers)
        seconds = time.perf_counter() - started
        return seconds, summary.faces, summary.model_id
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)


def paired(files: list[Path], root: Path, models_dir: Path) -> int:
    from memeindex.plan import Task
    from memeindex.settings import Settings
    from memeindex.workers import Analysis, inference_threads

    from memeindex import workers

    python_stderr = os.dup(2)  # _plain_init silences fd 2 (mediapipe's native logs): Python's own errors keep a copy
    _plain_init(str(models_dir))
    sys.stderr = os.fdopen(python_stderr, "w", buffering=1)
    analysis = Analysis(Settings.from_env(workers=1), root, num_threads=inference_threads(1))
    parts = {"decode": 0.0, "pHash": 0.0, "detect": 0.0, "embed": 0.0}  # the build side's CPU time, per stage
    analyzer = analysis.analyzer
    analyzer.frames = _cpu_timed(analyzer.frames, parts, "decode")
    analyzer.detector.detect = _cpu_timed(analyzer.detector.detect, parts, "detect")
    analyzer.embedder.embed = _cpu_timed(analyzer.embedder.embed, parts, "embed")
    workers.picture_hashes = _cpu_timed(workers.picture_hashes, parts, "pHash")
    plain_s = build_s = plain_cpu = build_cpu = 0.0
    plain_faces = build_faces = 0
    for i, path in enumerate(files):
        st = path.stat()
        task = Task(path.relative_to(root).as_posix(), "", st.st_size, st.st_mtime_ns)
        for side in ((0, 1) if i % 2 else (1, 0)):  # alternate which side goes first
            started, cpu = time.perf_counter(), time.process_time()
            if side == 0:
                plain_faces += _plain_task(str(path))
                plain_s += time.perf_counter() - started
                plain_cpu += time.process_time() - cpu
            else:
                build_faces += len(analysis.run(task).faces)
                build_s += time.perf_counter() - started
                build_cpu += time.process_time() - cpu
    analysis.close()
    n = len(files)
    print(f"paired, one process, per file (start-up excluded): plain {plain_s / n * 1000:.1f} ms "
          f"({n / plain_s:.1f} img/s, {plain_faces} faces), build {build_s / n * 1000:.1f} ms "
          f"({n / build_s:.1f} img/s, {build_faces} faces): build/plain {plain_s / build_s:.2f}x "
          f"(load {os.getloadavg()[0]:.1f} at the end)")
    # The sides run one after the other, so the process's CPU time splits between them exactly (all threads
    # counted): the cost that does not depend on how busy the machine is.
    print(f"CPU time a file: plain {plain_cpu / n * 1000:.1f} ms, build {build_cpu / n * 1000:.1f} ms: "
          f"build/plain {plain_cpu / build_cpu:.2f}x")
    parts["read, sha256, rows"] = build_cpu - sum(parts.values())
    print("build CPU time a file by stage: " + ", ".join(f"{k} {v / n * 1000:.1f} ms" for k, v in parts.items()))
    return 0


def _cpu_timed(fn, parts: dict, key: str):
    """`fn`, adding the CPU time of each call to parts[key]."""
    def timed(*args, **kwargs):
        started = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            parts[key] += time.process_time() - started
    return timed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memes", type=Path, default=REPO.parent / "shared" / "data" / "memes")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    ap.add_argument("--workers", default="1,2", help="process counts to measure, comma separated")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the median is printed")
    ap.add_argument("--skip-build", action="store_true", help="measure only the plain loop")
    ap.add_argument("--paired", action="store_true", help="one process, plain and build alternating per file")
    ap.add_argument("--fast", action="store_true",
                    help="the build as `memeindex build --fast` runs it: the full frame only")
    args = ap.parse_args(argv)
    if args.fast:  # what --fast sets; the build's worker processes read their settings from the environment
        os.environ["MEMEINDEX_SECOND_PASS"] = "0"

    from memeindex.settings import Settings

    settings = Settings.from_env()
    files = meme_files(args.memes)[: args.limit or None]
    if not files:
        print(f"no images under {args.memes}", file=sys.stderr)
        return 1
    if args.paired:
        print(f"{len(files)} images under {args.memes}; load average {os.getloadavg()[0]:.1f} at start")
        return paired(files, args.memes, settings.models_dir)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    print(f"{len(files)} images under {args.memes}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f} at start; median of {args.repeat} run(s); start-up included")
    rows = []
    with tempfile.TemporaryDirectory(prefix="memeindex-bench-") as scratch:
        root = link_folder(files, args.memes, Path(scratch) / "memes")
        runs = {w: {"plain": [], "build": []} for w in counts}
        for r in range(args.repeat):  # interleaved, so a burst of load elsewhere hits both sides alike
            for workers in counts:
                seconds, faces = plain_loop(files, workers, settings.models_dir)
                runs[workers]["plain"].append((seconds, faces, ""))
                line = f"  run {r + 1}, {workers} process(es): plain {seconds:.1f}s"
                if not args.skip_build:
                    seconds, faces, model_id = build_once(root, workers, Path(scratch))
                    runs[workers]["build"].append((seconds, faces, model_id))
                    line += f", build {seconds:.1f}s"
                print(line + f"  (load {os.getloadavg()[0]:.1f})", flush=True)
        for workers in counts:
            plain, built = runs[workers]["plain"], runs[workers]["build"]
            row = {"workers": workers, "plain_s": statistics.median(s for s, _, _ in plain), "plain_faces": plain[0][1]}
            if built:
                row.update(build_s=statistics.median(s for s, _, _ in built), build_faces=built[0][1],
                           model_id=built[0][2])
            rows.append(row)

    n = len(files)
    print()
    print(f"{'processes':>9} | {'plain img/s':>11} | {'build img/s':>11} | {'build/plain':>11} | "
          f"{'plain faces':>11} | {'build faces':>11}")
    print("-" * 80)
    for r in rows:
        plain_ips = n / r["plain_s"]
        if "build_s" in r:
            build_ips = n / r["build_s"]
            print(f"{r['workers']:>9} | {plain_ips:11.1f} | {build_ips:11.1f} | {build_ips / plain_ips:10.2f}x | "
                  f"{r['plain_faces']:>11} | {r['build_faces']:>11}")
        else:
            print(f"{r['workers']:>9} | {plain_ips:11.1f} | {'-':>11} | {'-':>11} | {r['plain_faces']:>11} | {'-':>11}")
    if len(rows) > 1:
        base = rows[0]
        for r in rows[1:]:
            gain = base["plain_s"] / r["plain_s"]
            line = f"{r['workers']} vs {base['workers']} process(es): plain x{gain:.2f}"
            if "build_s" in r:
                line += f", build x{base['build_s'] / r['build_s']:.2f}"
            print(line)
    if rows and "model_id" in rows[0]:
        print(f"build embedder: {rows[0]['model_id']}; goal: build >= 0.85x plain on each row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
