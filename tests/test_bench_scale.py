"""scripts/bench_scale.py end to end on a small synthetic generation: its JSON keys and that its figures are sane
(it writes through the project's writer and loads through the Searcher, so this also checks they agree)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_scale.py"


def test_bench_scale_json(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--faces", "3000", "--index-type", "ivfsq", "--queries",
                           "50", "--json", "--keep", str(tmp_path / "g")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"faces", "index_type", "load_s", "rss_mb", "search_p50_ms", "search_p95_ms", "recall_at_3"} <= set(out)
    assert out["faces"] == 3000 and out["index_type"] == "ivfsq" and out["factory"].startswith("IVF")
    assert 0.8 <= out["recall_at_3"] <= 1.0 and out["rss_mb"] >= out["rss_before_load_mb"] > 0
    assert out["search_p95_ms"] >= out["search_p50_ms"] > 0
    facts = json.loads(next((tmp_path / "g" / "index").glob("gen-*/index.json")).read_text())
    assert facts["count"] == 3000 and facts["recall_at_3"] == out["built_recall_at_3"]
    # --reuse measures the kept generation again in a fresh process, without writing one: the same index and
    # queries give the same recall, and the write figures are the first run's.
    again = subprocess.run([sys.executable, str(SCRIPT), "--reuse", str(tmp_path / "g"), "--json"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    reused = json.loads(again.stdout.strip().splitlines()[-1])
    assert reused["recall_at_3"] == out["recall_at_3"] and reused["write_s"] == out["write_s"]
    assert len(list((tmp_path / "g" / "index").glob("gen-*"))) == 1


def test_bench_scale_loads_a_generation_written_as_an_older_schema(tmp_path):
    """--schema 2 rewrites the generation as schema 2 wrote it (no run_failures, no dhash): the Searcher loads it
    through the migrations and answers as from the current schema."""
    import pyarrow.parquet as pq

    proc = subprocess.run([sys.executable, str(SCRIPT), "--faces", "2000", "--index-type", "flat", "--queries", "20",
                           "--schema", "2", "--json", "--keep", str(tmp_path / "g")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["schema"] == 2 and out["faces"] == 2000 and out["recall_at_3"] == 1.0
    folder = next((tmp_path / "g" / "index").glob("gen-*"))
    images = pq.read_schema(folder / "images.parquet")
    assert "run_failures" not in images.names and "dhash" not in images.names and "phash" in images.names
    assert images.metadata[b"memeindex_schema"] == b"2"
    assert json.loads((folder / "index.json").read_text())["schema_version"] == 2
