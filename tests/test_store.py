"""The Parquet store and the FAISS index, with a fake embedder (the pipeline's own tests use the real one)."""
import numpy as np
import pyarrow.parquet as pq
import pytest

from memeindex import store, vectors
from memeindex.errors import IndexMismatch


def _records(n, dim, rng):
    out = []
    for i in range(n):
        v = rng.normal(size=dim).astype(np.float32)
        out.append({"path": f"dir/m{i}.jpg", "sha256": f"{i:064x}", "size": 100 + i, "mtime_ns": 10**18 + i,
                    "frame": 0, "face": 0, "box": [1, 2, 3 + i, 4 + i], "score": 0.9,
                    "blendshapes": rng.random(52).astype(np.float32), "embedding": v / np.linalg.norm(v),
                    "model_id": "fake-v1"})
    return out


def test_round_trip_and_plain_parquet(tmp_path):
    rng = np.random.default_rng(0)
    recs = _records(5, 16, rng)
    rows = store.FaceRows.from_records(recs, 16)
    store.write_table(rows.table, tmp_path / "faces.parquet")
    t = pq.read_table(tmp_path / "faces.parquet")  # a plain Parquet reader, no memeindex code
    assert t.num_rows == 5 and t.schema.field("embedding").type.list_size == 16
    assert t.column("path").to_pylist() == [r["path"] for r in recs]
    np.testing.assert_allclose(store.FaceRows(t).embeddings(), np.stack([r["embedding"] for r in recs]), rtol=1e-6)
    assert not list(tmp_path.glob("*.tmp*"))


def test_faiss_ids_are_row_positions(tmp_path):
    rng = np.random.default_rng(1)
    rows = store.FaceRows.from_records(_records(20, 8, rng), 8)
    emb = rows.embeddings()
    index = vectors.build_index(emb, 8)
    vectors.write_index(index, tmp_path)
    dist, ids = vectors.search(vectors.read_index(tmp_path), emb[[7, 13]], 1)
    assert ids[:, 0].tolist() == [7, 13] and np.allclose(dist, 0, atol=1e-3)


def test_facts_refuse_another_model(tmp_path):
    vectors.write_facts(tmp_path, model_id="fake-v1", dim=8, count=0)
    facts = vectors.read_facts(tmp_path)
    vectors.check_facts(facts, "fake-v1", 8, tmp_path)
    with pytest.raises(IndexMismatch, match="rebuild"):
        vectors.check_facts(facts, "fake-v2", 8, tmp_path)
    with pytest.raises(IndexMismatch, match="rebuild"):
        vectors.check_facts({**facts, "schema_version": 99}, "fake-v1", 8, tmp_path)
