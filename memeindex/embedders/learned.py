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
FACE_SIDE = 112  # side of the colour crop the pretrained (face-api.js) branch of expression-v2 sees


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


def _warp(src: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """src warped by the 2x3 frame -> crop map m into a size x size crop (out-of-frame parts replicate the border)."""
    import cv2

    # Shrinking a large face: area-average first (a pyramid), else the warp aliases fine texture away.
    scale = float(min(np.hypot(m[0, 0], m[1, 0]), np.hypot(m[0, 1], m[1, 1])))
    while scale < 0.5 and min(src.shape[:2]) > 2 * size:
        src = cv2.pyrDown(src)
        m = m.copy()
        m[:, :2] *= 2.0
        scale *= 2.0
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_face(gray: np.ndarray, landmarks: np.ndarray, size: int = CROP, zoom: float = 1.0) -> np.ndarray:
    """The aligned crop (uint8, size x size) of the face whose landmarks are given (gray or RGB frame)."""
    return _warp(gray, alignment_matrix(landmarks, size, zoom), size)


def box_matrix(box, size: int = FACE_SIDE, margin: float = 0.0) -> np.ndarray:
    """2x3 map from frame pixels to a size x size crop of the detector's box widened by `margin` per side.

    The box's own aspect ratio is stretched to the square, as face-api.js's published figures were measured.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    x0, y0, w, h = x0 - margin * w, y0 - margin * h, w * (1 + 2 * margin), h * (1 + 2 * margin)
    return np.array([[size / w, 0, -x0 * size / w], [0, size / h, -y0 * size / h]], np.float32)


def _rgb(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.dstack([frame] * 3) if frame.ndim == 2 else frame[..., :3], dtype=np.uint8)


# The colour crops a model's pretrained branch may see (the registry names one per model), each
# (rgb frame, detector box, landmarks) -> uint8 [FACE_SIDE, FACE_SIDE, 3].
COLOR_CROPS = {
    "box": lambda rgb, box, landmarks: _warp(_rgb(rgb), box_matrix(box, FACE_SIDE, 0.0), FACE_SIDE),
    "box10": lambda rgb, box, landmarks: _warp(_rgb(rgb), box_matrix(box, FACE_SIDE, 0.10), FACE_SIDE),
    "aligned": lambda rgb, box, landmarks: align_face(_rgb(rgb), landmarks, FACE_SIDE),
}


def face_inputs(rgb: np.ndarray, faces: list[Face], size: int = CROP, zoom: float = 1.0):
    """(crops uint8 [n, size, size], blendshapes float32 [n, 52]) for the faces of one frame."""
    gray = to_gray(rgb)
    crops = np.stack([align_face(gray, f.landmarks, size, zoom) for f in faces]) if faces \
        else np.zeros((0, size, size), np.uint8)
    shapes = np.stack([np.asarray(f.blendshapes, np.float32) for f in faces]) if faces \
        else np.zeros((0, N_BLENDSHAPES), np.float32)
    return crops, shapes


class LearnedEmbedder:
    """A trained expression embedding. The registry builds it from a verified file and names its `model_id`.

    Inputs are recognised by shape: [n, s, s, 1] the aligned gray crop, [n, 52] the blendshapes and, when the
    model has a pretrained colour branch (expression-v2), [n, 112, 112, 3] the colour crop named by `color_crop`.
    """

    def __init__(self, path: str | Path, model_id: str | None = None, num_threads: int = 1,
                 color_crop: str | None = None, sha256: str = ""):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.exists():
            from ..errors import ModelMissing

            raise ModelMissing(f"learned model {self.path} is missing")
        self.model_id = model_id or self.path.stem
        self.model_sha256 = sha256  # the registry's pin, checked against the file before this is built
        self._lock = threading.Lock()
        # The bytes, not the path: LiteRT takes model_path as UTF-8 text only, and a checkout whose path is not
        # UTF-8 (a surrogate-escaped str) raised TypeError; the face models are read so too (faces/bundle.py).
        self._interp = Interpreter(model_content=self.path.read_bytes(), num_threads=num_threads)
        inputs = self._interp.get_input_details()
        self._image_in = next(d for d in inputs if len(d["shape"]) == 4 and d["shape"][-1] == 1)
        self._shapes_in = next(d for d in inputs if len(d["shape"]) == 2)
        self._color_in = next((d for d in inputs if len(d["shape"]) == 4 and d["shape"][-1] == 3), None)
        if self._color_in is not None and color_crop not in COLOR_CROPS:
            raise ValueError(f"{self.path.name} has a colour input: name its crop (one of {sorted(COLOR_CROPS)})")
        self._color_crop = COLOR_CROPS[color_crop] if self._color_in is not None else None
        self._out = self._interp.get_output_details()[0]
        self.crop = int(self._image_in["shape"][1])
        self.dim = int(self._out["shape"][-1])
        self._batch = None

    def _resize(self, n: int) -> None:
        if self._batch == n:
            return
        self._interp.resize_tensor_input(self._image_in["index"], [n, self.crop, self.crop, 1])
        self._interp.resize_tensor_input(self._shapes_in["index"], [n, N_BLENDSHAPES])
        if self._color_in is not None:
            self._interp.resize_tensor_input(self._color_in["index"], [n, FACE_SIDE, FACE_SIDE, 3])
        self._interp.allocate_tensors()
        self._batch = n

    def embed_inputs(self, crops: np.ndarray, shapes: np.ndarray, colors: np.ndarray | None = None) -> np.ndarray:
        """Embeddings of precomputed model inputs (uint8 gray crops [n, s, s], blendshapes [n, 52], and for a
        model with a colour branch uint8 colour crops [n, 112, 112, 3])."""
        n = len(crops)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            self._resize(n)
            self._interp.set_tensor(self._image_in["index"],
                                    np.asarray(crops, np.float32).reshape(n, self.crop, self.crop, 1))
            self._interp.set_tensor(self._shapes_in["index"], np.asarray(shapes, np.float32).reshape(n, -1))
            if self._color_in is not None:
                self._interp.set_tensor(self._color_in["index"],
                                        np.asarray(colors, np.float32).reshape(n, FACE_SIDE, FACE_SIDE, 3))
            self._interp.invoke()
            out = np.array(self._interp.get_tensor(self._out["index"]), dtype=np.float32)
        return l2_normalise(out)

    def color_inputs(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray | None:
        """The colour crops this model's pretrained branch sees (None for a model without one)."""
        if self._color_crop is None:
            return None
        if not faces:
            return np.zeros((0, FACE_SIDE, FACE_SIDE, 3), np.uint8)
        return np.stack([self._color_crop(rgb, f.box, f.landmarks) for f in faces])

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        crops, shapes = face_inputs(rgb, faces, self.crop)
        return self.embed_inputs(crops, shapes, self.color_inputs(rgb, faces))

    def close(self) -> None:
        self._interp = None
