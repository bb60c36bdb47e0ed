#!/usr/bin/env python
"""Kill one worker of a real build and show that the build finishes, fails only that file, and frees the lock.

    .venv/bin/python scripts/measure_worker_kill.py [--memes ../shared/data/memes] [--limit 200] [--workers 2]

Links the first N memes into a temporary folder, starts `memeindex build` in its own session, waits for its first
checkpoint, `kill -9`s one worker process, then prints how long the build took, its summary, the failed rows
and whether the next build and `memeindex check` succeed. A measurement, not a test: it prints and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_build import link_folder  # noqa: E402
from memefiles import meme_files  # noqa: E402


def session_workers(leader: int) -> list[int]:
    """Processes of the build's session that are not its direct children: the forkserver's workers."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != leader:
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == leader and int(fields[1]) != leader:
                found.append(int(entry.name))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memes", type=Path, default=REPO.parent / "shared" / "data" / "memes")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    files = meme_files(args.memes)[: args.limit]
    memeindex = [sys.executable, "-m", "memeindex"]
    with tempfile.TemporaryDirectory(prefix="memeindex-kill-") as scratch:
        root = link_folder(files, args.memes, Path(scratch) / "memes")
        index = Path(scratch) / "index"
        started = time.monotonic()
        proc = subprocess.Popen(memeindex + ["build", str(root), "--index", str(index), "--no-progress", "--json",
                                             "--workers", str(args.workers)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        while not list((index / "partial").glob("faces-*.parquet")) and proc.poll() is None:
            time.sleep(0.1)
        victims = [pid for pid in session_workers(proc.pid)]
        victim = max(victims) if victims else None  # the newest: a worker, not the forkserver
        if victim:
            os.kill(victim, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            print("the build HUNG (killed after 600 s)")
            return 0
        took = time.monotonic() - started
        print(f"{len(files)} memes, {args.workers} workers; killed worker {victim}; load average "
              f"{os.getloadavg()[0]:.1f}")
        print(f"first build: exit {proc.returncode} in {took:.1f} s")
        summary = json.loads(out) if proc.returncode == 0 else {}
        print("  " + ", ".join(f"{k}={summary.get(k)}" for k in ("indexed", "images", "faces", "failed")))
        for line in err.splitlines():
            if line.startswith("skipping"):
                print("  " + line)
        again = subprocess.run(memeindex + ["build", str(root), "--index", str(index), "--no-progress"],
                               capture_output=True, text=True)
        print(f"next build: exit {again.returncode}: {again.stdout.strip()}")
        check = subprocess.run(memeindex + ["check", "--index", str(index)], capture_output=True, text=True)
        print(f"check: exit {check.returncode}: {check.stdout.strip().splitlines()[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
