"""FaceStore: the Parquet tables of an index generation, their schema and their atomic writing.

`faces.parquet` has one row per face (row position = FAISS id); `images.parquet` has one row per file seen,
with its status (faces / noface / failed) and the reason a file failed, so every file is accounted for and a
file without a face is remembered instead of re-scanned. Plain Parquet: pandas, duckdb and polars read it as is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
N_BLENDSHAPES = 52


def faces_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("path", pa.string()),  # relative to the root, posix
        ("sha256", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("frame", pa.int32()),
        ("face", pa.int32()),  # face number within its frame, largest first
        ("box", pa.list_(pa.float32(), 4)),  # x0, y0, x1, y1 in the file's own (EXIF-upright) pixels
        ("score", pa.float32()),
        ("blendshapes", pa.list_(pa.float32(), N_BLENDSHAPES)),
        ("embedding", pa.list_(pa.float32(), dim)),
        ("model_id", pa.string()),
    ], metadata={"memeindex_schema": str(SCHEMA_VERSION)})


IMAGES_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("sha256", pa.string()),
    ("size", pa.int64()),
    ("mtime_ns", pa.int64()),
    ("status", pa.string()),  # faces | noface | failed
    ("faces", pa.int32()),
    ("reason", pa.string()),  # why a file failed; empty otherwise
], metadata={"memeindex_schema": str(SCHEMA_VERSION)})


@dataclass
class FaceRows:
    """Face rows in column form; cheap to concatenate, slice and turn into an Arrow table."""

    table: pa.Table

    @classmethod
    def empty(cls, dim: int) -> "FaceRows":
        return cls(faces_schema(dim).empty_table())

    @classmethod
    def from_records(cls, records: list[dict], dim: int) -> "FaceRows":
        schema = faces_schema(dim)
        if not records:
            return cls(schema.empty_table())
        cols = {name: [r[name] for r in records] for name in schema.names}
        for name in ("box", "blendshapes", "embedding"):
            flat = np.asarray(cols[name], dtype=np.float32).reshape(-1)
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), schema.field(name).type.list_size)
        return cls(pa.table(cols, schema=schema))

    def embeddings(self) -> np.ndarray:
        col = self.table.column("embedding").combine_chunks()
        dim = col.type.list_size
        return np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)

    def __len__(self) -> int:
        return self.table.num_rows


def write_table(table: pa.Table, path: Path) -> None:
    """Write to a temp file beside `path`, fsync, rename: a reader sees the old file or the new, never half."""
    tmp = Path(f"{path}.tmp{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def images_table(rows: list[dict]) -> pa.Table:
    cols = {name: [r[name] for r in rows] for name in IMAGES_SCHEMA.names}
    return pa.table(cols, schema=IMAGES_SCHEMA)
