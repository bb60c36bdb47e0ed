"""FaceAnalyzer: one file (or bytes, or an RGB array) -> its faces, each with an expression embedding."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .embedders import ExpressionEmbedder, get_embedder
from .faces import Face, FaceDetector
from .images import SAMPLE_FPS, Frame, decode, frames
from .settings import Settings

log = logging.getLogger(__name__)
QUERY_FRAMES = 40  # frames of an animated query looked at, at most: 10 s of it at SAMPLE_FPS


class FaceAnalyzer:
    """Detector + embedder, loaded once. Not picklable: one per process; close it or use `with`."""

    def __init__(self, settings: Settings, embedder: ExpressionEmbedder | str | None = None, num_threads: int = 1):
        self.settings = settings
        self.embedder = embedder if isinstance(embedder, ExpressionEmbedder) else get_embedder(self.settings, embedder)
        self.detector = FaceDetector(self.settings, num_threads=num_threads)  # the detector is most of the work

    def frames(self, source: str | Path | bytes | np.ndarray) -> list[Frame]:
        if isinstance(source, np.ndarray):
            return [Frame(index=0, rgb=np.ascontiguousarray(source[..., :3], dtype=np.uint8), scale=1.0)]
        s = self.settings
        return decode(source, max_pixels=s.max_pixels, hard_max_pixels=s.hard_max_pixels, max_frames=s.max_frames)

    def analyze_frame(self, frame: Frame) -> list[Face]:
        faces = self.detector.detect(frame.rgb, frame=frame.index)
        if faces:
            for face, vector in zip(faces, self.embedder.embed(frame.rgb, faces)):
                face.embedding = vector
        if frame.scale != 1.0:  # report boxes and landmarks in the file's own (EXIF-upright) pixels
            for face in faces:
                face.box = tuple(v / frame.scale for v in face.box)
                face.landmarks = face.landmarks / frame.scale
        return faces

    def first_faces(self, source: str | Path | bytes | np.ndarray) -> list[Face]:
        """The faces of the first frame that has any (a query's). An animation is looked at as a video query looks
        at a clip, about SAMPLE_FPS frames a second of its own timing for up to QUERY_FRAMES frames, so a face
        that shows up late is found (the build's three frames spread over it could miss it)."""
        if isinstance(source, np.ndarray):
            return self.analyze(source)
        s = self.settings
        for frame in frames(source, s.max_pixels, s.hard_max_pixels, max_frames=QUERY_FRAMES, fps=SAMPLE_FPS):
            faces = self.analyze_frame(frame)
            if faces:
                return faces
        return []

    def analyze(self, source: str | Path | bytes | np.ndarray) -> list[Face]:
        """Every face of every sampled frame, each with `.embedding` set. Raises NotAnImage / ImageTooLarge."""
        return [face for frame in self.frames(source) for face in self.analyze_frame(frame)]

    def close(self) -> None:
        self.detector.close()
        close = getattr(self.embedder, "close", None)
        if close:
            close()

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def analyze(source: str | Path | bytes | np.ndarray, settings: Settings | None = None,
            embedder: str | None = None) -> list[Face]:
    """Faces of one image with box, score, landmarks, blendshapes and embedding (loads the models each call)."""
    with FaceAnalyzer(settings or Settings.from_env(), embedder) as analyzer:
        return analyzer.analyze(source)
