"""Near-duplicate memes: one template per picture, whatever its size, crop, caption or JPEG quality.

Collections hold the same template from several sources (`memegen/woman-cat.jpg`, `imgflip/17-Woman-Yelling-At-
Cat.jpg`, ...). A query should answer with different memes, so at publish time every image gets a `template` id
and the search keeps one face per template, listing the template's other files as variants.

Two files are the same template when

* their perceptual hashes (a DCT pHash of the first frame, as `imagehash.phash` computes it) are close: the
  same picture resized, recompressed or lightly captioned; confirmed, when both have faces, by a face of one
  matching a face of the other (so two different memes with a similar layout do not merge) and, when neither has
  one, by their difference hashes (a second hash of the same frame: chance meetings of the pHash alone grow with
  the square of the collection); or
* their hashes are farther apart (a crop or a large caption moves the hash) but a face of one is *the same
  face* as a face of the other: same place in the picture (relative to the whole) or same expression read to
  within the noise of a re-encode, by both the embedding and the 52 blendshapes. Beyond NEAR_PICTURE_BITS the
  two files must also hold as many faces: a collage of two memes holds each one's face, and grouping is
  transitive, so it would merge the two memes into one template.

`template_ids` (and `assign`, its dict form) is pure (tables in, ids out) and recomputed over every image at
publish time: adding or removing a file regroups its neighbours too. The close pairs come from FAISS range searches
(hashes of the faceless pictures against all, embeddings of all faces), so only they reach Python, and every
per-file step is Arrow or numpy (a million files: no Python object per file); face pairs are searched in an
inverted file above `EXACT_PAIRS_MAX` faces (exact search is quadratic). `scripts/bench_templates.py` measures time,
memory, planted near-duplicates recovered and files joined wrongly; `scripts/measure_hash_joins.py` the dHash's
effect on real pictures.

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
HASH_LOW = 8  # (and the difference hash's 8 rows of 8 neighbour comparisons)
# A frame is first box-reduced by a whole factor to no less than this on its short side (measured on the shared
# memes: 0.8 of 64 bits differ on average from the hash of the full frame, within the noise assign tolerates).
PRE_REDUCE_SIDE = 128


def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II as a matrix (scipy.fftpack.dct's default), so pHash needs numpy only."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT = _dct_matrix(HASH_SIDE)


def _grey(rgb: np.ndarray):
    """The frame as a PIL grey image, a big one box-reduced first (Lanczos over all its pixels costs ~4 ms)."""
    from PIL import Image

    arr = np.asarray(rgb)
    if arr.ndim == 3:
        arr = arr[..., :3]
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    k = min(img.size) // PRE_REDUCE_SIDE
    if k >= 2:
        img = img.reduce(k)
    return img.convert("L")


def _hex(bits: np.ndarray) -> str:
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def _phash_of(grey) -> str:
    from PIL import Image

    pixels = np.asarray(grey.resize((HASH_SIDE, HASH_SIDE), Image.LANCZOS), dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:HASH_LOW, :HASH_LOW]
    return _hex((low > np.median(low)).ravel())


def _dhash_of(grey) -> str:
    from PIL import Image

    pixels = np.asarray(grey.resize((HASH_LOW + 1, HASH_LOW), Image.LANCZOS), dtype=np.int16)
    return _hex((pixels[:, 1:] > pixels[:, :-1]).ravel())


def perceptual_hash(rgb: np.ndarray) -> str:
    """16 hex digits: the 64-bit DCT perceptual hash of an RGB (or grey) uint8 frame.

    Same algorithm as `imagehash.phash` (grey, 32x32 Lanczos, 2-D DCT, 8x8 low frequencies against their
    median), so the bits agree with that library's to within resampling noise (a big frame is box-reduced first).
    """
    return _phash_of(_grey(rgb))


def difference_hash(rgb: np.ndarray) -> str:
    """16 hex digits: the 64-bit difference hash of a frame (`imagehash.dhash`'s algorithm: grey, 9x8 Lanczos, in
    each row whether each pixel is brighter than the one to its left). It reads the picture's gradients where pHash
    reads its low frequencies, so two unrelated pictures whose pHashes meet by chance rarely meet here too (see
    DHASH_BITS)."""
    return _dhash_of(_grey(rgb))


def picture_hashes(rgb: np.ndarray) -> tuple[str, str]:
    """(perceptual_hash, difference_hash) of a frame, from one grey reduction: what the worker stores per file."""
    grey = _grey(rgb)
    return _phash_of(grey), _dhash_of(grey)


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
# This close, the pHash alone joins a file with faces and one without (the detector missed a smaller copy, whose
# gradients a re-padding can move: no dHash asked). Random 64-bit hashes meet within 6 bits once in 2.2e11 pairs:
# ~0.4 chance joins among a million files (100,000 faceless against 900,000 with faces).
LONE_FACE_BITS = 6
# Two faceless files whose pHashes lie within SAME_PICTURE_BITS also need their difference hashes within this,
# where both have one. Random pHashes meet within 12 bits once in ~4.4 million pairs, so a
# million files (100,000 faceless) joined ~1,300 unrelated pairs on the pHash alone, and real pictures meet far more
# often (shared layouts, text on white). The dHash is a second look at the same frame (its gradients, not its low
# frequencies): on the shared memes it agrees for all 48 faceless pairs within 12 pHash bits and for 0.43 % of the
# unrelated pairs 14-26 pHash bits apart (scripts/measure_hash_joins.py). A same picture with faces on both sides
# is joined by a face pair instead (the dHash of a re-padded copy can move 18+ bits: Panik Kalm Panik).
DHASH_BITS = 16
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
# The inverted file stores its copy of the vectors as float16 (half the memory of float32: 0.23 GB, not 0.46 GB, at
# 1.8M faces), searched this much wider in inner product (float16 moves one by ~1e-4, at most ~2e-3 for unit
# vectors); the pairs it finds are then measured exactly from the float32 rows, so the same pairs come out.
PAIR_FP16_MARGIN = 0.005
PAIR_BATCH = 65_536  # rows added to, or searched in, the index at a time


def _close_vectors(emb: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs i < j of unit rows within `max_distance` (L2), with their distances: a FAISS range search (in C,
    threaded), exact up to EXACT_PAIRS_MAX rows, so only the close pairs ever reach Python."""
    import faiss

    x = np.ascontiguousarray(emb, np.float32)
    n, dim = x.shape
    threshold = 1.0 - max_distance ** 2 / 2.0  # inner product of unit vectors max_distance apart
    if n <= EXACT_PAIRS_MAX:
        index, margin = faiss.IndexFlatIP(dim), 0.0
    else:
        cells = max(1, n // PAIR_CELL_ROWS)
        sample = np.random.default_rng(0).choice(n, min(n, cells * PAIR_TRAIN_PER_CELL), replace=False)
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, cells, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # the sample is sized on purpose: no warning about it
        index.train(x[np.sort(sample)])
        del sample
        index.nprobe = PAIR_PROBES
        margin = PAIR_FP16_MARGIN
    # A batch of rows at a time: FAISS's temporaries for an add or a search (codes, coarse assignments) grow with
    # the rows given at once; only the close pairs found are kept.
    for start in range(0, n, PAIR_BATCH):
        index.add(x[start:start + PAIR_BATCH])
    found = []
    for start in range(0, n, PAIR_BATCH):
        lims, sims, ids = index.range_search(x[start:start + PAIR_BATCH], threshold - margin)
        rows = start + np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = (rows != ids) & (ids >= 0)
        found.append((rows[keep], ids[keep].astype(np.int64), sims[keep]))
        del lims, sims, ids, rows, keep
    del index
    rows, ids, sims = (np.concatenate([f[k] for f in found]) for k in range(3))
    del found
    # An approximate search may see a pair from one side only: both sides count, each pair once. One integer key per
    # pair (hi < n) sorts as the (lo, hi) rows do, without numpy's slow row-wise unique (8x at millions of pairs).
    lo, hi = np.minimum(rows, ids), np.maximum(rows, ids)
    first = np.unique(lo * n + hi, return_index=True)[1]
    lo, hi, sims = lo[first], hi[first], sims[first]
    if margin:  # float16 similarities: measure the pairs again in float32, and keep those within the limit
        for start in range(0, len(lo), 1 << 16):
            part = slice(start, start + (1 << 16))
            sims[part] = np.einsum("ij,ij->i", x[lo[part]], x[hi[part]])
        near = sims >= threshold
        lo, hi, sims = lo[near], hi[near], sims[near]
    return lo, hi, np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))


def _close_hashes(hashes: np.ndarray, queries: np.ndarray, max_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs lo < hi of row numbers, one of them in `queries`, of 64-bit hashes within `max_bits`, with their
    distances (an exact FAISS binary range search). A pair of two queries, found from both sides, comes once."""
    import faiss

    if not len(hashes) or not len(queries):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = np.ascontiguousarray(hashes.astype(">u8").view(np.uint8).reshape(-1, 8))
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    lims, bits, ids = index.range_search(np.ascontiguousarray(codes[queries]), max_bits + 1)  # radius is exclusive
    rows = np.repeat(np.asarray(queries, np.int64), np.diff(lims).astype(np.int64))
    ids = ids.astype(np.int64)
    keep = (rows != ids) & (bits <= max_bits)
    rows, ids, bits = rows[keep], ids[keep], bits[keep].astype(np.int64)
    lo, hi = np.minimum(rows, ids), np.maximum(rows, ids)
    first = np.unique(lo * len(hashes) + hi, return_index=True)[1]  # one integer key per pair, as _close_vectors
    return lo[first], hi[first], bits[first]


def _hash_words(column) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hashes, known mask) of a column of 16-hex-digit hashes; an empty, null or malformed hash is
    unknown."""
    from .generation import hex_words

    return hex_words(column, whole=True)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x).astype(np.int64)
    as_bytes = np.ascontiguousarray(x, np.uint64).view(np.uint8).reshape(-1, 8)
    return np.unpackbits(as_bytes, axis=1).sum(axis=1, dtype=np.int64)


def _smallest_members(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of n nodes, the smallest node of its connected component under the edges (a[k], b[k]).

    Union-find in numpy, a round over all edges at a time: each edge hooks the larger of its two roots under the
    smaller, then every node jumps to its root. A node's label never exceeds it, so a component's smallest node
    is its own label and, once no edge joins two labels, every member's. (Rounds: about log of the longest chain.)"""
    label = np.arange(n, dtype=np.int64)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while len(a):
        la, lb = label[a], label[b]
        apart = la != lb
        if not apart.any():
            break
        la, lb = la[apart], lb[apart]
        np.minimum.at(label, np.maximum(la, lb), np.minimum(la, lb))
        while True:  # pointer jumping: every node to its root
            up = label[label]
            if np.array_equal(up, label):
                break
            label = up
        a, b = a[apart], b[apart]  # an edge whose ends agree stays agreed
    return label


def _matrix(table, name: str) -> np.ndarray:
    """A fixed-size list column as an (n, size) float32 array: a view of the Arrow buffer when it is one chunk."""
    col = table.column(name)
    col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    if not len(col):
        return np.zeros((0, 0), np.float32)
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32)
    return flat.reshape(len(col), -1)


def _pair_distances(table, name: str, rows: np.ndarray, cols: np.ndarray, batch: int = 1 << 16) -> np.ndarray:
    """L2 distance of the `name` vectors of face rows rows[k] and cols[k], taken from the Arrow column a batch of
    pairs at a time: the whole column never becomes a numpy copy (52 floats a face: 0.37 GB at 1.8M faces)."""
    import pyarrow as pa

    column = table.column(name)
    out = np.zeros(len(rows), np.float32)
    for start in range(0, len(rows), batch):
        r, c = rows[start:start + batch], cols[start:start + batch]
        both = _matrix(pa.table({name: column.take(pa.array(np.concatenate([r, c])))}), name)
        out[start:start + len(r)] = np.linalg.norm(both[:len(r)] - both[len(r):], axis=1)
    return out


def assign(images, faces, model_id: str | None = None, rules=None) -> dict[str, str]:
    """{path: template id} for every row of `images` (pyarrow tables of an index generation): `template_ids` as
    a dict, for callers that look files up by path (scripts, tests). A build uses `template_ids` itself."""
    image_templates, _ = template_ids(images, faces, model_id, rules)
    return dict(zip(images.column("path").to_pylist(), image_templates.to_pylist()))


def template_ids(images, faces, model_id: str | None = None, rules=None):
    """The template id of every row of `images` and of every row of `faces` (two pyarrow string arrays in the
    tables' row order; "" for a face whose content has no image row).

    `model_id` is the embedder that wrote `faces`' embeddings (None: `REFERENCE_MODEL`): it sets the embedding
    limits (`face_match`); `rules`, FACE_MATCH-shaped, replaces them (scripts/fit_templates.py tries scales).

    `images` needs sha256 and phash (dhash and status optional: without dhash, hash joins rest on the pHash alone;
    failed files stay alone); `faces` needs sha256, blendshapes and embedding; both need path (and path_bytes,
    where a name is not UTF-8: generation.key_column). A template id is the smallest 16-hex file id (sha256 prefix)
    among its files, so it stays put while its members do. Files with the same content share a template. Everything
    per row stays in Arrow and numpy: only pairs of close files are looked at.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from .generation import key_column, positions

    shas = images.column("sha256")
    # One unit per content, sorted: copies of a file are one unit (the faces table holds one copy's rows).
    units = pc.unique(shas)
    units = units.combine_chunks() if isinstance(units, pa.ChunkedArray) else units
    units = units.take(pc.sort_indices(units))
    n = len(units)
    unit_of_row = positions(shas, units)
    usable = np.ones(images.num_rows, bool)
    if "status" in images.column_names:
        usable = np.asarray(pc.not_equal(images.column("status"), "failed").fill_null(True)
                            .to_numpy(zero_copy_only=False), bool)
    hash_int, known = _unit_hashes(images, "phash", unit_of_row, usable, n)
    dhash_int, dknown = _unit_hashes(images, "dhash", unit_of_row, usable, n)

    face_unit = positions(faces.column("sha256").cast(pa.string()), units)
    face_rows = np.flatnonzero(face_unit >= 0)  # faces with an image row (all of them, in a published generation)
    # Faces a picture holds: one copy's (a build writes each copy's rows), or two copies of a one-face meme would
    # pass for a two-face collage (_face_edges).
    files = images.num_rows
    face_file = positions(key_column(faces), key_column(images))[face_rows]
    unit_files = np.unique(face_unit[face_rows] * (files + 1) + face_file + 1) // (files + 1)
    face_count = np.bincount(face_unit[face_rows], minlength=n) // np.maximum(np.bincount(unit_files, minlength=n), 1)
    has_faces = face_count > 0
    edges = [_face_edges(faces, face_rows, face_unit, hash_int, known, face_count, rules or face_match(model_id))]

    # Pictures alike by their hashes alone: both faceless, or one with faces and one without (two with faces need a
    # face pair, above), so only the faceless ones are searched for. Two faceless ones need their dHashes to agree
    # too where both have one (an index written before it has none: the pHash alone decides, as it did).
    idx = np.flatnonzero(known)
    lo, hi, bits = _close_hashes(hash_int[idx], np.flatnonzero(~has_faces[idx]), SAME_PICTURE_BITS)
    ui, uj = idx[lo], idx[hi]
    faceless = ~(has_faces[ui] | has_faces[uj])
    confirmed = ~(dknown[ui] & dknown[uj]) | (_popcount(dhash_int[ui] ^ dhash_int[uj]) <= DHASH_BITS)
    ok = np.where(faceless, confirmed, bits <= LONE_FACE_BITS)  # faceless pairs: within SAME_PICTURE_BITS
    edges.append((ui[ok], uj[ok]))

    root = _smallest_members(n, np.concatenate([e[0] for e in edges]), np.concatenate([e[1] for e in edges]))
    unit_template = pc.utf8_slice_codeunits(units, 0, 16).take(pa.array(root))  # units sorted: root = smallest
    image_templates = unit_template.take(pa.array(unit_of_row))
    face_templates = unit_template.take(pa.array(face_unit, mask=face_unit < 0)).fill_null("")
    return image_templates, face_templates


def _unit_hashes(images, name: str, unit_of_row: np.ndarray, usable: np.ndarray, n: int):
    """(uint64 hash, known) per unit from the `name` column of `images` (its usable rows; all unknown without it)."""
    values, known = np.zeros(n, np.uint64), np.zeros(n, bool)
    if name not in images.column_names:
        return values, known
    row_values, row_known = _hash_words(images.column(name))
    row_known &= usable
    values[unit_of_row[row_known]] = row_values[row_known]  # copies share their bytes, so their hash
    known[unit_of_row[row_known]] = True
    return values, known


def _face_edges(faces, face_rows: np.ndarray, face_unit: np.ndarray, hash_int: np.ndarray, known: np.ndarray,
                face_count: np.ndarray, rules) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of units (i, j) holding the same face (`_faces_agree`, judged for all close face pairs at once)."""
    if not len(face_rows):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    emb = _matrix(faces, "embedding")
    if len(face_rows) < faces.num_rows:  # copies only when some face has no image row
        emb = emb[face_rows]
    norms = np.sqrt(np.einsum("ij,ij->i", emb, emb))[:, None]  # (no squared copy of the matrix)
    if not np.allclose(norms, 1.0, atol=1e-4):  # the embedders' vectors are unit already: no copy for them
        emb = emb / np.maximum(norms, 1e-12)
    del norms
    rows, cols, d_emb = _close_vectors(emb, max(e for _, _, e in rules))
    del emb
    rows, cols = face_rows[rows], face_rows[cols]  # back to the faces table's rows
    ui, uj = face_unit[rows], face_unit[cols]
    other = ui != uj
    rows, cols, ui, uj, d_emb = rows[other], cols[other], ui[other], uj[other], d_emb[other]
    d_blend = _pair_distances(faces, "blendshapes", rows, cols)
    bits = np.where(known[ui] & known[uj], _popcount(hash_int[ui] ^ hash_int[uj]), 64)  # unknown: faces alone
    # Far pictures with different face counts: a collage holding this face, not this picture (it would bridge two
    # templates).
    collage = (bits > NEAR_PICTURE_BITS) & (face_count[ui] != face_count[uj])
    agree = _faces_agree(bits, d_blend, d_emb, rules) & ~collage
    return ui[agree], uj[agree]


def _faces_agree(bits, blend, emb, rules=FACE_MATCH):
    """Whether a face of each file is the same face, given how alike the two whole pictures are (numbers or
    arrays of them, elementwise)."""
    agree = np.zeros(np.broadcast(bits, blend, emb).shape, bool)
    for b, bl, e in rules:
        agree |= (np.asarray(bits) <= b) & (np.asarray(blend) <= bl) & (np.asarray(emb) <= e)
    return agree
