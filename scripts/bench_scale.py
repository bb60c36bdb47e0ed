#!/usr/bin/env python
"""Scale benchmark: a synthetic generation of N faces, written by the project's own writer, then loaded and searched
in a fresh process (so its peak RSS is the Searcher's alone).

    .venv/bin/python scripts/bench_scale.py --faces N [--index-type auto|flat|hnsw|ivfsq|ivfpq] [--json]
                                            [--queries 200] [--distribution clustered|uniform] [--keep DIR]
                                            [--schema V]
    .venv/bin/python scripts/bench_scale.py --reuse DIR [--json]   # load + search again what --keep DIR wrote

The generation looks like a real one: realistic relative paths and sha256 strings, 1-5 faces per image (frames of
GIFs included), a tenth of the files without a face, near-duplicate templates of 2-4 files, random blendshapes,
and 64-d unit embeddings (the current embedder's dim and model id). `clustered` (default) draws them around 2,000
expression centres, as real expression embeddings cluster; `uniform` draws them uniformly on the sphere, the worst
case for any approximate index (no structure to exploit).

Reported: generation write time (tables + FAISS index incl. its build-time recall measurement), then, in a fresh
process: load time (`Searcher(index_dir)`: facts, FAISS index, columns, embedder), peak RSS (VmHWM), search
p50/p95 of `Searcher.search_vector` (one query vector, k=3: FAISS + best face per template + Match), and recall@3
of the index against exact search for fresh query vectors. `--schema V` rewrites the generation's tables as an
older schema wrote them (without the columns later `generation.MIGRATIONS` steps add; facts and table metadata say
V), so the load measures what reading an index written by an older memeindex costs (its migrations run at each
load). A benchmark, not a test: it prints figures, exits 0.
"""
from __future__ import annotations

import argparse
import json
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

from benchkit import expression_vectors, status_mb  # noqa: E402 (scripts/ is on sys.path when run)

WORDS = ("distracted boyfriend drake hotline bling two buttons change my mind surprised pikachu this is fine "
         "woman yelling at cat expanding brain success kid hide the pain harold roll safe disaster girl "
         "mocking spongebob awkward look monkey puppet grumpy cat bad luck brian ancient aliens").split()


def synthetic_tables(n_faces: int, dim: int, model_id: str, distribution: str, seed: int = 0):
    """(faces table, images table, embeddings) of a generation with `n_faces` faces, in the current schema."""
    import pyarrow as pa

    from memeindex import generation as gen

    rng = np.random.default_rng(seed)
    per_image = rng.integers(1, 6, size=n_faces)  # 1-5 faces per file with faces
    per_image = per_image[np.cumsum(per_image) <= n_faces]
    if per_image.sum() < n_faces:
        per_image = np.append(per_image, n_faces - per_image.sum())
    n_with = len(per_image)
    n_files = n_with + n_with // 9  # a tenth of the files hold no face
    status = np.array(["faces"] * n_with + ["noface"] * (n_files - n_with), dtype=object)
    counts = np.concatenate([per_image, np.zeros(n_files - n_with, np.int64)]).astype(np.int32)
    order = rng.permutation(n_files)  # faceless files spread through the folder
    status, counts = status[order], counts[order]

    words = np.array(WORDS)
    sites = np.array(["imgflip", "reddit/r-memes", "twitter", "archive/2019", "chat-stickers"])
    picks = rng.integers(0, len(words), size=(n_files, 3))
    paths = [f"{sites[i % len(sites)]}/{2015 + i % 10}/{1 + i % 12:02d}/{words[a]}-{words[b]}-{words[c]}-{i:07d}."
             f"{('jpg', 'png', 'gif', 'webp')[i % 4]}" for i, (a, b, c) in enumerate(picks)]
    shas = [os.urandom(32).hex() for _ in range(n_files)]
    ids = [s[:16] for s in shas]
    # Near-duplicate templates: runs of 2-4 files share the smallest id among them; the rest are their own.
    templates = list(ids)
    i = 0
    while i < n_files:
        size = int(rng.integers(2, 5)) if rng.random() < 0.1 else 1
        members = range(i, min(i + size, n_files))
        first = min(ids[m] for m in members)
        for m in members:
            templates[m] = first
        i += size
    sizes = rng.integers(20_000, 2_000_000, size=n_files)
    mtimes = 1_600_000_000_000_000_000 + rng.integers(0, 10**17, size=n_files)
    images = pa.table({
        "path": paths, "path_bytes": pa.nulls(n_files, pa.binary()), "sha256": shas, "size": sizes,
        "mtime_ns": mtimes, "status": list(status), "faces": counts, "reason": [""] * n_files,
        "phash": [os.urandom(8).hex() for _ in range(n_files)], "dhash": [os.urandom(8).hex() for _ in range(n_files)],
        "template": templates,
        "detector": ["1"] * n_files, "run_failures": pa.array(np.zeros(n_files, np.int32))})
    images = gen.sort_images(images.cast(gen.IMAGES_SCHEMA))

    # Face rows, in the writer's order (path, frame, face).
    status_sorted = images.column("status").to_numpy(zero_copy_only=False)
    counts_sorted = images.column("faces").to_numpy()
    file_of_face = np.repeat(np.arange(n_files), counts_sorted)
    face_no = np.concatenate([np.arange(c) for c in counts_sorted if c]) if n_faces else np.zeros(0, np.int64)
    frames = np.where(np.char.endswith(np.array(images.column("path").to_pylist(), dtype=object)[file_of_face]
                                       .astype(str), ".gif"), face_no % 3, 0).astype(np.int32)
    assert (status_sorted[counts_sorted > 0] == "faces").all()

    emb = expression_vectors(rng, n_faces, dim, distribution)
    x0 = rng.uniform(0, 800, n_faces).astype(np.float32)
    y0 = rng.uniform(0, 600, n_faces).astype(np.float32)
    side = rng.uniform(24, 300, n_faces).astype(np.float32)
    boxes = np.stack([x0, y0, x0 + side, y0 + side], axis=1).reshape(-1)
    shapes = rng.random((n_faces, gen.N_BLENDSHAPES), dtype=np.float32).reshape(-1)

    def rep(col):
        return images.column(col).take(pa.array(file_of_face))

    schema = gen.faces_schema(dim)
    faces = pa.table({
        "path": rep("path"), "path_bytes": pa.nulls(n_faces, pa.binary()), "sha256": rep("sha256"),
        "size": rep("size"), "mtime_ns": rep("mtime_ns"), "frame": frames, "face": face_no.astype(np.int32),
        "box": pa.FixedSizeListArray.from_arrays(pa.array(boxes), 4),
        "score": rng.uniform(0.5, 1.0, n_faces).astype(np.float32),
        "blendshapes": pa.FixedSizeListArray.from_arrays(pa.array(shapes), gen.N_BLENDSHAPES),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim),
        "model_id": pa.array([model_id] * n_faces, pa.string()), "template": rep("template"),
        "detector": rep("detector")}, schema=schema)
    return faces, images, emb


def query_vectors(n: int, dim: int, distribution: str, seed: int = 99) -> np.ndarray:
    """Fresh query vectors from the same distribution as the stored faces (none of them is stored)."""
    return expression_vectors(np.random.default_rng(seed), n, dim, distribution)


def write_synthetic(index_dir: Path, faces: int, index_type: str = "auto", distribution: str = "clustered"):
    """Write and publish a synthetic generation of `faces` faces at `index_dir` through the project's writer.

    Returns (figures, embeddings, dim)."""
    from memeindex import generation as gen
    from memeindex import vectors
    from memeindex.embedders import get_embedder
    from memeindex.settings import Settings

    embedder = get_embedder(Settings.from_env())
    model_id, dim = embedder.model_id, embedder.dim
    embedder.close()
    t0 = time.perf_counter()
    faces_t, images, emb = synthetic_tables(faces, dim, model_id, distribution)
    make_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    built = vectors.build_index(emb, dim, index_type)
    index_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen.write_generation(gen.IndexDir(index_dir), faces_t, images, built.index, model_id=model_id, dim=dim,
                         detector="1", root=str(Path(index_dir).parent / "memes"), summary={}, **built.facts)
    tables_s = time.perf_counter() - t0
    figures = {"images": images.num_rows, "synth_s": round(make_s, 2), "index_build_s": round(index_s, 2),
               "write_s": round(index_s + tables_s, 2), "built": built.facts,
               "disk_mb": round(sum(f.stat().st_size for f in Path(index_dir).rglob("*") if f.is_file()) / 2**20, 1)}
    return figures, emb, dim


def as_schema(index_dir: Path, version: int) -> None:
    """Rewrite the published generation at `index_dir` as schema `version` wrote it (version >= 2): each table
    without the columns that the migration steps from `version` up add, its metadata and the facts saying
    `version`. Which columns a step adds is asked of the step itself (generation.MIGRATIONS)."""
    import pyarrow.parquet as pq

    from memeindex import generation as gen

    g = gen.IndexDir(index_dir).generation()
    for path, kind in ((g.images_path, "images"), (g.faces_path, "faces")):
        table = pq.read_table(path)
        for step in range(gen.SCHEMA_VERSION - 1, version - 1, -1):
            added = [c for c in table.column_names
                     if c in gen.MIGRATIONS[step](table.drop_columns([c]), kind).column_names]
            table = table.drop_columns(added)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               gen._META: str(version).encode()})
        pq.write_table(table, path, compression="zstd", row_group_size=65536)
    facts = json.loads(g.facts_path.read_text())
    g.facts_path.write_text(json.dumps({**facts, "schema_version": version}, indent=2) + "\n")


def write(args, scratch: Path) -> dict:
    """Write the generation and the queries' exact top-3; returns the write figures."""
    import faiss

    figures, emb, dim = write_synthetic(scratch / "index", args.faces, args.index_type, args.distribution)
    if args.schema is not None:
        as_schema(scratch / "index", args.schema)
        figures["schema"] = args.schema
    queries = query_vectors(args.queries, dim, args.distribution)
    _, exact = faiss.knn(queries, emb, 3)
    np.savez(scratch / "queries.npz", queries=queries, exact=exact)
    (scratch / "written.json").write_text(json.dumps(figures))  # what --reuse reports as the write figures
    return figures


def measure(scratch: Path) -> dict:
    """In a fresh process: load the generation through Searcher, search, and read this process's peak RSS."""
    from memeindex import vectors
    from memeindex.search import Searcher
    from memeindex.settings import Settings

    data = np.load(scratch / "queries.npz")
    queries, exact = data["queries"], data["exact"]
    base_mb = status_mb("VmRSS")
    t0 = time.perf_counter()
    searcher = Searcher(scratch / "index", Settings.from_env())
    load_s = time.perf_counter() - t0
    gen = searcher.loaded_generation
    for q in queries[:5]:  # warm-up: first-touch of pages and code
        searcher.search_vector(q, k=3)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        searcher.search_vector(q, k=3)
        times.append(time.perf_counter() - t0)
    _, found = vectors.search(gen.index, queries, 3)
    recall = float(np.mean([len(set(e.tolist()) & set(f.tolist())) / 3 for e, f in zip(exact, found)]))
    ms = np.array(times) * 1000
    return {"load_s": round(load_s, 3), "rss_mb": round(status_mb("VmHWM"), 1),
            "rss_now_mb": round(status_mb("VmRSS"), 1), "rss_before_load_mb": round(base_mb, 1),
            "search_p50_ms": round(float(np.percentile(ms, 50)), 3),
            "search_p95_ms": round(float(np.percentile(ms, 95)), 3), "recall_at_3": round(recall, 4),
            "index_type": gen.facts.get("index_type", "flat"), "faces": int(gen.index.ntotal)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=10_000)
    ap.add_argument("--index-type", default="auto")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--distribution", choices=("clustered", "uniform"), default="clustered")
    ap.add_argument("--keep", type=Path, help="write the generation here and keep it (default: a temp folder)")
    ap.add_argument("--reuse", type=Path, help="measure a generation an earlier --keep DIR run wrote, without "
                    "writing one (its write figures are that run's)")
    ap.add_argument("--schema", type=int, help="write the generation as this older schema (2 or up) wrote it")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the fresh process's half
    args = ap.parse_args(argv)

    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    scratch = args.reuse or args.keep or Path(tempfile.mkdtemp(prefix="memeindex-bench-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        written = json.loads((scratch / "written.json").read_text()) if args.reuse else write(args, scratch)
        proc = subprocess.run([sys.executable, __file__, "--measure", str(scratch)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        measured = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if args.keep is None and args.reuse is None:
            shutil.rmtree(scratch, ignore_errors=True)
    built = written.pop("built")
    out = {"faces": measured.pop("faces"), "index_type": measured.pop("index_type"), **measured,
           "factory": built["index_params"]["factory"], "built_recall_at_3": built["recall_at_3"],
           "search_params": {k: v for k, v in built["index_params"].items() if k in ("nprobe", "efSearch")},
           "distribution": args.distribution, **written}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['faces']:,} faces in {out['images']:,} files ({args.distribution}); index {out['index_type']} "
              f"({out['factory']}, {out['search_params'] or 'exact'}); on disk {out['disk_mb']} MB"
              + (f"; written as schema {out['schema']}" if out.get("schema") else ""))
        print(f"write     {out['write_s']:.2f} s (index build {out['index_build_s']:.2f} s incl. recall@3 "
              f"{out['built_recall_at_3']:.3f} on held-out faces)")
        print(f"load      {out['load_s']:.3f} s   peak RSS {out['rss_mb']:.0f} MB "
              f"(before load {out['rss_before_load_mb']:.0f} MB, after searches {out['rss_now_mb']:.0f} MB)")
        print(f"search    p50 {out['search_p50_ms']:.3f} ms   p95 {out['search_p95_ms']:.3f} ms   "
              f"recall@3 {out['recall_at_3']:.3f} vs exact ({args.queries} fresh queries); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
