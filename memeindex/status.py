"""index_info(): what an index holds, from its facts file and tables (no model is loaded)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from .generation import IndexDir, shown_path


def index_info(index_dir: Path) -> dict:
    idx = IndexDir(index_dir)
    gen = idx.generation()
    facts = gen.facts
    statuses = Counter(gen.images(["status"]).column("status").to_pylist())
    root = facts.get("root")
    return {"index": shown_path(str(idx.path)), "generation": gen.name, "root": root and shown_path(root),
            "model_id": facts.get("model_id"), "detector": facts.get("detector", ""), "dim": facts.get("dim"),
            "faces": facts.get("count"), "images": facts.get("images"), "with_faces": statuses.get("faces", 0),
            "no_face": statuses.get("noface", 0), "failed": statuses.get("failed", 0),
            "index_type": facts.get("index_type", "flat"), "index_factory": (facts.get("index_params") or {}).get(
                "factory", "Flat"), "recall_at_3": facts.get("recall_at_3", 1.0),
            "schema_version": facts.get("schema_version"), "created": facts.get("created"),
            "building": idx.building()}
