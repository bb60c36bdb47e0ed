"""FAISS flat-L2 index over the face embeddings (id = Parquet row position).

File names and the facts beside the index live in generation.py; this module only makes, reads, writes and
searches FAISS indexes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def build_index(vectors: np.ndarray, dim: int):
    import faiss

    index = faiss.IndexFlatL2(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def write_index(index, path: Path) -> None:
    import faiss

    tmp = Path(f"{path}.tmp{os.getpid()}")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def read_index(path: Path):
    import faiss

    return faiss.read_index(str(path))


def search(index, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, ids) with true L2 distances (FAISS returns squared ones)."""
    k = min(k, index.ntotal)
    if k <= 0:
        return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
    d2, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(vectors), -1), k)
    return np.sqrt(np.maximum(d2, 0.0)), ids
