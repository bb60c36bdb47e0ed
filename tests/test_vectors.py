"""Index types as data (build, measured recall, refusal), thread pinning, and the lean loaded generation.

Unit tests on random vectors and tables written by the project's own writers; the end-to-end CLI test with
`--index-type` on real images lives in test_cli.py.
"""
from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from memeindex import generation, vectors
from memeindex.errors import IndexMismatch, IndexTypeUnsupported


def clustered(n, dim=32, centres=40, seed=0):
    """Unit vectors around a few dozen fixed centres (expression embeddings cluster); `seed` draws new members."""
    c = np.random.default_rng(1234).standard_normal((centres, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(xb, xq, k):
    d2 = ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
    return np.argsort(d2, axis=1)[:, :k]


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfsq", "ivfpq"])
def test_each_type_builds_records_its_recall_and_reads_back(tmp_path, index_type):
    xb = clustered(3000)
    built = vectors.build_index(xb, 32, index_type)
    facts = built.facts
    assert facts["index_type"] == index_type and "index_requested" not in facts
    params = facts["index_params"]
    assert params["factory"] == {"flat": "Flat", "hnsw": "HNSW32,Flat"}.get(index_type, params["factory"])
    if index_type.startswith("ivf"):
        assert params["factory"].startswith(f"IVF{params['nlist']},") and 1 <= params["nprobe"] <= params["nlist"]

    # The recorded recall agrees with one measured here, independently, on queries the build never saw.
    xq = clustered(150, seed=7)
    truth = exact_top(xb, xq, 3)
    vectors.write_index(built.index, tmp_path / generation.INDEX_FILE)
    generation.write_facts(tmp_path, model_id="fake-v1", dim=32, count=len(xb), **facts)
    index = generation.Generation(tmp_path).read_index()  # nprobe / efSearch come back from index.json
    _, found = vectors.search(index, xq, 3)
    recall = np.mean([len(set(t) & set(f)) / 3 for t, f in zip(truth, found)])
    assert abs(recall - facts["recall_at_3"]) < 0.1, (recall, facts)
    if index_type == "flat":
        assert facts["recall_at_3"] == 1.0 and recall == 1.0
    elif index_type in ("hnsw", "ivfsq"):
        assert recall >= 0.9  # approximate, but close to exact on clustered data
    else:
        assert 0.2 < recall < 1.0  # 4-bit PQ: the smallest index, and visibly lossy


def test_auto_and_small_collections():
    assert vectors.resolve_type("auto", 500) == "flat"
    assert vectors.resolve_type("auto", vectors.AUTO_EXACT_MAX + 1) == "ivfsq"
    built = vectors.build_index(clustered(300), 32, "ivfsq")  # too few faces to train inverted lists
    assert built.facts["index_type"] == "flat" and built.facts["index_requested"] == "ivfsq"
    assert built.index.ntotal == 300
    empty = vectors.build_index(np.zeros((0, 32), np.float32), 32, "hnsw")
    assert empty.index.ntotal == 0 and vectors.search(empty.index, clustered(1), 3)[1].shape == (1, 0)


def test_unknown_types_are_refused(tmp_path):
    with pytest.raises(IndexTypeUnsupported, match="unknown index type 'diskann'"):
        vectors.build_index(clustered(10), 32, "diskann")
    built = vectors.build_index(clustered(50), 32, "flat")
    vectors.write_index(built.index, tmp_path / generation.INDEX_FILE)
    generation.write_facts(tmp_path, model_id="fake-v1", dim=32, count=50, **{**built.facts, "index_type": "diskann"})
    g = generation.Generation(tmp_path)
    with pytest.raises(IndexMismatch, match="type 'diskann'.*rebuild"):  # a subclass: same exit code and message
        g.check("fake-v1", 32)
    with pytest.raises(IndexTypeUnsupported):
        g.read_index()
    old = {k: v for k, v in g.facts.items() if k != "index_type"}  # written before index types: flat
    generation.check_facts(old, "fake-v1", 32, tmp_path)


class _ThreadProbe:
    """A stand-in index that records how many OpenMP threads FAISS would use when it is searched."""

    ntotal = 10

    def __init__(self):
        self.seen = []

    def search(self, x, k):
        import faiss

        self.seen.append(faiss.omp_get_max_threads())
        return np.zeros((len(x), k), np.float32), np.zeros((len(x), k), np.int64)


def test_single_searches_run_on_one_thread_batches_on_all():
    import faiss

    default = faiss.omp_get_max_threads()
    probe = _ThreadProbe()
    vectors.search(probe, clustered(1), 3)
    vectors.search(probe, clustered(vectors.SMALL_BATCH), 3)
    vectors.search(probe, clustered(vectors.SMALL_BATCH + 1), 3)
    assert probe.seen == [1, 1, default]
    assert faiss.omp_get_max_threads() == default  # restored


def test_pinning_is_per_thread():
    """One thread's pinned search never changes the thread count another thread's batch work sees."""
    import faiss

    default = faiss.omp_get_max_threads()
    inside, release, seen = threading.Event(), threading.Event(), {}

    def pinned():
        with vectors.omp_threads(1):
            seen["pinned"] = faiss.omp_get_max_threads()
            inside.set()
            release.wait(5)

    t = threading.Thread(target=pinned)
    t.start()
    inside.wait(5)
    seen["other"] = faiss.omp_get_max_threads()
    release.set()
    t.join()
    assert seen == {"pinned": 1, "other": default}


def test_loaded_generation_holds_columns_not_rows(tmp_path):
    """Several faces per image, files without faces, a failed one, a template of three files and an odd name:
    every face maps back to its own file, id, template and variants."""
    from fakes import FAKE_MODEL_ID, write_fake_generation
    from memeindex.generation import FaceRow, ImageRow
    from memeindex.search import LoadedGeneration

    dim, rng, faces, images = 8, np.random.default_rng(3), [], []
    for i in range(30):
        sha = hashlib.sha256(f"file {i}".encode()).hexdigest()
        path = f"memes/{2020 + i % 3}/template {i:03d} \u00e9.jpg" if i != 11 else "odd/b\udce9d name.jpg"
        status, n = ("failed", 0) if i == 5 else ("noface", 0) if i % 7 == 0 else ("faces", 1 + i % 3)
        template = "t-shared" if i in (3, 4, 6) else ""
        images.append(ImageRow(path, sha, 1, i, status, n, "broken" if status == "failed" else "", "", template))
        for f in range(n):
            v = rng.standard_normal(dim).astype(np.float32)
            faces.append(FaceRow(path, sha, 1, i, f % 2, f, (i, f, i + 10, f + 10), 0.9,
                                 rng.random(52).astype(np.float32), v / np.linalg.norm(v), FAKE_MODEL_ID, template))
    folder = write_fake_generation(tmp_path / "index", images, faces, dim)

    g = LoadedGeneration(folder, FAKE_MODEL_ID, dim)
    assert isinstance(g.face_file, np.ndarray) and len(g.face_file) == len(faces)
    rows = generation.Generation(folder).faces()
    for i, (path, sha, frame, box, shapes) in enumerate(zip(
            rows.column("path").to_pylist(), rows.column("sha256").to_pylist(), rows.column("frame").to_pylist(),
            rows.column("box").to_pylist(), rows.column("blendshapes").to_pylist())):
        assert g.path(i) == path and g.meme_id(i) == sha[:16]
        record = g.face_row(i)
        assert record["frame"] == frame and record["box"].tolist() == box
        assert np.abs(record["blendshapes"] / 255.0 - np.asarray(shapes)).max() <= 0.5 / 255 + 1e-6
    # A generation written before faces.rows existed: the same records, derived from faces.parquet at load.
    written = [g.face_row(i).tobytes() for i in range(len(faces))]
    (folder / generation.FACE_ROWS_FILE).unlink()
    old = LoadedGeneration(folder, FAKE_MODEL_ID, dim)
    assert [old.face_row(i).tobytes() for i in range(len(faces))] == written
    for img in images:
        if img.status != "failed":
            assert g.file(img.sha256[:16]) == img.path  # noface files too; the odd name exactly as os.open needs
    with pytest.raises(KeyError):
        g.file("0123456789abcdef")
    # Template members are variants of each other (the matched file itself left out); an ungrouped file has none.
    row3 = [i for i in range(len(faces)) if "template 003" in g.path(i)][0]
    listed, total = g.variants(row3)
    assert [v.path for v in listed] == sorted(images[k].path for k in (4, 6)) and total == 2
    assert g.variants(row3, listed=1) == (listed[:1], 2)  # a capped list still counts them all
    assert g.template(row3) == g.template([i for i in range(len(faces)) if "template 004" in g.path(i)][0])
    row8 = [i for i in range(len(faces)) if "template 008" in g.path(i)][0]
    assert g.variants(row8) == ([], 0) and g.template(row8) != g.template(row3)
