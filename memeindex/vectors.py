"""FAISS flat-L2 index over the face embeddings (id = Parquet row position) and the JSON of its facts.

The facts file says which model made the vectors; loading refuses a mismatch rather than mixing two models.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .errors import IndexMismatch
from .store import SCHEMA_VERSION

INDEX_FILE = "index.faiss"
FACTS_FILE = "index.json"


def build_index(vectors: np.ndarray, dim: int):
    import faiss

    index = faiss.IndexFlatL2(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def write_index(index, folder: Path) -> None:
    import faiss

    tmp = folder / f"{INDEX_FILE}.tmp{os.getpid()}"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, folder / INDEX_FILE)


def read_index(folder: Path):
    import faiss

    return faiss.read_index(str(folder / INDEX_FILE))


def write_facts(folder: Path, **facts) -> dict:
    facts = {"schema_version": SCHEMA_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             **facts}
    tmp = folder / f"{FACTS_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(facts, indent=2) + "\n")
    os.replace(tmp, folder / FACTS_FILE)
    return facts


def read_facts(folder: Path) -> dict:
    return json.loads((folder / FACTS_FILE).read_text())


def check_facts(facts: dict, model_id: str | None, dim: int | None, where: Path) -> None:
    """Refuse an index of another schema or model: its vectors mean nothing to this embedder."""
    hint = "rebuild it: memeindex build IMAGES_DIR --rebuild"
    if facts.get("schema_version") != SCHEMA_VERSION:
        raise IndexMismatch(f"index {where} has schema {facts.get('schema_version')}, this memeindex reads "
                            f"schema {SCHEMA_VERSION}: {hint}")
    if model_id is not None and facts.get("model_id") != model_id:
        raise IndexMismatch(f"index {where} was built with model {facts.get('model_id')}, the current model is "
                            f"{model_id}: {hint}")
    if dim is not None and facts.get("dim") != dim:
        raise IndexMismatch(f"index {where} holds {facts.get('dim')}-d vectors, the model makes {dim}-d: {hint}")


def search(index, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, ids) with true L2 distances (FAISS returns squared ones)."""
    k = min(k, index.ntotal)
    if k <= 0:
        return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
    d2, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(vectors), -1), k)
    return np.sqrt(np.maximum(d2, 0.0)), ids
