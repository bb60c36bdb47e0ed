"""index_info(): what an index holds, from its facts file and tables (no model is loaded)."""
from __future__ import annotations

from pathlib import Path

from .generation import IndexDir, shown_path


def index_info(index_dir: Path) -> dict:
    import pyarrow.compute as pc

    idx = IndexDir(index_dir)
    gen = idx.generation()
    facts = gen.facts
    # Counted in Arrow over the dictionary-encoded column: no Python string per file (a million of them)
    counted = pc.value_counts(gen.images(["status"], dictionary=["status"]).column("status"))
    statuses = dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()))
    root = facts.get("root")
    return {"index": shown_path(str(idx.path)), "generation": gen.name, "root": root and shown_path(root),
            "model_id": facts.get("model_id"), "detector": facts.get("detector", ""), "dim": facts.get("dim"),
            "faces": facts.get("count"), "images": facts.get("images"), "with_faces": statuses.get("faces", 0),
            "no_face": statuses.get("noface", 0), "failed": statuses.get("failed", 0),
            "index_type": facts.get("index_type", "flat"), "index_factory": (facts.get("index_params") or {}).get(
                "factory", "Flat"), "recall_at_3": facts.get("recall_at_3", 1.0),
            "schema_version": facts.get("schema_version"), "created": facts.get("created"),
            "building": (running := idx.build_running()),
            "interrupted": idx.checkpointed() and not running}  # the next build resumes from its checkpoints
