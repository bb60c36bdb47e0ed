"""FaceDetector: every face of an RGB frame with its box, detector score, 478 landmarks and 52 blendshapes.

Memes are hard for a detector made for selfies: small faces in multi-panel strips, close-ups where the face fills
the frame, wide or tall canvases whose faces shrink in the detector's 128x128 letterbox. So the three models of the
Face Landmarker bundle (BlazeFace short-range detector, 478-point face mesh, blendshapes) run here directly on
LiteRT, fed with our own crops, instead of through the mediapipe task graph:

1. the detector sees the whole frame (one 128x128 run, as the plain Face Landmarker does), and the face mesh
   confirms its boxes (presence >= 0.5, as the task does);
2. only when no face is confirmed do more detector rounds run, cheapest first, each only until one confirms a
   face: the frame padded with grey (close-ups), the panels (squares of the short side along a long frame), the
   quarters (2x2 squares of 0.6x the short side of a near-square frame). A wide or tall frame also gets its
   panels after a hit. Weak hints of the full-frame run skip rounds that would find nothing (CLOSE_UP_HINT,
   SMALL_FACE_HINT); boxes of later rounds need a higher score (SECOND_PASS_SCORE) and are merged (weighted NMS);
3. the face mesh runs once per box on a 256x256 crop rotated upright by the eye keypoints, as the task graph
   does (same landmarks within a pixel); a box it does not confirm is dropped, and a face found twice (a tile
   and the full frame, a face and a part of it) is kept once. The blendshapes model then reads the mesh.

Running the models directly costs no second detector run per face (the task graph re-detects inside every crop),
so the full-frame path is a little cheaper than the plain Face Landmarker, and each extra round is one 128x128
detector run (~1.3 ms) made with one affine warp from an image pyramid: that is what a faceless meme pays.
`scripts/measure_detection.py` measures the effect on the shared memes.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from ..models import FACE_LANDMARKER, model_path
from ..settings import Settings
from .bundle import BLENDSHAPE_INPUT, DETECT_SIDE, MESH_SIDE, BundleModels, sigmoid, ssd_anchors
from .regions import Pyramid, iou, same_face, tile_levels, weighted_nms

log = logging.getLogger(__name__)

# What the index records as "the detector that analysed this file" (index facts and rows). Bump it whenever
# detect() finds other faces on the same pixels: the next incremental build re-analyses the files an older
# detector found no face in.
DETECTOR_VERSION = "1"

ROI_SCALE = 1.5  # mesh crop side / detector box side (face_landmarker_graph)
MIN_PRESENCE = 0.5  # face mesh presence needed to keep a box (the task's min_face_presence_confidence)
WIDE = 1.6  # long/short side ratio past which faces shrink in the letterbox: panels run even after a hit
SECOND_PASS_SCORE = 0.65  # detector score needed in the later rounds (the full frame keeps settings.min_face_score)
PAD_FRACTION = 0.3  # close-up round: grey border of this fraction of the long side on each side
# The close-up round runs only when the full frame shows a big face-like box (side >= 0.4x the short side) scoring at
# least this, too weak to count: a face too big for the detector looks like that. Skips it on ~2/3 of faceless memes.
CLOSE_UP_HINT = 0.2
# Likewise the quarters run only when some small box (side < 0.25x the short side) of the full frame scores at least
# this: skips ~1/5 of them at no loss on the shared memes.
SMALL_FACE_HINT = 0.12
PAD_GREY = 127


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


class FaceDetector:
    """Faces of RGB frames. Not picklable (native interpreters): make one per process, close it or use `with`."""

    def __init__(self, settings: Settings | None = None, num_threads: int = 1):
        self.settings = settings or Settings.from_env()
        self._models = BundleModels(model_path(FACE_LANDMARKER, self.settings.models_dir), num_threads)
        self._anchors = ssd_anchors()
        self._hints = (0.0, 0.0)  # (big, small) face-like scores of the last detector run too weak to count
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        self._models.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, key: str, tensor: np.ndarray) -> dict:
        return self._models.run(key, tensor)

    # -- detector passes -------------------------------------------------------------------------------
    def _detect_region(self, pyr: Pyramid, x0: float, y0: float, x1: float, y1: float, value: int = 0,
                       min_score: float | None = None):
        """Detections in the frame region (x0, y0, x1, y1), letterboxed into 128x128; it may reach past the
        frame (the outside is `value` grey). Returns [(box, score, 6x2 keypoints)] in frame pixels."""
        import cv2

        f = DETECT_SIDE / max(x1 - x0, y1 - y0)
        ox = (DETECT_SIDE - f * (x1 - x0)) / 2 - f * x0
        oy = (DETECT_SIDE - f * (y1 - y0)) / 2 - f * y0
        m = np.array([[f, 0, ox], [0, f, oy]], dtype=np.float64)
        crop = pyr.warp(m, DETECT_SIDE, cv2.BORDER_CONSTANT, value)
        tensor = (crop.astype(np.float32) * (2 / 255.0) - 1.0)[None]
        out = self._run("detector", tensor)
        reg = out[(1, 896, 16)][0]
        scores = sigmoid(out[(1, 896, 1)][0, :, 0])
        side = np.maximum(reg[:, 2], reg[:, 3])
        big, small = side >= 0.4 * f * min(x1 - x0, y1 - y0), side < 0.25 * f * min(x1 - x0, y1 - y0)
        self._hints = (float(scores[big].max()) if big.any() else 0.0,  # see CLOSE_UP_HINT, SMALL_FACE_HINT
                       float(scores[small].max()) if small.any() else 0.0)
        keep = np.nonzero(scores >= (self.settings.min_face_score if min_score is None else min_score))[0]
        if keep.size == 0:
            return []
        reg = reg[keep]
        anchors = self._anchors[keep] * DETECT_SIDE
        cx, cy = reg[:, 0] + anchors[:, 0], reg[:, 1] + anchors[:, 1]
        boxes = np.stack([cx - reg[:, 2] / 2, cy - reg[:, 3] / 2, cx + reg[:, 2] / 2, cy + reg[:, 3] / 2], 1)
        kps = reg[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        dets = []
        for box, score, kp in weighted_nms(scores[keep], boxes, kps):
            box = ((box[0] - ox) / f, (box[1] - oy) / f, (box[2] - ox) / f, (box[3] - oy) / f)
            kp = (kp - (ox, oy)) / f
            dets.append((box, score, kp))
        return dets

    def _rounds(self, w: int, h: int):
        """The detector passes after the full frame, as rounds of regions: [(x0, y0, x1, y1, fill)]."""
        pad = PAD_FRACTION * max(w, h)  # a close-up? Padded, the face becomes a face in a frame
        rounds = [[(-pad, -pad, w + pad, h + pad, PAD_GREY)]] if PAD_FRACTION > 0 else [[]]
        rounds += [[(*t, 0) for t in level] for level in tile_levels(w, h)]  # panels, then quarters
        return rounds + [[]] * (3 - len(rounds))

    def _clean(self, dets, w: int, h: int):
        """Merged (weighted NMS), clipped to the frame, big enough to describe."""
        if len(dets) > 1:
            dets = weighted_nms(np.array([d[1] for d in dets]), np.array([d[0] for d in dets]),
                                 np.array([d[2] for d in dets]))
        out = []
        for box, score, kp in dets:
            box = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
            if min(box[2] - box[0], box[3] - box[1]) >= self.settings.min_face_px:
                out.append((tuple(float(v) for v in box), float(score), kp))
        return out

    def boxes(self, rgb: np.ndarray) -> list[tuple[tuple, float]]:
        """Detector boxes (x0, y0, x1, y1) and scores of every pass, merged, before the mesh confirms them."""
        rgb = _as_rgb(rgb)
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            return []
        pyr = Pyramid(rgb)
        with self._lock:
            return self._boxes(rgb, pyr, w, h)

    def _boxes(self, rgb, pyr, w, h):
        dets = self._detect_region(pyr, 0, 0, w, h)
        if self.settings.second_pass:
            strict = max(self.settings.min_face_score, SECOND_PASS_SCORE)
            for regions in self._rounds(w, h):
                for x0, y0, x1, y1, fill in regions:
                    dets += self._detect_region(pyr, x0, y0, x1, y1, fill, strict)
        return [(box, score) for box, score, _ in self._clean(dets, w, h)]

    # -- mesh and blendshapes --------------------------------------------------------------------------
    def _describe(self, pyr: Pyramid, box: tuple, score: float, kp: np.ndarray) -> Face | None:
        import cv2

        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        # Upright crop: the eye keypoints (0, 1) level, as the task graph's DetectionsToRects does.
        angle = math.atan2(kp[1, 1] - kp[0, 1], kp[1, 0] - kp[0, 0])
        side = ROI_SCALE * max(box[2] - box[0], box[3] - box[1])
        c, s = math.cos(angle), math.sin(angle)
        # crop -> frame: p = centre + side/MESH_SIDE * R(angle) (u - MESH_SIDE/2)
        k = side / MESH_SIDE
        to_frame = np.array([[k * c, -k * s, cx - k * (c - s) * MESH_SIDE / 2],
                             [k * s, k * c, cy - k * (s + c) * MESH_SIDE / 2]], dtype=np.float64)
        to_crop = cv2.invertAffineTransform(to_frame)
        crop = pyr.warp(to_crop, MESH_SIDE, cv2.BORDER_REPLICATE)
        out = self._run("mesh", (crop.astype(np.float32) * (1 / 255.0))[None])
        presence = float(sigmoid(out[(1, 1, 1, 1)].ravel()[0]))
        log.debug("presence %.3f for box %s", presence, box)
        if presence < MIN_PRESENCE:
            return None
        mesh = out[(1, 1, 1, 1434)].reshape(478, 3).astype(np.float64)
        pts = np.empty((478, 3), dtype=np.float32)
        pts[:, :2] = mesh[:, :2] @ to_frame[:, :2].T + to_frame[:, 2]
        pts[:, 2] = mesh[:, 2] * k
        shapes = self._run("shapes", pts[BLENDSHAPE_INPUT, :2][None].astype(np.float32))
        return Face(box=box, score=score, landmarks=pts,
                    blendshapes=np.asarray(next(iter(shapes.values())), dtype=np.float32).ravel())

    def detect(self, rgb: np.ndarray, frame: int = 0) -> list[Face]:
        """Faces of one RGB uint8 frame, largest first, at most settings.max_faces.

        The full frame first (what the plain Face Landmarker sees). Only when the mesh confirms none of its boxes
        do the next rounds run, cheapest first, each until one confirms a face: the padded frame (close-ups), the
        panels of a strip (squares of the short side), the quarters (squares of 0.6x the short side). A wide or
        tall frame also gets its panels after a hit: the letterbox of the full frame shrinks its faces.
        """
        rgb = _as_rgb(rgb)
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            return []
        with self._lock:  # the interpreters hold per-call state: one frame at a time
            faces = self._detect(rgb)
        for face in faces:
            face.frame = frame
        faces.sort(key=lambda fc: -fc.area)
        return faces[: self.settings.max_faces]

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        pyr = Pyramid(rgb)
        faces: list[Face] = []
        tried: list[tuple] = []
        full = self._detect_region(pyr, 0, 0, w, h)
        big_hint, small_hint = self._hints
        self._confirm(pyr, self._clean(full, w, h), faces, tried)
        if self.settings.second_pass:
            strict = max(self.settings.min_face_score, SECOND_PASS_SCORE)
            pad, panels, *finer = self._rounds(w, h)
            if faces:  # then only a wide frame's panels
                rounds = [panels] if max(w, h) >= WIDE * min(w, h) else []
            else:
                rounds = [pad if big_hint >= CLOSE_UP_HINT else [], panels]
                rounds += finer if small_hint >= SMALL_FACE_HINT else []
            for regions in rounds:
                if not regions:
                    continue
                dets = []
                for x0, y0, x1, y1, fill in regions:
                    dets += self._detect_region(pyr, x0, y0, x1, y1, fill, strict)
                if self._confirm(pyr, self._clean(dets, w, h), faces, tried):
                    break
        return faces

    def _confirm(self, pyr: Pyramid, dets, faces: list[Face], tried: list[tuple]) -> int:
        """Run the mesh on each new box (largest first) and add the faces it confirms; returns how many."""
        added = 0
        for box, score, kp in sorted(dets, key=lambda d: -(d[0][2] - d[0][0]) * (d[0][3] - d[0][1])):
            if any(iou(box, t) > 0.5 for t in tried):
                continue  # this face (or non-face) was looked at already
            tried.append(box)
            face = self._describe(pyr, box, score, kp)
            if face is None or any(same_face(face.landmarks, other.landmarks) for other in faces):
                continue  # not a face, or one already found (a tile and the full frame, a face and a part of it)
            faces.append(face)
            added += 1
        return added


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8, C-contiguous (grey H x W is repeated, an alpha channel dropped)."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)


