"""query(): analyze the query image -> FAISS search -> one best face per meme -> Match list.

`Searcher` holds one loaded index generation and swaps in a newer one when a build publishes it; a search in
flight keeps the generation it started with.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import generation, vectors
from .errors import NoFace
from .faces import Face
from .generation import IndexDir
from .settings import Settings

log = logging.getLogger(__name__)
MEME_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass
class Match:
    meme_id: str  # first 16 hex of the file's sha256: stable across rebuilds, the only id a URL carries
    path: str  # relative to the indexed root
    name: str
    distance: float  # L2 between unit vectors: 0 same, sqrt(2) unrelated, 2 opposite
    similarity: float  # cosine, 1 - distance^2 / 2
    weak: bool
    box: tuple
    frame: int

    def to_dict(self) -> dict:
        return {**asdict(self), "box": [round(v, 1) for v in self.box]}

    def line(self, rank: int) -> str:
        """One row of a result table: rank, score, distance, path, and a label on a weak match."""
        weak = "  (weak match)" if self.weak else ""
        return f"{rank:>2}  {self.similarity * 100:5.1f}%  {self.distance:5.3f}  {self.path}{weak}"


@dataclass
class QueryResult:
    faces: list[Face]
    face_index: int
    matches: list[Match]
    model_id: str

    @property
    def query_face(self) -> Face:
        return self.faces[self.face_index]

    def to_dict(self) -> dict:
        return {"model_id": self.model_id, "face": self.face_index, "faces": len(self.faces),
                "query_box": [round(v, 1) for v in self.query_face.box],
                "matches": [m.to_dict() for m in self.matches]}


def meme_name(path: str) -> str:
    stem = Path(path).stem
    stem = re.sub(r"^\d+-", "", stem)  # imgflip's rank prefix
    return re.sub(r"[-_]+", " ", stem).strip() or stem


class _Generation:
    """One published generation, loaded: the FAISS index and the columns a match needs."""

    def __init__(self, folder: Path, model_id: str, dim: int):
        gen = generation.Generation(folder)
        self.facts = gen.facts
        gen.check(model_id, dim)
        self.index = gen.read_index()
        t = gen.faces(["path", "sha256", "frame", "box"])
        self.paths = t.column("path").to_pylist()  # display text (odd bytes of a non-UTF-8 name as \xNN)
        self.shas = t.column("sha256").to_pylist()
        self.frames = t.column("frame").to_pylist()
        self.boxes = np.asarray(t.column("box").combine_chunks().values, np.float32).reshape(-1, 4)
        self.root = Path(self.facts["root"])
        images = gen.images(["path", "path_bytes", "sha256", "status"])
        keys = generation.row_keys(images)  # the exact file names, for opening them
        self.files = {sha[:16]: key for key, sha, status in zip(keys, images.column("sha256").to_pylist(),
                                                                 images.column("status").to_pylist())
                      if status != "failed"}


class Searcher:
    def __init__(self, index_dir: Path | None = None, settings: Settings | None = None, analyzer=None):
        self.settings = settings or Settings.from_env()
        self.index_dir = IndexDir(index_dir or self.settings.index_dir)
        self._analyzer = analyzer
        from .embedders import get_embedder

        self.embedder = analyzer.embedder if analyzer else get_embedder(self.settings)
        self._lock = threading.Lock()
        self._stamp = self.index_dir.pointer_stamp()
        self._gen = _Generation(self.index_dir.current(), self.embedder.model_id, self.embedder.dim)

    @property
    def analyzer(self):
        if self._analyzer is None:
            from .pipeline import FaceAnalyzer

            self._analyzer = FaceAnalyzer(self.settings, self.embedder)
        return self._analyzer

    @property
    def root(self) -> Path:
        return self._gen.root

    def reload_if_changed(self) -> bool:
        stamp = self.index_dir.pointer_stamp()
        if stamp == self._stamp:
            return False
        with self._lock:
            if stamp != self._stamp:
                gen = _Generation(self.index_dir.current(), self.embedder.model_id, self.embedder.dim)
                self._gen, self._stamp = gen, stamp  # one reference swap: searches in flight keep the old one
                log.info("loaded index generation with %d faces", gen.index.ntotal)
        return True

    def search_vector(self, vector: np.ndarray, k: int = 3) -> list[Match]:
        gen = self._gen
        matches, seen, want = [], set(), k * 8
        while True:
            dist, ids = vectors.search(gen.index, np.asarray(vector, np.float32)[None, :], want)
            for d, i in zip(dist[0], ids[0]):
                if i < 0 or gen.shas[i] in seen:
                    continue
                seen.add(gen.shas[i])
                matches.append(Match(meme_id=gen.shas[i][:16], path=gen.paths[i], name=meme_name(gen.paths[i]),
                                     distance=float(d), similarity=float(1.0 - d * d / 2.0),
                                     weak=bool(d > self.settings.weak_distance),
                                     box=tuple(float(v) for v in gen.boxes[i]), frame=int(gen.frames[i])))
                if len(matches) == k:
                    return matches
            if want >= gen.index.ntotal:
                return matches
            matches, seen, want = [], set(), want * 4

    def search(self, source, k: int = 3, face: int | None = None) -> QueryResult:
        faces = self.analyzer.analyze(source)
        if not faces:
            raise NoFace("no face found in the query image")
        faces = [f for f in faces if f.frame == faces[0].frame]  # an animated query: its first frame with faces
        index = face or 0
        if not 0 <= index < len(faces):
            raise NoFace(f"the query image has {len(faces)} face(s); there is no face {index + 1}")
        return QueryResult(faces=faces, face_index=index, matches=self.search_vector(faces[index].embedding, k),
                           model_id=self.embedder.model_id)

    def image_file(self, meme_id: str) -> Path:
        if not MEME_ID.match(meme_id or ""):
            raise KeyError(meme_id)
        return self._gen.root / self._gen.files[meme_id]

    def info(self) -> dict:
        facts = dict(self._gen.facts)
        facts["index_dir"] = str(self.index_dir.path)
        return facts

    def close(self) -> None:
        if self._analyzer is not None:
            self._analyzer.close()


def query(image, index_dir: Path | None = None, k: int = 3, face: int | None = None,
          settings: Settings | None = None) -> QueryResult:
    """Top-k memes for the face in `image` (path, bytes or RGB array): one entry per meme, its best face."""
    searcher = Searcher(index_dir, settings)
    try:
        return searcher.search(image, k=k, face=face)
    finally:
        searcher.close()
