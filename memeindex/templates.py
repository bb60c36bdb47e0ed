"""Near-duplicate memes: one template per picture, whatever its size, crop, caption or JPEG quality.

Collections hold the same template from several sources (`memegen/woman-cat.jpg`, `imgflip/17-Woman-Yelling-At-
Cat.jpg`, ...). A query should answer with different memes, so at publish time every image gets a `template` id
and the search keeps one face per template, listing the template's other files as variants.

Two files are the same template when

* their perceptual hashes (a DCT pHash of the first frame, as `imagehash.phash` computes it) are close: the
  same picture resized, recompressed or lightly captioned; confirmed, when both have faces, by a face of one
  matching a face of the other (so two different memes with a similar layout do not merge); or
* their hashes are farther apart (a crop or a large caption moves the hash) but a face of one is *the same
  face* as a face of the other: same place in the picture (relative to the whole) or same expression read to
  within the noise of a re-encode, by both the embedding and the 52 blendshapes. Beyond NEAR_PICTURE_BITS the
  two files must also hold as many faces: a collage of two memes holds each one's face, and grouping is
  transitive, so it would merge the two memes into one template.

`assign` is pure (tables in, dict out) and recomputed over every image at publish time: adding or removing a
file regroups its neighbours too. The close pairs come from FAISS range searches (hashes of the faceless pictures against all, embeddings of
all faces), so only they reach Python; face pairs are searched in an inverted file above `EXACT_PAIRS_MAX` faces
(exact search is quadratic). `scripts/bench_templates.py` measures time and planted near-duplicates recovered.

Embedding distances depend on the embedder: the same face in two copies of one picture is ~7x farther apart under
expression-v2 than under expression-v1. `FACE_MATCH`'s embedding limits are written in `REFERENCE_MODEL`'s units
and scaled for the model that built the index by the ratio of the two models' same-picture distances, measured on
the shared memes by `scripts/fit_templates.py` and committed in `templates.json` beside this module. A model
missing there (a new embedder, the blendshape baseline) is grouped with the limits as written (the reference's
scale), and a warning says to run the script for it.
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HASH_SIDE = 32  # the picture is shrunk to 32x32 grey and its 8x8 lowest DCT frequencies kept (pHash)
HASH_LOW = 8
# A frame is first box-reduced by a whole factor to no less than this on its short side (measured on the shared
# memes: 0.8 of 64 bits differ on average from the hash of the full frame, within the noise assign tolerates).
PRE_REDUCE_SIDE = 128


def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II as a matrix (scipy.fftpack.dct's default), so pHash needs numpy only."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT = _dct_matrix(HASH_SIDE)


def perceptual_hash(rgb: np.ndarray) -> str:
    """16 hex digits: the 64-bit DCT perceptual hash of an RGB (or grey) uint8 frame.

    Same algorithm as `imagehash.phash` (grey, 32x32 Lanczos, 2-D DCT, 8x8 low frequencies against their
    median), so the bits agree with that library's to within resampling noise (a big frame is box-reduced first).
    """
    from PIL import Image

    arr = np.asarray(rgb)
    if arr.ndim == 3:
        arr = arr[..., :3]
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    k = min(img.size) // PRE_REDUCE_SIDE
    if k >= 2:  # box-reduce a big frame first: Lanczos over all its pixels costs ~4 ms for the same 32x32
        img = img.reduce(k)
    grey = img.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:HASH_LOW, :HASH_LOW]
    bits = (low > np.median(low)).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hash_distance(a: str, b: str) -> int:
    """Bits that differ between two hashes (0 = same picture, ~32 = unrelated)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


# -- grouping ------------------------------------------------------------------------------------------------------
# Hash distances (bits of 64; unrelated pictures sit around 32 +- 4, only even values occur) and face distances
# (L2 of the 52 blendshapes, L2 of the unit embeddings), set on the 758 shared memes, where the same picture
# from two sources shows blendshapes within ~0.3 (a crop or a caption shifts the face mesh a little) and two
# different memes rarely come within 0.35 of each other; see `scripts/measure_results.py`.
SAME_PICTURE_BITS = 12  # this close, two hashes show the same picture (resized, recompressed, lightly captioned)
NEAR_PICTURE_BITS = 24  # closer than chance: the same picture cropped or re-captioned, if a face agrees
LONE_FACE_BITS = 6  # one file has faces and the other none (the detector missed a smaller copy): the hash alone
# A face pair is the same face when one rule holds: (max hash bits of the two pictures, max blendshape distance,
# max embedding distance). The closer the pictures, the looser the faces may be; a crop moves the embedding more
# than the blendshapes, so near pictures also take a pair whose blendshapes alone are very close. (A mirrored
# copy, blendshapes ~0.27 and embedding ~0.11 apart for Grace Hopper, stays a meme of its own.)
FACE_MATCH = (
    (SAME_PICTURE_BITS, 0.65, 0.15),
    (NEAR_PICTURE_BITS, 0.45, 0.12),
    (NEAR_PICTURE_BITS, 0.30, 0.17),
    (64, 0.30, 0.08),
)
# The embedding limits above were set on this model's distances; other models' limits are scaled (see the top).
REFERENCE_MODEL = "expression-v1"
SCALES_FILE = Path(__file__).resolve().with_name("templates.json")
# A model's same-picture distance is the root mean square of its embedding distances over the same face pairs
# (templates.json "distance"): all ~40 pairs of the shared memes count, where single quantiles of so few pairs
# jump around (v2/v1 at q80 2.9, q90 4.0, q95 3.4; RMS 3.50, inside the 3.5-3.9 plateau where v2's groups
# differ least from v1's and no two different memes merge).


@lru_cache(maxsize=None)
def _measured() -> dict:
    try:
        return json.loads(SCALES_FILE.read_text(encoding="utf-8")).get("models", {})
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s): near-duplicate limits stay at %s's scale", SCALES_FILE, exc,
                    REFERENCE_MODEL)
        return {}


@lru_cache(maxsize=None)
def embedding_scale(model_id: str | None) -> float:
    """Factor for FACE_MATCH's embedding limits under `model_id`: 1.0 for the reference model and, as the
    documented fallback, for a model not measured in templates.json (None: the reference)."""
    if model_id is None or model_id == REFERENCE_MODEL:
        return 1.0
    models = _measured()
    ref, own = models.get(REFERENCE_MODEL), models.get(model_id)
    if not (ref and own and ref.get("distance", 0) > 0 and own.get("distance", 0) > 0):
        log.warning("near-duplicate grouping is not measured for model %s: using %s's embedding limits "
                    "(run scripts/fit_templates.py --model %s)", model_id, REFERENCE_MODEL, model_id)
        return 1.0
    return float(own["distance"]) / float(ref["distance"])


def face_match(model_id: str | None) -> tuple[tuple[int, float, float], ...]:
    """FACE_MATCH with its embedding limits in `model_id`'s units."""
    scale = embedding_scale(model_id)
    return tuple((bits, blend, emb * scale) for bits, blend, emb in FACE_MATCH)


# Face pairs over more faces than this are searched approximately. An exact range search compares every face with
# every other (16 s for 60,000 files, projected ~75 min at a million, paid by every incremental publish); an
# inverted file compares a face only with the faces of the few cells nearest to it, and a near-duplicate, being
# near, shares its cell or sits in a probed neighbour (scripts/bench_templates.py: planted near-duplicates
# recovered, and time). Hashes stay exact: only the faceless pictures are searched for, and 64-bit hashes of
# unrelated pictures have no cells to find (random bits: an inverted file lost 5 % of faceless copies).
EXACT_PAIRS_MAX = 50_000
PAIR_CELL_ROWS = 256  # faces per cell of the inverted file (its cell count is faces / this)
PAIR_PROBES = 8  # cells searched per face
PAIR_TRAIN_PER_CELL = 64  # k-means sample per cell: enough for cells of near faces, a fraction of them at 1M


def _close_vectors(emb: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs i < j of unit rows within `max_distance` (L2), with their distances: a FAISS range search (in C,
    threaded), exact up to EXACT_PAIRS_MAX rows, so only the close pairs ever reach Python."""
    import faiss

    x = np.ascontiguousarray(emb, np.float32)
    n, dim = x.shape
    if n <= EXACT_PAIRS_MAX:
        index = faiss.IndexFlatIP(dim)
    else:
        cells = max(1, n // PAIR_CELL_ROWS)
        sample = np.random.default_rng(0).choice(n, min(n, cells * PAIR_TRAIN_PER_CELL), replace=False)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # the sample is sized on purpose: no warning about it
        index.train(x[np.sort(sample)])
        index.nprobe = PAIR_PROBES
    index.add(x)
    lims, sims, ids = index.range_search(x, 1.0 - max_distance ** 2 / 2.0)
    rows = np.repeat(np.arange(n), np.diff(lims).astype(np.int64))
    keep = (rows != ids) & (ids >= 0)
    rows, ids, sims = rows[keep], ids[keep].astype(np.int64), sims[keep]
    # An approximate search may see a pair from one side only: both sides count, each pair once. One integer key per
    # pair (hi < n) sorts as the (lo, hi) rows do, without numpy's slow row-wise unique (8x at millions of pairs).
    lo, hi = np.minimum(rows, ids), np.maximum(rows, ids)
    first = np.unique(lo * n + hi, return_index=True)[1]
    return lo[first], hi[first], np.sqrt(np.maximum(2.0 - 2.0 * sims[first], 0.0))


def _close_hashes(hashes: np.ndarray, queries: np.ndarray, max_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (q, j), q in `queries` (row numbers), j != q, of 64-bit hashes within `max_bits`, with their distances
    (an exact FAISS binary range search). A pair of two queries comes twice, once from each side."""
    import faiss

    if not len(hashes) or not len(queries):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = np.ascontiguousarray(hashes.astype(">u8").view(np.uint8).reshape(-1, 8))
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    lims, bits, ids = index.range_search(np.ascontiguousarray(codes[queries]), max_bits + 1)  # radius is exclusive
    rows = np.repeat(np.asarray(queries, np.int64), np.diff(lims).astype(np.int64))
    keep = (rows != ids) & (bits <= max_bits)
    return rows[keep], ids[keep].astype(np.int64), bits[keep].astype(np.int64)


def _hash_ints(hashes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hashes, known mask); an empty or malformed hash is unknown."""
    out, known = np.zeros(len(hashes), np.uint64), np.zeros(len(hashes), bool)
    for i, h in enumerate(hashes):
        if h and len(h) == 16:
            try:
                out[i], known[i] = np.uint64(int(h, 16)), True
            except ValueError:
                pass
    return out, known


def _column(table, name: str, default):
    if name in table.column_names:
        return table.column(name).to_pylist()
    return [default] * table.num_rows


class _Groups:
    """Union-find over content units; a group's id is its smallest member id."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _matrix(table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    if not len(col):
        return np.zeros((0, 0), np.float32)
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32)
    return flat.reshape(len(col), -1)


def assign(images, faces, model_id: str | None = None, rules=None) -> dict[str, str]:
    """{path: template id} for every row of `images` (pyarrow tables of an index generation).

    `model_id` is the embedder that wrote `faces`' embeddings (None: `REFERENCE_MODEL`): it sets the embedding
    limits (`face_match`); `rules`, FACE_MATCH-shaped, replaces them (scripts/fit_templates.py tries scales).

    `images` needs path, sha256 and phash (status optional: failed files stay alone); `faces` needs path,
    sha256, blendshapes and embedding. A template id is the smallest 16-hex file id (sha256 prefix) among its
    files, so it stays put while its members do. Files with the same content share a template.
    """
    paths = images.column("path").to_pylist()
    shas = images.column("sha256").to_pylist()
    hashes = _column(images, "phash", "")
    statuses = _column(images, "status", "faces")
    # One unit per content: copies of a file are one unit (the faces table holds one copy's rows).
    units = sorted({s for s in shas})
    unit_of = {s: i for i, s in enumerate(units)}
    unit_hash = [""] * len(units)
    for s, h, st in zip(shas, hashes, statuses):
        if st != "failed" and h:
            unit_hash[unit_of[s]] = h
    groups = _Groups(len(units))
    hash_int, known = _hash_ints(unit_hash)

    import pyarrow as pa
    import pyarrow.compute as pc

    # Each face's unit, in Arrow (no Python string per face: 1.8M faces at a million files).
    face_unit = pc.index_in(faces.column("sha256").cast(pa.string()), value_set=pa.array(units, pa.string()))
    face_unit = np.asarray(face_unit.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
    keep = face_unit >= 0
    face_unit = face_unit[keep]
    has_faces = np.zeros(len(units), bool)
    has_faces[face_unit] = True
    face_count = np.bincount(face_unit, minlength=len(units))
    if faces.num_rows:
        shapes, emb = _matrix(faces, "blendshapes"), _matrix(faces, "embedding")
        if not keep.all():  # copies only when some face has no image row
            shapes, emb = shapes[keep], emb[keep]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        if not np.allclose(norms, 1.0, atol=1e-4):  # the embedders' vectors are unit already: no copy for them
            emb = emb / np.maximum(norms, 1e-12)
        rules = rules or face_match(model_id)
        loosest_blend = max(b for _, b, _ in rules)
        loosest_emb = max(e for _, _, e in rules)
        rows, cols, d_emb = _close_vectors(emb, loosest_emb)
        other = face_unit[rows] != face_unit[cols]
        rows, cols, d_emb = rows[other], cols[other], d_emb[other]
        d_blend = np.linalg.norm(shapes[rows] - shapes[cols], axis=1)
        near = d_blend <= loosest_blend
        for i, j, db, de in zip(rows[near], cols[near], d_blend[near], d_emb[near]):
            ui, uj = int(face_unit[i]), int(face_unit[j])
            bits = _bits(hash_int, known, ui, uj)
            if bits > NEAR_PICTURE_BITS and face_count[ui] != face_count[uj]:
                continue  # a collage holding this face, not this picture: it would bridge two templates
            if _faces_agree(bits, float(db), float(de), rules):
                groups.union(ui, uj)
    # Pictures alike by their hash alone: both faceless, or one with faces and one without (two with faces need a
    # face pair, above), so only the faceless ones are searched for.
    idx = np.flatnonzero(known)
    rows, cols, bits = _close_hashes(hash_int[idx], np.flatnonzero(~has_faces[idx]), SAME_PICTURE_BITS)
    for r, c, b in zip(rows, cols, bits):
        ui, uj = int(idx[r]), int(idx[c])
        limit = SAME_PICTURE_BITS if not (has_faces[ui] or has_faces[uj]) else LONE_FACE_BITS
        if b <= limit:
            groups.union(ui, uj)
    template_of = {}
    for i, s in enumerate(units):
        root = groups.find(i)
        template_of.setdefault(root, s[:16])  # units are sorted: the first member seen is the smallest
    return {p: template_of[groups.find(unit_of[s])] for p, s in zip(paths, shas)}


def _bits(hash_int: np.ndarray, known: np.ndarray, i: int, j: int) -> int:
    if not (known[i] and known[j]):
        return 64  # unknown: no help from the picture, the faces must carry it alone
    return int((int(hash_int[i]) ^ int(hash_int[j])).bit_count())


def _faces_agree(bits: int, blend: float, emb: float, rules=FACE_MATCH) -> bool:
    """Whether a face of each file is the same face, given how alike the two whole pictures are."""
    return any(bits <= b and blend <= bl and emb <= e for b, bl, e in rules)
