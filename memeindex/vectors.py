"""FAISS over the face embeddings (id = Parquet row position): index types as data, thread-pinned search.

An index type is a name (`flat`, `hnsw`, `ivfsq`, `ivfpq`; `auto` picks one by collection size) that expands to a
FAISS `index_factory` string plus search parameters, autofaiss-style. The build records the type, its parameters
and the recall@3 against exact search it measured on held-out faces in the facts (generation.py owns the file);
a reader refuses a type it cannot honour rather than guess. File names live in generation.py.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import IndexTypeUnsupported

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivfsq", "ivfpq")  # what this reader honours; `auto` resolves to one of them
# Exact search up to this many faces: one-thread flat search of 64-d faces took 0.3 ms at 10k and 12 ms at 100k on
# this (busy, 2-core) machine (scripts/bench_scale.py); exact has recall 1 and nothing to train. Above it, an IVF
# index with 8-bit scalar quantisation: 4x smaller than float vectors, ~1 ms at 1M faces, recall@3 ~0.97.
AUTO_EXACT_MAX = 50_000
TRAIN_PER_LIST = 50  # k-means points per inverted list (FAISS would take up to 256: minutes on 2 cores at 1M)
IVF_MIN_FACES = 1_000  # below this an IVF index has too few points to train its lists and saves nothing
SEARCH_PARAMS = ("nprobe", "efSearch")  # index_params keys applied at load time (the rest describe the build)
RECALL_K = 3
RECALL_QUERIES = 256  # held-out faces that measure recall@3 against exact search at build time
TARGET_RECALL = 0.97  # an approximate index probes more until its sampled recall@3 reaches this (or stops rising)
RECALL_SLACK = 0.01  # otherwise the cheapest setting within this of the best recall measured
SMALL_BATCH = 16  # searches of at most this many vectors run on the calling thread alone


@dataclass
class BuiltIndex:
    index: object  # a faiss.Index
    facts: dict = field(default_factory=dict)  # index_type, index_params, recall_at_3: merged into index.json


def _faiss():
    import faiss

    return faiss


@contextmanager
def omp_threads(n: int):
    """Run FAISS calls in this block on `n` OpenMP threads (0 = leave as is).

    OpenMP (libgomp, LLVM libomp) keeps the thread count per calling thread, so a server thread that pins its own
    searches to one thread leaves batch work in other threads (eval) on all cores, and never races another.
    """
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    if n <= 0 or n == before:
        yield
        return
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def resolve_type(index_type: str, n: int) -> str:
    """The concrete index type for `n` faces: `auto` by size; an IVF type falls back to flat on tiny collections."""
    if check_requested_type(index_type) == "auto":
        return "flat" if n <= AUTO_EXACT_MAX else "ivfsq"
    if index_type.startswith("ivf") and n < IVF_MIN_FACES:
        log.info("%d faces are too few for an %s index: using exact search", n, index_type)
        return "flat"
    return index_type


def check_requested_type(index_type: str) -> str:
    """`index_type` if a build can make it (checked before any work starts), else IndexTypeUnsupported."""
    if index_type != "auto" and index_type not in INDEX_TYPES:
        raise IndexTypeUnsupported(f"unknown index type {index_type!r}: choose one of auto, {', '.join(INDEX_TYPES)}")
    return index_type


def requested_type(facts: dict) -> str:
    """The index type a generation's build was asked for (`auto`, say, where it resolved to `flat`)."""
    return facts.get("index_requested", facts.get("index_type", "flat"))


def _nlist(n: int) -> int:
    """Inverted lists: a power of two near sqrt(n) (1024 at a million: ~1k faces a list, so a probe of a few dozen
    lists is ~0.3 ms), with at least 39 training points per list (FAISS's floor)."""
    want = 2 ** round(math.log2(max(math.sqrt(n), 1.0)))
    return int(max(1, min(want, 65536, 2 ** int(math.log2(max(n // 39, 1))))))


def factory_string(index_type: str, n: int, dim: int) -> tuple[str, dict]:
    """(FAISS index_factory string, build parameters) for a concrete index type."""
    if index_type == "flat":
        return "Flat", {}
    if index_type == "hnsw":
        return "HNSW32,Flat", {"efConstruction": 80}
    nlist = _nlist(n)
    if index_type == "ivfsq":
        return f"IVF{nlist},SQ8", {"nlist": nlist}
    if index_type == "ivfpq":
        # 2 dimensions per 4-bit sub-quantiser (fast-scan, residuals): dim/4 bytes a face, the smallest index, and
        # the least accurate. 8-bit PQ trains for minutes on 2 cores and, at 64-d, is no better than SQ8 for size.
        m = dim // 2 if dim % 2 == 0 else dim
        return f"IVF{nlist},PQ{m}x4fsr", {"nlist": nlist}
    raise IndexTypeUnsupported(f"unknown index type {index_type!r}")


def build_index(vectors: np.ndarray, dim: int, index_type: str = "auto", seed: int = 0) -> BuiltIndex:
    """An index of `index_type` over `vectors` (row i = id i), tuned and measured: recall@3 vs exact search."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
    n = len(vectors)
    concrete = resolve_type(index_type, n)
    factory, params = factory_string(concrete, n, dim)
    index = faiss.index_factory(dim, factory)
    if concrete == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = params["efConstruction"]
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        train = vectors if n <= TRAIN_PER_LIST * params["nlist"] else \
            vectors[np.sort(rng.choice(n, TRAIN_PER_LIST * params["nlist"], replace=False))]
        index.train(train)
    recall, held_out = 1.0, min(RECALL_QUERIES, n // 10) if concrete != "flat" else 0
    if held_out:
        # Held-out faces measure recall as queries the index has never seen (a stored face as its own query flatters
        # a graph index), then join it. Ids stay row positions: an IVF index stores ids, so its sample is random;
        # a graph numbers faces as they come, so it holds back the last ones (the end of the path order).
        if concrete.startswith("ivf"):
            held = np.zeros(n, bool)
            held[np.random.default_rng(seed + 1).choice(n, held_out, replace=False)] = True
        else:
            held = np.arange(n) >= n - held_out
        rest, sample = np.flatnonzero(~held), np.flatnonzero(held)
        _add(index, vectors, rest)
        recall, search_params = _tune(index, vectors, rest, sample, concrete)
        params.update(search_params)
        _add(index, vectors, sample)
    elif n:
        index.add(vectors)
    if concrete != "flat":
        params["recall_queries"] = held_out  # 0: too few faces to hold any back (a search that small is exhaustive)
    facts = {"index_type": concrete, "index_params": {"factory": factory, **params},
             "recall_at_3": round(float(recall), 4)}
    if index_type != concrete:
        facts["index_requested"] = index_type
    log.info("built a %s index (%s) over %d faces, recall@3 %.3f", concrete, factory, n, recall)
    return BuiltIndex(index, facts)


def _add(index, vectors: np.ndarray, rows: np.ndarray) -> None:
    """Add vectors[rows] under their row numbers (a graph index takes them in order: rows must continue it)."""
    if index.ntotal == rows[0] and (np.diff(rows) == 1).all():
        index.add(vectors[rows[0]:rows[-1] + 1])
    else:
        index.add_with_ids(np.ascontiguousarray(vectors[rows]), rows.astype(np.int64))


def _tune(index, vectors: np.ndarray, stored: np.ndarray, queries: np.ndarray, concrete: str) -> tuple[float, dict]:
    """Raise nprobe / efSearch until recall@3 for vectors[queries] among vectors[stored] (rows) reaches
    TARGET_RECALL or stops improving."""
    faiss = _faiss()
    _, nearest = faiss.knn(np.ascontiguousarray(vectors[queries]), np.ascontiguousarray(vectors[stored]), RECALL_K)
    exact = stored[nearest]
    if concrete == "hnsw":
        name, values = "efSearch", [16, 32, 64, 128, 256, 512]
    else:
        nlist = faiss.extract_index_ivf(index).nlist
        name, values = "nprobe", [p for p in (2 ** i for i in range(20)) if p < nlist] + [nlist]
        values = [p for p in values if p >= max(1, nlist // 256)]
    space = faiss.ParameterSpace()
    measured = []
    for value in values:
        space.set_index_parameter(index, name, value)
        _, found = index.search(np.ascontiguousarray(vectors[queries]), RECALL_K)
        measured.append((recall_at_k(exact, found), value))
        if measured[-1][0] >= TARGET_RECALL:
            break
    # Past a point more probing buys little (8-bit codes cap recall a little below 1): the cheapest setting within
    # RECALL_SLACK of the best measured, as long as the target was not reached sooner.
    best = max(r for r, _ in measured)
    recall, value = next((r, v) for r, v in measured if r >= min(TARGET_RECALL, best - RECALL_SLACK))
    space.set_index_parameter(index, name, value)
    return recall, {name: int(value)}


def recall_at_k(exact: np.ndarray, found: np.ndarray) -> float:
    """Mean share of each query's exact k nearest ids that the index returned among its k."""
    if not len(exact):
        return 1.0
    k = exact.shape[1]
    return sum(len(set(e.tolist()) & set(f.tolist()) - {-1}) for e, f in zip(exact, found)) / (k * len(exact))


def write_index(index, path: Path) -> None:
    """Write `index` to `path` as it is (generation.write_generation writes it through a temp file + rename).
    Through a Python file, as read_index reads it: FAISS takes a path only as UTF-8 text, which an index folder
    named in other bytes (possible on Linux) is not."""
    faiss = _faiss()
    with open(path, "wb") as f:
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))


def read_index(path: Path, facts: dict | None = None):
    """The index at `path` with the search parameters of its `facts` applied; refuses a type it cannot honour.
    A file FAISS cannot read (truncated, overwritten) raises FAISS's RuntimeError: the generation reports it as
    damage (generation.Generation.read_index), since the type was checked from the facts first."""
    faiss = _faiss()
    facts = facts or {}
    check_index_type(facts, Path(path).parent.parent)
    with open(path, "rb") as f:
        index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
    space = faiss.ParameterSpace()
    for name, value in (facts.get("index_params") or {}).items():
        if name in SEARCH_PARAMS:
            space.set_index_parameter(index, name, value)
    return index


REBUILD_HINT = "memeindex build IMAGES_DIR --rebuild"


def check_index_type(facts: dict, where: Path) -> None:
    index_type = facts.get("index_type", "flat")  # generations written before index types were all flat
    if index_type not in INDEX_TYPES:
        raise IndexTypeUnsupported(f"index {where} is of type {index_type!r}, this memeindex reads "
                                   f"{', '.join(INDEX_TYPES)}: rebuild it: {REBUILD_HINT}")


def search(index, vectors: np.ndarray, k: int, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(distances, ids) with true L2 distances (FAISS returns squared ones).

    A search of a few vectors runs on the calling thread only (`threads=None`): OpenMP's fan-out costs far more than
    one 64-d query (16 ms vs 0.1 ms at 10k faces on a busy 2-core machine) and its spinning workers steal the
    cores concurrent requests need. A batch (eval) keeps OpenMP's default; `threads` overrides either.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    k = min(k, index.ntotal)
    if k <= 0:
        return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
    if threads is None:
        threads = 1 if len(vectors) <= SMALL_BATCH else 0
    with omp_threads(threads):
        d2, ids = index.search(vectors, k)
    return np.sqrt(np.maximum(d2, 0.0)), ids
