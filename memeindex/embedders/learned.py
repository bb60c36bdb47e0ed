"""LearnedEmbedder: a trained expression model (`weights/expression-*.tflite`), run with ai-edge-litert.

The model sees, per face, exactly two things, both computed here and nowhere else (training extraction imports
`face_inputs` too, so train and inference cannot drift apart):

* the face crop aligned by the landmarks: grayscale, eyes level, fixed inter-ocular distance, `CROP` px square;
* the 52 MediaPipe blendshape scores.

It returns `dim` float32 per face (read from the model), L2-normalised. TensorFlow is never imported at run time.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from ..faces import Face
from .base import N_BLENDSHAPES, l2_normalise

log = logging.getLogger(__name__)

CROP = 48  # side of the aligned crop the model sees
EYE_Y = 0.36  # eye line, as a fraction of the crop height from the top
EYE_DIST = 0.34  # inter-ocular distance (eye centre to eye centre), as a fraction of the crop side
# MediaPipe face-mesh corners of the two eyes: the eye centre is the mean of its two corners (the iris moves).
EYE_A = (33, 133)
EYE_B = (362, 263)


def alignment_matrix(landmarks: np.ndarray, size: int = CROP, zoom: float = 1.0) -> np.ndarray:
    """2x3 affine map from frame pixels to the aligned crop of side `size`.

    The eye centres land level at height EYE_Y*size, EYE_DIST*size/zoom apart, centred horizontally; zoom > 1
    shows more context around the same face (training caches a zoomed-out crop and jitters inside it).
    """
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    a = pts[list(EYE_A)].mean(axis=0)
    b = pts[list(EYE_B)].mean(axis=0)
    if a[0] > b[0]:  # keep the eye on the image's left first, whatever the mesh's handedness
        a, b = b, a
    d = b - a
    dist = max(float(np.hypot(*d)), 1e-6)
    scale = (EYE_DIST * size / zoom) / dist
    cos, sin = d[0] / dist * scale, d[1] / dist * scale
    mid = (a + b) / 2
    rot = np.array([[cos, sin], [-sin, cos]])  # rotates the eye line to horizontal and scales it
    shift = np.array([size / 2, EYE_Y * size + (1 - 1 / zoom) * (0.5 - EYE_Y) * size]) - rot @ mid
    return np.hstack([rot, shift[:, None]]).astype(np.float32)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    import cv2

    if rgb.ndim == 2:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def align_face(gray: np.ndarray, landmarks: np.ndarray, size: int = CROP, zoom: float = 1.0) -> np.ndarray:
    """The aligned grayscale crop (uint8, size x size) of the face whose landmarks are given, from a gray frame."""
    import cv2

    m = alignment_matrix(landmarks, size, zoom)
    # Shrinking a large face: area-average first (a pyramid), else the warp aliases fine texture away.
    scale = float(np.hypot(m[0, 0], m[0, 1]))
    src = gray
    while scale < 0.5 and min(src.shape[:2]) > 2 * size:
        src = cv2.pyrDown(src)
        m = m.copy()
        m[:, :2] *= 2.0
        scale *= 2.0
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def face_inputs(rgb: np.ndarray, faces: list[Face], size: int = CROP, zoom: float = 1.0):
    """(crops uint8 [n, size, size], blendshapes float32 [n, 52]) for the faces of one frame."""
    gray = to_gray(rgb)
    crops = np.stack([align_face(gray, f.landmarks, size, zoom) for f in faces]) if faces \
        else np.zeros((0, size, size), np.uint8)
    shapes = np.stack([np.asarray(f.blendshapes, np.float32) for f in faces]) if faces \
        else np.zeros((0, N_BLENDSHAPES), np.float32)
    return crops, shapes


class LearnedEmbedder:
    """A trained expression embedding. The registry builds it from a verified file and names its `model_id`."""

    def __init__(self, path: str | Path, model_id: str | None = None, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.exists():
            from ..errors import ModelMissing

            raise ModelMissing(f"learned model {self.path} is missing")
        self.model_id = model_id or self.path.stem
        self._lock = threading.Lock()
        self._interp = Interpreter(model_path=str(self.path), num_threads=num_threads)
        inputs = self._interp.get_input_details()
        self._image_in = next(d for d in inputs if len(d["shape"]) == 4)
        self._shapes_in = next(d for d in inputs if len(d["shape"]) == 2)
        self._out = self._interp.get_output_details()[0]
        self.crop = int(self._image_in["shape"][1])
        self.dim = int(self._out["shape"][-1])
        self._batch = None

    def _resize(self, n: int) -> None:
        if self._batch == n:
            return
        self._interp.resize_tensor_input(self._image_in["index"], [n, self.crop, self.crop, 1])
        self._interp.resize_tensor_input(self._shapes_in["index"], [n, N_BLENDSHAPES])
        self._interp.allocate_tensors()
        self._batch = n

    def embed_inputs(self, crops: np.ndarray, shapes: np.ndarray) -> np.ndarray:
        """Embeddings of precomputed model inputs (uint8 crops [n, s, s], blendshapes [n, 52])."""
        n = len(crops)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            self._resize(n)
            self._interp.set_tensor(self._image_in["index"],
                                    np.asarray(crops, np.float32).reshape(n, self.crop, self.crop, 1))
            self._interp.set_tensor(self._shapes_in["index"], np.asarray(shapes, np.float32).reshape(n, -1))
            self._interp.invoke()
            out = np.array(self._interp.get_tensor(self._out["index"]), dtype=np.float32)
        return l2_normalise(out)

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        crops, shapes = face_inputs(rgb, faces, self.crop)
        return self.embed_inputs(crops, shapes)

    def close(self) -> None:
        self._interp = None
