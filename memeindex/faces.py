"""FaceDetector: every face of an RGB frame with its box, detector score, 478 landmarks and 52 blendshapes.

Memes are hard for a detector made for selfies: small faces in multi-panel strips, and close-ups where the face
fills the frame. So detection runs in cheap passes of the bundle's own BlazeFace detector (full frame; then, only
when that finds nothing, a padded frame for close-ups and overlapping tiles for small faces), duplicates are
merged, and the landmarker then runs once per face on a square crop around it, where it sees the face at the
scale it was trained on. A box the landmarker cannot confirm is dropped, which keeps false faces rare.
"""
from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .models import FACE_LANDMARKER, model_path
from .settings import Settings

log = logging.getLogger(__name__)

CROP_SIDE = 256  # the landmarker looks at 192x192 crops; 256 keeps detail without wasted resizing
DETECT_SIDE = 384  # regions are shrunk to this long side before the 128x128 detector sees them


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the decoded frame
    score: float  # BlazeFace detection score
    landmarks: np.ndarray  # 478 x 3 float32: x, y in frame pixels, z at the same scale
    blendshapes: np.ndarray  # 52 float32 scores in BLENDSHAPE_NAMES order
    frame: int = 0
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def merge_boxes(boxes: list[tuple[tuple, float]], threshold: float = 0.3) -> list[tuple[tuple, float]]:
    """Non-maximum suppression: overlapping boxes from several passes become the best-scored one."""
    kept: list[tuple[tuple, float]] = []
    for box, score in sorted(boxes, key=lambda b: -b[1]):
        if all(iou(box, k) < threshold for k, _ in kept):
            kept.append((box, score))
    return kept


def tiles(width: int, height: int, max_tiles: int = 24) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles at two zoom levels: one panel of a strip, then a quarter of the short side."""
    short = min(width, height)
    out = []
    for side in (short, short // 2):
        if side < 64 or (side == short and max(width, height) < 1.3 * short):
            continue  # too small to hold a face, or the same as the full frame
        stride = max(side // 2, 1)
        xs = list(range(0, max(width - side, 0) + 1, stride)) or [0]
        ys = list(range(0, max(height - side, 0) + 1, stride)) or [0]
        if xs[-1] + side < width:
            xs.append(width - side)
        if ys[-1] + side < height:
            ys.append(height - side)
        level = [(x, y, x + side, y + side) for y in ys for x in xs]
        if len(out) + len(level) > max_tiles:
            break
        out += level
    return out


class FaceDetector:
    """Faces of RGB frames. Not picklable (native graph): make one per process, close it or use `with`."""

    def __init__(self, settings: Settings | None = None):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self.settings = settings or Settings.from_env()
        task = model_path(FACE_LANDMARKER, self.settings.models_dir)
        with zipfile.ZipFile(task) as bundle:  # the bundle's own detector, run alone for its cheap passes
            detector_bytes = bundle.read("face_detector.tflite")
        self._mp = mp
        self._detector = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=detector_bytes),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=self.settings.min_face_score))
        self._landmarker = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(task)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=2, min_face_detection_confidence=0.3,
            output_face_blendshapes=True))

    # -- lifecycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        for attr in ("_detector", "_landmarker"):
            task = getattr(self, attr, None)
            if task is not None:
                task.close()
                setattr(self, attr, None)

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- passes ----------------------------------------------------------------------------------------
    def _image(self, rgb: np.ndarray):
        return self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))

    def _detect_region(self, rgb: np.ndarray, x0: int = 0, y0: int = 0) -> list[tuple[tuple, float]]:
        import cv2

        h, w = rgb.shape[:2]
        f = min(1.0, DETECT_SIDE / max(h, w))
        small = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) \
            if f < 1.0 else rgb
        out = []
        for det in self._detector.detect(self._image(small)).detections:
            b = det.bounding_box
            box = (x0 + b.origin_x / f, y0 + b.origin_y / f,
                   x0 + (b.origin_x + b.width) / f, y0 + (b.origin_y + b.height) / f)
            out.append((box, float(det.categories[0].score)))
        return out

    def _second_pass(self, rgb: np.ndarray) -> list[tuple[tuple, float]]:
        h, w = rgb.shape[:2]
        pad = max(h, w) // 3  # a close-up face becomes a face in a frame
        padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), constant_values=127)
        found = self._detect_region(padded, -pad, -pad)
        for x0, y0, x1, y1 in tiles(w, h):
            found += self._detect_region(rgb[y0:y1, x0:x1], x0, y0)
        return found

    def boxes(self, rgb: np.ndarray) -> list[tuple[tuple, float]]:
        found = self._detect_region(rgb)
        if not found and self.settings.second_pass:
            found = self._second_pass(rgb)
        h, w = rgb.shape[:2]
        clipped = [((max(0.0, b[0]), max(0.0, b[1]), min(float(w), b[2]), min(float(h), b[3])), s) for b, s in found]
        return [(b, s) for b, s in merge_boxes(clipped)
                if min(b[2] - b[0], b[3] - b[1]) >= self.settings.min_face_px]

    # -- landmarks -------------------------------------------------------------------------------------
    def _describe(self, rgb: np.ndarray, box: tuple, score: float) -> Face | None:
        import cv2

        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = 2.2 * max(box[2] - box[0], box[3] - box[1])
        # Affine crop: out-of-frame parts come back grey, so faces at the edge keep their place in the crop.
        f = CROP_SIDE / side
        m = np.array([[f, 0, CROP_SIDE / 2 - f * cx], [0, f, CROP_SIDE / 2 - f * cy]], dtype=np.float32)
        crop = cv2.warpAffine(rgb, m, (CROP_SIDE, CROP_SIDE), flags=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(127, 127, 127))
        result = self._landmarker.detect(self._image(crop))
        if not result.face_landmarks:
            return None
        # The crop may show a neighbour's face too: take the face nearest the centre.
        best = min(range(len(result.face_landmarks)),
                   key=lambda i: (result.face_landmarks[i][1].x - 0.5) ** 2 + (result.face_landmarks[i][1].y - 0.5) ** 2)
        pts = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[best]], dtype=np.float32) * CROP_SIDE
        pts[:, 0] = (pts[:, 0] - m[0, 2]) / f
        pts[:, 1] = (pts[:, 1] - m[1, 2]) / f
        pts[:, 2] = pts[:, 2] / f
        lx0, ly0 = pts[:, :2].min(axis=0)
        lx1, ly1 = pts[:, :2].max(axis=0)
        if iou(box, (lx0, ly0, lx1, ly1)) < 0.2:
            return None  # the landmarker found some other face, not the one the detector boxed
        shapes = np.array([c.score for c in result.face_blendshapes[best]], dtype=np.float32)
        return Face(box=tuple(float(v) for v in box), score=score, landmarks=pts, blendshapes=shapes)

    def detect(self, rgb: np.ndarray, frame: int = 0) -> list[Face]:
        """Faces of one RGB uint8 frame, largest first, at most settings.max_faces."""
        faces = []
        for box, score in self.boxes(rgb):
            face = self._describe(rgb, box, score)
            if face is not None:
                face.frame = frame
                faces.append(face)
        faces.sort(key=lambda fc: -fc.area)
        return faces[: self.settings.max_faces]


def blendshape_names() -> list[str]:
    """The 52 blendshape names in the order the landmarker reports them."""
    return list(BLENDSHAPE_NAMES)


BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
