"""Video queries: sample frames, follow the main face, cut where its expression changes, match each segment.

`memeindex query clip.mp4` prints one block per segment: its time span and the memes matching the mean
expression of the main face over it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import NoFace, NotAnImage
from .generation import shown_path
from .images import SAMPLE_FPS, Cadence, require_regular_file
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Segment:
    start: float  # seconds
    end: float
    matches: list = field(default_factory=list)  # list[search.Match] for the segment's mean expression
    frames: int = 0  # sampled frames in which the main face was seen
    box: tuple | None = None  # the main face's box at the segment's middle sample, in video pixels

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "frames": self.frames,
                "box": [round(float(v), 1) for v in self.box] if self.box else None,
                "matches": [m.to_dict() for m in self.matches]}


@dataclass
class _Sample:
    t: float
    box: tuple
    vector: np.ndarray
    noise: bool = False  # part of a too-short segment: keeps its time, no say in the expression
    blendshapes: np.ndarray | None = None  # the face's 52 scores: the traits a segment's matches share with it


def sample_frames(path: str | Path, fps: float = SAMPLE_FPS, max_side: int = 960, max_samples: int = 2400):
    """(seconds, RGB frame) about `fps` times a second; frames shrunk to `max_side`. Raises NotAnImage."""
    import cv2

    try:
        require_regular_file(path)
    except NotAnImage as exc:  # its message does not name the file: a video's errors do
        raise NotAnImage(f"{shown_path(str(path))}: {exc}") from None
    name, fd = str(path), None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # OpenCV crashes (SIGSEGV) on a name that is not UTF-8 text: give it a descriptor's
        fd = os.open(path, os.O_RDONLY)
        name = f"/proc/self/fd/{fd}"
    cap = None
    try:
        cap = cv2.VideoCapture(name)
        if not cap.isOpened():
            raise NotAnImage(f"cannot read {shown_path(str(path))} as a video")
        rate = cap.get(cv2.CAP_PROP_FPS) or 0.0
        index, cadence, taken = 0, Cadence(fps), 0
        while cap.grab():
            t = index / rate if rate > 0 else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            index += 1
            if not cadence.due(t):
                continue
            ok, bgr = cap.retrieve()
            if not ok:
                continue
            h, w = bgr.shape[:2]
            f = min(1.0, max_side / max(h, w))
            if f < 1.0:
                bgr = cv2.resize(bgr, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
            yield t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), f
            taken += 1
            if taken >= max_samples:
                log.warning("%s: stopped after %d sampled frames (%.0f s)", shown_path(str(path)), taken, t)
                break
        if index == 0:
            raise NotAnImage(f"{shown_path(str(path))} holds no readable video frames")
    finally:
        if cap is not None:
            cap.release()
        if fd is not None:
            os.close(fd)


def follow(faces: list, previous: tuple | None):
    """The main face of a frame: the one nearest the previous main face, else the largest. (face, switched)."""
    if not faces:
        return None, False
    if previous is not None:
        size = max(previous[2] - previous[0], previous[3] - previous[1], 1.0)
        pcx, pcy = (previous[0] + previous[2]) / 2, (previous[1] + previous[3]) / 2

        def moved(f):
            return np.hypot((f.box[0] + f.box[2]) / 2 - pcx, (f.box[1] + f.box[3]) / 2 - pcy) / size
        nearest = min(faces, key=moved)
        if moved(nearest) <= 1.0:
            return nearest, False
    return max(faces, key=lambda f: f.area), previous is not None


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def split(samples: list[_Sample], breaks: set[int], change: float, gap: float) -> list[list[_Sample]]:
    """Cut where a sample is farther than `change` from its segment's running mean, or after a gap."""
    groups: list[list[_Sample]] = []
    total = None
    for i, s in enumerate(samples):
        far = total is not None and float(np.linalg.norm(s.vector - _unit(total))) > change
        if total is None or far or i in breaks or s.t - groups[-1][-1].t > gap:
            groups.append([])
            total = np.zeros_like(s.vector)
        groups[-1].append(s)
        total = total + s.vector
    return groups


def merge_short(groups: list[list[_Sample]], min_duration: float, change: float, step: float, gap: float):
    """Fold segments shorter than `min_duration` into their nearer adjacent neighbour (never across a stretch
    without the face), then rejoin adjacent look-alike neighbours."""
    def length(g):
        return g[-1].t - g[0].t + step

    def adjacent(a, b):
        return groups[b][0].t - groups[a][-1].t <= gap
    groups, alone = [g for g in groups if g], set()
    while True:
        short = [i for i, g in enumerate(groups) if length(g) < min_duration and id(g) not in alone]
        if not short:
            break
        i = min(short, key=lambda j: length(groups[j]))
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(groups) and adjacent(min(i, j), max(i, j))]
        if not neighbours:  # a brief appearance between gaps stays a segment of its own
            alone.add(id(groups[i]))
            continue
        j = min(neighbours, key=lambda n: float(np.linalg.norm(_mean(groups[n]) - _mean(groups[i]))))
        for sample in groups[i]:
            sample.noise = True
        a, b = sorted((i, j))
        groups[a:b + 1] = [groups[a] + groups[b]]
    i = 0
    while i + 1 < len(groups):  # A | (short B, folded away) | A leaves A | A: join them again
        if adjacent(i, i + 1) and float(np.linalg.norm(_mean(groups[i]) - _mean(groups[i + 1]))) <= change / 2:
            groups[i:i + 2] = [groups[i] + groups[i + 1]]
        else:
            i += 1
    return groups


def _mean(group: list[_Sample]) -> np.ndarray:
    core = [s.vector for s in group if not s.noise] or [s.vector for s in group]
    return _unit(np.sum(core, axis=0))


def _mean_blendshapes(group: list[_Sample]) -> np.ndarray:
    core = [s.blendshapes for s in group if not s.noise] or [s.blendshapes for s in group]
    return np.mean(core, axis=0)


def query_video(path: str | Path, index_dir: str | Path | None = None, k: int = 3, settings: Settings | None = None,
                *, fps: float = SAMPLE_FPS, change: float = 0.35, min_duration: float = 1.0, gap: float = 1.5,
                searcher=None) -> list[Segment]:
    """Segments of the main face's expression in a video, each with its top-k memes. Raises NoFace, NotAnImage.
    `settings` opens the Searcher when no `searcher` is given (the CLI passes its own); like `search.query`, the
    video query is an entry point, so without either it reads the environment."""
    from .search import NO_FACE_HINT, Searcher

    own = searcher is None
    searcher = searcher or Searcher(index_dir, settings or Settings.from_env())
    try:
        samples, breaks, previous, last_seen = [], set(), None, None
        for t, rgb, scale in sample_frames(path, fps=fps):
            face, switched = follow(searcher.analyzer.analyze(rgb), previous)
            if face is None or face.embedding is None:
                continue
            if switched or (last_seen is not None and t - last_seen > gap):
                breaks.add(len(samples))
            box = tuple(v / scale for v in face.box)
            samples.append(_Sample(t, box, _unit(np.asarray(face.embedding, np.float32)),
                                   blendshapes=np.asarray(face.blendshapes, np.float32)))
            previous, last_seen = face.box, t
        if not samples:
            raise NoFace(f"no face found in any sampled frame of {shown_path(str(path))}: {NO_FACE_HINT}")
        step = 1.0 / fps
        groups = merge_short(split(samples, breaks, change, gap), min_duration, change, step, gap)
        segments = []
        for g, following in zip(groups, groups[1:] + [None]):
            end = g[-1].t + step if following is None else min(g[-1].t + step, following[0].t)  # never overlapping
            segments.append(Segment(start=g[0].t, end=end, frames=len(g), box=g[len(g) // 2].box,
                                    matches=searcher.search_vector(_mean(g), k, _mean_blendshapes(g))))
        log.info("%s: %d sampled faces, %d segment(s)", path, len(samples), len(segments))
        return segments
    finally:
        if own:
            searcher.close()

