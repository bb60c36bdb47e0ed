"""Frame geometry for face detection: box overlap, non-max suppression, the tiles of the later detector rounds,
and an image pyramid that makes every crop one affine warp."""
from __future__ import annotations

import math

import numpy as np

NMS_IOU = 0.3  # detector boxes overlapping more than this are one face (face_detector_graph)
# Tile levels of the later rounds, each (side / short side, min and max long/short ratio it runs for, least overlap
# between neighbours / side). Panels: the fewest squares of the short side covering a long frame (a near-square
# frame's panel is the full frame again). Quarters: squares of 0.6x the short side overlapping by a fifth, only for
# near-square frames (a long frame's panels already zoom in). One detector run (~1.3 ms) per tile.
TILE_LEVELS = ((1.0, 1.3, math.inf, 0.0), (0.6, 0.0, 1.3, 0.2))
QUARTERS_PER_SIDE = 2  # quarters grow (up to the short side) rather than need a third row or column


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


def starts(length: int, side: int, count: int) -> list[int]:
    if count <= 1 or length <= side:
        return [max(0, (length - side) // 2)]
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def tiles(width: int, height: int, max_tiles: int = 24, levels=None) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles (x0, y0, x1, y1) for the second detector pass, coarse level first.

    Level 1 (long/short >= 1.3): the fewest squares of the short side that cover the long one, spread evenly
    (the panels of a strip, and the faces a wide frame's letterbox shrinks). Level 2 (near-square frames):
    squares of 0.6x the short side overlapping by a fifth (2x2 on a square), so every face reaches the detector
    ~1.7x larger.
    `levels` overrides TILE_LEVELS. At most `max_tiles`.
    """
    return [t for level in tile_levels(width, height, levels) for t in level][:max_tiles]


def tile_levels(width: int, height: int, levels=None) -> list[list[tuple[int, int, int, int]]]:
    """The tiles of `tiles`, one list per level (empty where the level does not apply)."""
    short, long_ = min(width, height), max(width, height)
    out = []
    for frac, min_ratio, max_ratio, overlap in levels or TILE_LEVELS:
        side = min(short, int(short * frac))
        if side < 48 or not min_ratio * short <= long_ < max_ratio * short:
            out.append([])
            continue
        if frac < 1.0:
            n = QUARTERS_PER_SIDE
            side = max(side, min(short, math.ceil(long_ / (n - (n - 1) * overlap))))
        step = (1 - overlap) * side
        nx = 1 if width <= side else math.ceil((width - side) / step - 1e-6) + 1
        ny = 1 if height <= side else math.ceil((height - side) / step - 1e-6) + 1
        out.append([(x, y, x + side, y + side) for y in starts(height, side, ny) for x in starts(width, side, nx)])
    return out


def mesh_box(pts: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def same_face(a: np.ndarray, b: np.ndarray) -> bool:
    """Two meshes of one face: their boxes overlap (IoU > 0.5) or one lies mostly inside the other."""
    ba, bb = mesh_box(a), mesh_box(b)
    ix = max(0.0, min(ba[2], bb[2]) - max(ba[0], bb[0]))
    iy = max(0.0, min(ba[3], bb[3]) - max(ba[1], bb[1]))
    smaller = min((ba[2] - ba[0]) * (ba[3] - ba[1]), (bb[2] - bb[0]) * (bb[3] - bb[1]))
    return iou(ba, bb) > 0.5 or (smaller > 0 and ix * iy / smaller > 0.6)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, kps: np.ndarray):
    """MediaPipe's WEIGHTED non-max suppression: each cluster of overlapping boxes becomes their score-weighted
    mean (box and keypoints), scored by its best member."""
    order = np.argsort(-scores)
    boxes = np.asarray(boxes, dtype=np.float64)
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    out = []
    while order.size:
        best, rest = boxes[order[0]], boxes[order]
        ix = np.clip(np.minimum(best[2], rest[:, 2]) - np.maximum(best[0], rest[:, 0]), 0, None)
        iy = np.clip(np.minimum(best[3], rest[:, 3]) - np.maximum(best[1], rest[:, 1]), 0, None)
        inter = ix * iy
        same = inter / np.maximum(areas[order[0]] + areas[order] - inter, 1e-9) > NMS_IOU
        same[0] = True  # the best box itself, even when degenerate
        cluster, order = order[same], order[~same]
        best = cluster[0]
        wts = scores[cluster][:, None]
        box = (boxes[cluster] * wts).sum(0) / wts.sum()
        kp = (np.asarray(kps)[cluster] * wts[:, :, None]).sum(0) / wts.sum()
        out.append((float(scores[best]), tuple(box), kp))
    return [(tuple(b), s, k) for s, b, k in out]


class Pyramid:
    """The frame and its halvings, made on demand: every crop is one affine warp from the level just above it."""

    def __init__(self, rgb: np.ndarray):
        self.levels = [(rgb, 1.0)]

    def level(self, scale: float) -> tuple[np.ndarray, float]:
        """The smallest level at least `scale` times the frame (so the warp shrinks by at most 2x)."""
        import cv2

        while self.levels[-1][1] / 2 >= scale:
            img, s = self.levels[-1]
            h, w = img.shape[:2]
            if min(h, w) < 4:
                break
            even = img[: h // 2 * 2, : w // 2 * 2]  # exact halving: OpenCV's fast INTER_AREA path
            self.levels.append((cv2.resize(even, (w // 2, h // 2), interpolation=cv2.INTER_AREA), s / 2))
        for img, s in reversed(self.levels):
            if s >= scale:
                return img, s
        return self.levels[0]

    def warp(self, m: np.ndarray, side: int, border, value=0) -> np.ndarray:
        """`side`x`side` crop of the frame whose frame->crop affine map is `m` (2x3)."""
        import cv2

        f = math.sqrt(abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]))
        img, s = self.level(f)
        ms = m.copy()
        ms[:, :2] /= s  # level pixels -> crop pixels
        return cv2.warpAffine(img, ms, (side, side), flags=cv2.INTER_LINEAR, borderMode=border,
                              borderValue=(value, value, value))
