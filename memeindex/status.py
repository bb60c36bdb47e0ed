"""index_info(): what an index holds, from its facts file and tables (no model is loaded)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from . import store, vectors
from .indexdir import IndexDir


def index_info(index_dir: Path) -> dict:
    idx = IndexDir(index_dir)
    gen = idx.current()
    facts = vectors.read_facts(gen)
    statuses = Counter(store.read_table(gen / "images.parquet", ["status"]).column("status").to_pylist())
    return {"index": str(idx.path), "generation": gen.name, "root": facts.get("root"),
            "model_id": facts.get("model_id"), "dim": facts.get("dim"), "faces": facts.get("count"),
            "images": facts.get("images"), "with_faces": statuses.get("faces", 0),
            "no_face": statuses.get("noface", 0), "failed": statuses.get("failed", 0),
            "schema_version": facts.get("schema_version"), "created": facts.get("created"),
            "building": idx.partial.exists() and any(idx.partial.glob("*.parquet"))}
