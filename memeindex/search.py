"""query(): analyze the query image -> FAISS search -> the best face of each template -> Match list.

A match is one template (near-duplicate files grouped at build time, `templates.py`): its best face, the
calibrated score of that face's distance (`calibrate.py`), the expression traits both faces share (`traits.py`)
and the template's other files as variants. The CLI's `--json` and the API print `Match.to_dict()` as it is.

`Searcher` holds one loaded index generation and swaps in a newer one when a build publishes it; a search in
flight keeps the generation it started with.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import calibrate, generation, traits, vectors
from .errors import NoFace
from .faces import Face
from .generation import IndexDir
from .settings import Settings

log = logging.getLogger(__name__)
MEME_ID = re.compile(r"^[0-9a-f]{16}$")


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
    variants: list[Variant] = field(default_factory=list)  # the template's other files
    weak: bool = False  # score below settings.weak_score

    def to_dict(self) -> dict:
        """The one result format (CLI --json and the API)."""
        return {"id": self.id, "path": self.path, "name": self.name, "score": round(float(self.score), 4),
                "distance": round(float(self.distance), 4), "box": [round(float(v), 1) for v in self.box],
                "frame": int(self.frame), "traits": [t.to_dict() for t in self.traits],
                "variants": [v.to_dict() for v in self.variants], "weak": bool(self.weak)}

    def line(self, rank: int) -> str:
        """One row of a result table: rank, score, distance, path, shared traits, variants, a weak label."""
        shared = f"  [{', '.join(str(t) for t in self.traits)}]" if self.traits else ""
        variants = f"  +{len(self.variants)} variant{'s' if len(self.variants) > 1 else ''}" if self.variants else ""
        weak = "  (weak match)" if self.weak else ""
        return f"{rank:>2}  {self.score * 100:4.0f}%  {self.distance:5.3f}  {self.path}{shared}{variants}{weak}"


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


class _Generation:
    """One published generation, loaded: the FAISS index and the columns a match needs."""

    def __init__(self, folder: Path, model_id: str, dim: int):
        gen = generation.Generation(folder)
        self.facts = gen.facts
        gen.check(model_id, dim)
        self.index = gen.read_index()
        t = gen.faces(["path", "sha256", "frame", "box", "blendshapes", "template"])
        self.paths = t.column("path").to_pylist()  # display text (odd bytes of a non-UTF-8 name as \xNN)
        self.shas = t.column("sha256").to_pylist()
        self.frames = t.column("frame").to_pylist()
        self.boxes = np.asarray(t.column("box").combine_chunks().values, np.float32).reshape(-1, 4)
        # Blendshapes only explain matches (traits): a byte each is plenty, and 4x smaller in memory.
        shapes = np.asarray(t.column("blendshapes").combine_chunks().values, np.float32).reshape(t.num_rows, -1)
        self.blendshapes = np.round(np.clip(shapes, 0.0, 1.0) * 255).astype(np.uint8)
        # A face's template; "" (an index grouped by no version) makes each file its own template.
        self.templates = [tpl or sha[:16] for tpl, sha in zip(t.column("template").to_pylist(), self.shas)]
        self.root = Path(self.facts["root"])
        images = gen.images(["path", "path_bytes", "sha256", "status", "template"])
        keys = generation.row_keys(images)  # the exact file names, for opening them
        shas, statuses = images.column("sha256").to_pylist(), images.column("status").to_pylist()
        self.files = {sha[:16]: key for key, sha, status in zip(keys, shas, statuses) if status != "failed"}
        self.members: dict[str, list[Variant]] = {}  # template -> its files, by path
        for path, sha, status, tpl in zip(images.column("path").to_pylist(), shas, statuses,
                                          images.column("template").to_pylist()):
            if status != "failed":
                self.members.setdefault(tpl or sha[:16], []).append(Variant(sha[:16], path))
        for files in self.members.values():
            files.sort(key=lambda v: v.path)

    def variants(self, row: int) -> list[Variant]:
        """The other files of the template of face `row` (copies of the matched file itself left out)."""
        own = self.shas[row][:16]
        return [v for v in self.members.get(self.templates[row], ()) if v.id != own]


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

    def search_vector(self, vector: np.ndarray, k: int = 3, blendshapes: np.ndarray | None = None) -> list[Match]:
        """The best face of each of the k nearest templates to `vector`; `blendshapes` (the query face's 52) name
        the traits each match shares with it (none without them)."""
        gen = self._gen
        matches, seen, want = [], set(), k * 8
        while True:
            dist, ids = vectors.search(gen.index, np.asarray(vector, np.float32)[None, :], want)
            for d, i in zip(dist[0], ids[0]):
                if i < 0 or gen.templates[i] in seen:
                    continue
                seen.add(gen.templates[i])
                matches.append(self._match(gen, int(i), float(d), blendshapes))
                if len(matches) == k:
                    return matches
            if want >= gen.index.ntotal:
                return matches
            matches, seen, want = [], set(), want * 4

    def _match(self, gen: _Generation, row: int, distance: float, blendshapes) -> Match:
        score = float(self.curve.score(distance))
        shared = traits.shared(blendshapes, gen.blendshapes[row] / 255.0) if blendshapes is not None else []
        return Match(id=gen.shas[row][:16], path=gen.paths[row], name=meme_name(gen.paths[row]), score=score,
                     distance=distance, box=tuple(float(v) for v in gen.boxes[row]), frame=int(gen.frames[row]),
                     traits=shared, variants=gen.variants(row), weak=score < self.settings.weak_score)

    def search(self, source, k: int = 3, face: int | None = None) -> QueryResult:
        faces = self.analyzer.analyze(source)
        if not faces:
            raise NoFace("no face found in the query image")
        faces = [f for f in faces if f.frame == faces[0].frame]  # an animated query: its first frame with faces
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
    """Top-k memes for the face in `image` (path, bytes or RGB array): one entry per template, its best face."""
    searcher = Searcher(index_dir, settings)
    try:
        return searcher.search(image, k=k, face=face)
    finally:
        searcher.close()
