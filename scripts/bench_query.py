#!/usr/bin/env python
"""Query latency p50/p95: cold (`memeindex query FILE --index DIR` as a fresh process) and warm (in-process
`Searcher.search`, models loaded and index open).

    .venv/bin/python scripts/bench_query.py [--memes ../shared/data/memes] [--limit N] [--index DIR]
                                            [--synthetic N] [--query PHOTO ...] [--concurrent T]
                                            [--cold-runs 10] [--warm-runs 50] [--queries 5]

Without --index, an index of the first --limit memes (default 150) is built into a temporary folder first (not
timed); with --synthetic N, a synthetic generation of N faces (scripts/bench_scale.py's, through the project's
writer) stands in for it, so the vector search runs at that size. The queries are the --query photos, else the
first --queries memes in which a face is found (with --synthetic: matplotlib's grace_hopper.jpg). --concurrent T
also times T threads searching at once (the server's case: no OpenMP spin may slow them). A benchmark, not a
test: it prints its figures and exits 0.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memefiles import meme_files  # noqa: E402 (scripts/ is on sys.path when run)


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("memeindex")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from memeindex.cli import main; sys.exit(main())"]


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return (f"p50 {np.percentile(ms, 50):7.1f} ms   p95 {np.percentile(ms, 95):7.1f} ms   "
            f"(min {ms.min():.1f}, max {ms.max():.1f}, n={len(ms)})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memes", type=Path, default=REPO.parent / "shared" / "data" / "memes")
    ap.add_argument("--limit", type=int, default=150, help="memes in the temporary index (0 = all)")
    ap.add_argument("--index", type=Path, help="an existing index dir to query instead of building one")
    ap.add_argument("--cold-runs", type=int, default=10)
    ap.add_argument("--warm-runs", type=int, default=50)
    ap.add_argument("--queries", type=int, default=5, help="distinct query files")
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--synthetic", type=int, metavar="N", help="query a synthetic generation of N faces")
    ap.add_argument("--query", type=Path, action="append", default=[], help="a query photo (repeatable)")
    ap.add_argument("--concurrent", type=int, default=0, metavar="T", help="also time T threads searching at once")
    args = ap.parse_args(argv)

    from memeindex.errors import MemeIndexError
    from memeindex.search import Searcher
    from memeindex.settings import Settings

    files = list(args.query)
    if args.synthetic and not files:
        import matplotlib

        files = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    if not files:
        files = meme_files(args.memes)
    if not files:
        print(f"no images under {args.memes}", file=sys.stderr)
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="memeindex-bench-query-"))
    try:
        index_dir = args.index
        if index_dir is None and args.synthetic:
            from bench_scale import write_synthetic

            index_dir = scratch / "index"
            figures, _, _ = write_synthetic(index_dir, args.synthetic)
            print(f"wrote a synthetic generation of {args.synthetic} faces ({figures['built']['index_type']}) "
                  f"in {figures['write_s']:.1f}s (not timed below)")
        elif index_dir is None:
            from memeindex.indexer import build

            root = scratch / "memes"
            for path in files[: args.limit or None]:
                link = root / path.relative_to(args.memes)
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(path.resolve(), link)  # links, never copies
            index_dir = scratch / "index"
            t0 = time.perf_counter()
            summary = build(root, index_dir, settings=Settings.from_env())
            print(f"built a temporary index of {summary.images} memes, {summary.faces} faces "
                  f"in {time.perf_counter() - t0:.1f}s (not timed below)")

        searcher = Searcher(index_dir, Settings.from_env())
        t0 = time.perf_counter()
        queries = []
        for path in files:  # the first memes with a face are the queries
            try:
                searcher.search(str(path), k=args.k)
            except MemeIndexError:
                continue
            queries.append(path)
            if len(queries) == args.queries:
                break
        first = time.perf_counter() - t0
        if not queries:
            print("no meme with a face found: nothing to query", file=sys.stderr)
            return 1
        print(f"queries: {', '.join(p.name for p in queries)}  (model load + picking them: {first:.2f}s)")

        warm = []
        for i in range(args.warm_runs):
            t0 = time.perf_counter()
            searcher.search(str(queries[i % len(queries)]), k=args.k)
            warm.append(time.perf_counter() - t0)
        together = []
        if args.concurrent:  # vector searches only: FAISS reads are thread-safe, the face models are per thread
            import threading

            embeddings = [searcher.search(str(q), k=args.k).query_face.embedding for q in queries]

            def worker(n):
                for i in range(max(1, args.warm_runs)):
                    t0 = time.perf_counter()
                    searcher.search_vector(embeddings[(n + i) % len(embeddings)], k=args.k)
                    together.append(time.perf_counter() - t0)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.concurrent)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        searcher.close()

        cmd = cli_command()
        cold, failures = [], 0
        for i in range(args.cold_runs):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd + ["query", str(queries[i % len(queries)]), "--index", str(index_dir)],
                                  capture_output=True, text=True)
            cold.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                failures += 1
                if failures == 1:
                    print(f"cold query failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}", file=sys.stderr)

        print(f"embedder {searcher.embedder.model_id}; load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
        print(f"cold CLI  ({' '.join(Path(c).name for c in cmd[:1])} query FILE --index DIR): {percentiles(cold)}"
              + (f"  [{failures} failed]" if failures else ""))
        print(f"warm      (Searcher.search, in-process):       {percentiles(warm)}")
        if together:
            print(f"vector search only, {args.concurrent} threads at once:    {percentiles(together)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
