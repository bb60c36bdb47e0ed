"""query(): analyze the query image -> FAISS search -> the best face of each template -> Match list.

A match is one template (near-duplicate files grouped at build time, `templates.py`): its best face, the
calibrated score of that face's distance (`calibrate.py`), the expression traits both faces share (`traits.py`)
and the template's other files as variants. The CLI's `--json` and the API print `Match.to_dict()` as it is.

`Searcher` holds one loaded index generation and swaps in a newer one when a build publishes it; a search in
flight keeps the generation it started with.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import calibrate, generation, traits, vectors
from .errors import IndexMismatch, NoFace
from .faces import Face
from .generation import IndexDir
from .settings import Settings

log = logging.getLogger(__name__)
MEME_ID = re.compile(r"^[0-9a-f]{16}$")
# The other files of a match's template listed in the result (`variants`); `variants_total` counts them all. A
# template copied thousands of times would otherwise put every copy in every match of every answer.
VARIANTS_LISTED = 20
# What to try when a query shows no face: the end of NoFace's message for a photo and for a video alike.
NO_FACE_HINT = "try a closer, well-lit, front-facing photo"


@dataclass(frozen=True)
class Variant:
    """Another file of a match's template (the same picture at another size, crop, caption or quality)."""

    id: str
    path: str

    def to_dict(self) -> dict:
        return {"id": self.id, "path": self.path}


@dataclass
class Match:
    id: str  # first 16 hex of the file's sha256: stable across rebuilds, the only id a URL carries
    path: str  # relative to the indexed root
    name: str
    score: float  # calibrated: P(people call the two expressions the same), 0..1
    distance: float  # L2 between unit vectors: 0 same, sqrt(2) unrelated, 2 opposite
    box: tuple  # the matched face, x0, y0, x1, y1 in the file's (EXIF-upright) pixels
    frame: int
    traits: list[traits.Trait] = field(default_factory=list)  # what both faces show, strongest first
    variants: list[Variant] = field(default_factory=list)  # the template's other files, at most VARIANTS_LISTED
    weak: bool = False  # score below settings.weak_score
    variants_total: int = 0  # how many other files the template has, listed or not (at least len(variants))

    def __post_init__(self) -> None:
        self.variants_total = max(self.variants_total, len(self.variants))

    def to_dict(self) -> dict:
        """The one result format (CLI --json and the API)."""
        return {"id": self.id, "path": self.path, "name": self.name, "score": round(float(self.score), 4),
                "distance": round(float(self.distance), 4), "box": [round(float(v), 1) for v in self.box],
                "frame": int(self.frame), "traits": [t.to_dict() for t in self.traits],
                "variants": [v.to_dict() for v in self.variants], "variants_total": int(self.variants_total),
                "weak": bool(self.weak)}


@dataclass
class QueryResult:
    faces: list[Face]
    face_index: int
    matches: list[Match]
    model_id: str
    calibrated: bool = True  # False: no fitted curve for this model, scores are the documented fallback

    @property
    def query_face(self) -> Face:
        return self.faces[self.face_index]

    def to_dict(self) -> dict:
        """The one result format (CLI --json and the API): the query's faces, then the matches."""
        return {"model_id": self.model_id, "calibrated": self.calibrated,
                "query": {"face": self.face_index + 1, "box": [round(float(v), 1) for v in self.query_face.box],
                          "faces": [{"box": [round(float(v), 1) for v in f.box], "score": round(float(f.score), 3)}
                                    for f in self.faces]},
                "matches": [m.to_dict() for m in self.matches]}


def meme_name(path: str) -> str:
    stem = Path(path).stem
    stem = re.sub(r"^\d+-", "", stem)  # imgflip's rank prefix
    return re.sub(r"[-_]+", " ", stem).strip() or stem


class LoadedGeneration:
    """One published generation as a Searcher holds it, loaded lean: the FAISS index and numpy/Arrow columns, no
    Python object per row. Read-only: every search in flight shares it (a reload swaps in another object and never
    changes this one), so readers (`Searcher.loaded_generation`: benchmarks, measurements) read its `index`,
    `facts`, `root` and the per-face-row accessors, and never assign to it.

    A face costs 4 bytes here (its file's row; its frame, box and blendshapes stay in faces.rows, read per match)
    and a file one Arrow string, an 8-byte id and a template number: Python lists of paths, hashes and templates cost ~1 GB at a
    million faces. Only the columns a match needs are read; rows become Python values only for the k matches.
    """

    def __init__(self, folder: Path, model_id: str, dim: int, model_sha256: str = ""):
        import pyarrow as pa
        import pyarrow.compute as pc

        gen = generation.Generation(folder)
        self.facts = gen.facts
        gen.check(model_id, dim, model_sha256)
        self.root = Path(self.facts["root"])
        _lean_memory()

        # Files: one column at a time, each turned into numbers and dropped before the next is read.
        self.paths = gen.images(["path"]).column("path")  # display text, a chunked Arrow array (no copy)
        self.usable = pc.not_equal(gen.images(["status"]).column("status"), "failed").to_numpy(zero_copy_only=False)
        shas = gen.images(["sha256"]).column("sha256")
        self.ids = _meme_keys(shas)  # a file's meme id (first 16 hex of its sha256) as a number
        self._by_id = np.flatnonzero(self.usable)[np.argsort(self.ids[self.usable], kind="stable")]
        self._sorted_ids = self.ids[self._by_id]
        # A file's template; "" (an index grouped by no version) makes each file its own template.
        tpl = gen.images(["template"]).column("template")
        tpl = pc.if_else(pc.equal(tpl, ""), pc.utf8_slice_codeunits(shas, 0, 16), tpl)
        self.file_template = pc.dictionary_encode(tpl).combine_chunks().indices.to_numpy(zero_copy_only=False) \
            .astype(np.int32)
        del shas, tpl
        by_path = pc.sort_indices(self.paths).to_numpy()
        by_path = by_path[self.usable[by_path]]  # failed files are nobody's variant
        self._members = by_path[np.argsort(self.file_template[by_path], kind="stable")].astype(np.int32)
        per_template = np.bincount(self.file_template[by_path], minlength=int(self.file_template.max(initial=-1)) + 1)
        self._member_start = np.concatenate([[0], np.cumsum(per_template)]).astype(np.int64)
        del by_path
        odd = gen.images(["path_bytes"]).column("path_bytes")  # the exact bytes of a name that is not UTF-8
        self._fs_names = {int(i): generation.fs_path(self.paths[int(i)].as_py(), odd[int(i)].as_py())
                          for i in np.flatnonzero(odd.is_valid().to_numpy(zero_copy_only=False))} \
            if odd.null_count < len(odd) else {}
        del odd

        # Faces: the writer keeps both tables in path order, so a file's faces are the next `faces` rows.
        counts = gen.images(["faces"]).column("faces").to_numpy().astype(np.int64)
        self.face_file = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        # Frame, box and blendshapes (generation.FACE_ROW) are read for the k matches only, a pread of one record
        # each, so they sit in the page cache (the kernel's to evict), not in this process, and the FAISS index stays
        # its one big structure. The build writes them once (faces.rows); a generation written before that gets
        # them derived here into an unlinked temporary file (the same records).
        rows_file = gen.open_face_rows(len(self.face_file))
        derived = None
        if rows_file is None:
            import tempfile

            derived = tempfile.TemporaryFile(prefix="memeindex-")
        try:
            done = 0
            columns = ["path"] if derived is None else ["path", "frame", "box", "blendshapes"]
            for group in gen.face_batches(columns):
                if not group.num_rows:  # a generation without a face (every file faceless) has one empty group
                    continue
                rows = slice(done, done + group.num_rows)
                if done + group.num_rows > len(self.face_file) or not pc.all(pc.equal(
                        group.column("path"), pc.take(self.paths, self.face_file[rows]))).as_py():
                    raise IndexMismatch(f"index {folder.parent}: faces.parquet and images.parquet are not in the "
                                        "same order: rebuild it: memeindex build IMAGES_DIR --rebuild")
                if derived is not None:
                    derived.write(generation.face_rows(group).tobytes())
                done += group.num_rows
                del group
            if done != len(self.face_file):
                raise IndexMismatch(f"index {folder.parent}: images.parquet counts {len(self.face_file)} faces, "
                                    f"faces.parquet holds {done}: rebuild it: memeindex build IMAGES_DIR --rebuild")
            if derived is not None:
                derived.flush()
        except BaseException:
            (rows_file or derived).close()
            raise
        self._face_rows = _FaceRows(rows_file or derived, len(self.face_file))
        pa.default_memory_pool().release_unused()
        self.index = gen.read_index()  # last: the tables' read buffers are gone before it takes its memory

    def face_row(self, row: int) -> np.void:
        """Face `row`'s generation.FACE_ROW record: ["frame"], ["box"] (float32 x4), ["blendshapes"] (bytes)."""
        return self._face_rows[row]

    def meme_id(self, row: int) -> str:
        return f"{int(self.ids[self.face_file[row]]):016x}"

    def path(self, row: int) -> str:
        return self.paths[int(self.face_file[row])].as_py()

    def template(self, row: int) -> int:
        return int(self.file_template[self.face_file[row]])

    def variants(self, row: int, listed: int = VARIANTS_LISTED) -> tuple[list[Variant], int]:
        """The first `listed` other files of the template of face `row`, in path order, and how many there are
        (copies of the matched file itself left out). Only the listed ones become Python objects."""
        own, group = self.ids[self.face_file[row]], self.template(row)
        members = self._members[self._member_start[group]:self._member_start[group + 1]]
        members = members[self.ids[members] != own]
        return [Variant(f"{int(self.ids[m]):016x}", self.paths[int(m)].as_py()) for m in members[:listed]], \
            len(members)

    def file(self, meme_id: str) -> str:
        """The relative file name (as os.open needs it) of the file with this meme id; KeyError if none."""
        key = np.uint64(int(meme_id, 16))
        pos = int(np.searchsorted(self._sorted_ids, key))
        if pos == len(self._sorted_ids) or self._sorted_ids[pos] != key:
            raise KeyError(meme_id)
        row = int(self._by_id[pos])
        return self._fs_names.get(row) or self.paths[row].as_py()


class _FaceRows:
    """generation.FACE_ROW records in a file (faces.rows, or an unlinked temporary file), read one at a time with
    pread: not mapped, so records read by matches never count in the RSS."""

    def __init__(self, file, rows: int):
        self.file, self.rows = file, rows
        self._lock = threading.Lock()  # for seek + read where there is no pread

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, row) -> np.void:
        row = int(row)
        if not 0 <= row < self.rows:
            raise IndexError(row)
        size = generation.FACE_ROW.itemsize
        if hasattr(os, "pread"):
            data = os.pread(self.file.fileno(), size, row * size)
        else:
            with self._lock:
                self.file.seek(row * size)
                data = self.file.read(size)
        return np.frombuffer(data, generation.FACE_ROW)[0].copy()


def _lean_memory() -> None:
    """Loading reads large buffers and frees them: make sure freed memory goes back to the system.

    Arrow uses the system allocator (unless ARROW_DEFAULT_MEMORY_POOL chose one): mimalloc kept per-thread arenas
    of freed read buffers (+60 MB for 100k faces' columns, measured). glibc gets a fixed mmap threshold: its
    dynamic one rises after the first large free, and later row-group buffers then stayed in the heap (+80 MB
    peak at 1M faces, measured with scripts/bench_scale.py).
    """
    import pyarrow as pa

    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL") and pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())
    global _MALLOC_TUNED
    if not _MALLOC_TUNED and sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: blocks >= 1 MiB are mmap'd
        except (OSError, AttributeError):  # not glibc (musl, say): nothing to tune
            pass
        _MALLOC_TUNED = True


_MALLOC_TUNED = False


_SHORT_HEX = re.compile(r"[0-9a-fA-F]{0,15}")


def _meme_keys(shas) -> np.ndarray:
    """uint64 of each sha256's first 16 hex digits (the meme id), decoded in bulk from the Arrow buffers."""
    import pyarrow as pa

    keys, readable = generation.hex_words(shas)
    rows = np.flatnonzero(~readable)
    for row, sha in zip(rows.tolist(), shas.take(pa.array(rows)).to_pylist() if len(rows) else []):
        # a short or missing sha256 reads as the number it spells (none: 0); anything else is damage. int(x, 16)
        # alone would take a sign, spaces, underscores and a 0x prefix, and "-1" overflows uint64
        if sha is not None and not _SHORT_HEX.fullmatch(sha):
            raise IndexMismatch("a sha256 column holds a non-hex digit: rebuild the index")
        keys[row] = int(sha or "0", 16)
    return keys


class Searcher:
    def __init__(self, index_dir: Path | None, settings: Settings, analyzer=None):
        self.settings = settings
        self.index_dir = IndexDir(index_dir or self.settings.index_dir)
        self._analyzer = analyzer
        from .embedders import get_embedder

        self.embedder = analyzer.embedder if analyzer else get_embedder(self.settings)
        self._lock = threading.Lock()
        self._stamp = self.index_dir.pointer_stamp()
        self._gen = LoadedGeneration(self.index_dir.current(), self.embedder.model_id, self.embedder.dim,
                                     self.embedder.model_sha256)
        self.curve = calibrate.curve_for(self.embedder.model_id)

    @property
    def analyzer(self):
        if self._analyzer is None:
            from .pipeline import FaceAnalyzer

            self._analyzer = FaceAnalyzer(self.settings, self.embedder)
        return self._analyzer

    @property
    def root(self) -> Path:
        return self._gen.root

    @property
    def loaded_generation(self) -> LoadedGeneration:
        """The generation searches use now (a read-only LoadedGeneration: its FAISS `index`, `facts`, and per face
        row `meme_id`, `path`, `face_row`), for measurements. A reload swaps in another object."""
        return self._gen

    def reload_if_changed(self) -> bool:
        stamp = self.index_dir.pointer_stamp()
        if stamp == self._stamp:
            return False
        with self._lock:
            if stamp != self._stamp:
                gen = LoadedGeneration(self.index_dir.current(), self.embedder.model_id, self.embedder.dim,
                                       self.embedder.model_sha256)
                self._gen, self._stamp = gen, stamp  # one reference swap: searches in flight keep the old one
                log.info("loaded index generation with %d faces", gen.index.ntotal)
        return True

    def search_vector(self, vector: np.ndarray, k: int = 3, blendshapes: np.ndarray | None = None) -> list[Match]:
        """The best face of each of the k nearest templates to `vector`; `blendshapes` (the query face's 52) name
        the traits each match shares with it (none without them)."""
        gen = self._gen
        query_traits = traits.strengths(blendshapes)[0] if blendshapes is not None else None
        matches, seen, want = [], set(), k * 8
        while True:
            dist, ids = vectors.search(gen.index, np.asarray(vector, np.float32)[None, :], want)
            for d, i in zip(dist[0], ids[0]):
                if i < 0 or gen.template(i) in seen:
                    continue
                seen.add(gen.template(i))
                matches.append(self._match(gen, int(i), float(d), query_traits))
                if len(matches) == k:
                    return matches
            if want >= gen.index.ntotal or (ids[0] < 0).any():  # an approximate index found all it can reach
                return matches
            matches, seen, want = [], set(), want * 4

    def _match(self, gen: LoadedGeneration, row: int, distance: float, query_traits: np.ndarray | None) -> Match:
        score = float(self.curve.score(distance))
        record = gen.face_row(row)
        shared = [] if query_traits is None else traits.shared_strengths(
            query_traits, traits.strengths(record["blendshapes"] / 255.0)[0])
        path = gen.path(row)
        variants, variants_total = gen.variants(row)
        return Match(id=gen.meme_id(row), path=path, name=meme_name(path), score=score,
                     distance=distance, box=tuple(float(v) for v in record["box"]), frame=int(record["frame"]),
                     traits=shared, variants=variants, variants_total=variants_total,
                     weak=score < self.settings.weak_score)

    def search(self, source, k: int = 3, face: int | None = None) -> QueryResult:
        faces = self.analyzer.first_faces(source)  # an animated query: its first sampled frame with faces
        if not faces:
            raise NoFace(f"no face found in the image: {NO_FACE_HINT}")
        index = face or 0
        if not 0 <= index < len(faces):
            raise NoFace(f"the query image has {len(faces)} face(s); there is no face {index + 1}")
        chosen = faces[index]
        return QueryResult(faces=faces, face_index=index,
                           matches=self.search_vector(chosen.embedding, k, chosen.blendshapes),
                           model_id=self.embedder.model_id, calibrated=self.curve.fitted)

    def image_file(self, meme_id: str) -> Path:
        if not MEME_ID.match(meme_id or ""):
            raise KeyError(meme_id)
        return self._gen.root / self._gen.file(meme_id)

    def info(self) -> dict:
        facts = dict(self._gen.facts)
        facts["index_dir"] = str(self.index_dir.path)
        return facts

    def close(self) -> None:
        if self._analyzer is not None:
            self._analyzer.close()


def query(image, index_dir: Path | None = None, k: int = 3, face: int | None = None,
          settings: Settings | None = None) -> QueryResult:
    """Top-k memes for the face in `image` (path, bytes or RGB array): one entry per template, its best face."""
    searcher = Searcher(index_dir, settings or Settings.from_env())
    try:
        return searcher.search(image, k=k, face=face)
    finally:
        searcher.close()
