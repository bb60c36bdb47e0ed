"""FaceDetector: every face of an RGB frame with its box, detector score, 478 landmarks and 52 blendshapes.

Memes are hard for a detector made for selfies: small faces in multi-panel strips, close-ups where the face fills
the frame, wide or tall canvases whose faces shrink in the detector's 128x128 letterbox, heads turned away or
tilted. So the models of the Face Landmarker bundle (BlazeFace short-range detector, 478-point face mesh,
blendshapes) and BlazeFace full-range (192x192, made for small and distant faces) run here directly on LiteRT, fed
with our own crops, instead of through the mediapipe task graph:

1. the short-range detector sees the whole frame (one 128x128 run, as the plain Face Landmarker does), and the
   face mesh confirms its boxes (presence >= 0.5, as the task does);
2. only when no face is confirmed do more detector rounds run, cheapest first, each only until one confirms a
   face: the frame padded with grey (close-ups), the panels (squares of the short side along a long frame), the
   quarters (2x2 squares of 0.6x the short side of a near-square frame), then the full-range detector on the whole
   frame and, when it saw a face-like box too small to confirm, on the panels and quarters. Weak hints skip rounds
   that would find nothing (CLOSE_UP_HINT, SMALL_FACE_HINT, FULL_RANGE_GATE, FULL_TILES_HINT). After a hit, a wide
   or tall frame still gets its panels, and a strong box the mesh doubted (MORE_SCORE) the full-range run;
3. the face mesh runs once per box on a 256x256 crop rotated upright by the eye keypoints, as the task graph
   does (same landmarks within a pixel). A box is a face when the mesh confirms it, or, for the turned heads and
   profiles the mesh was not made for, when both detectors see it (_agree: two independent detectors, plus
   landmarks that lie on the box). A frame still without a face gets its strongest doubted box meshed again on
   crops turned by +-45 degrees (a tilted head misleads the eye keypoints). A face found twice (a tile and the full
   frame, the two detectors) is kept once. The blendshapes model then reads the mesh;
4. a frame still without a face gets a last look (_rescue) at its strongest boxes, also those scoring below the
   rounds' thresholds (down to WEAK_SCORE): a box the mesh sees upright *and* on both turned crops is a face (a tiny
   or blurred face scores low with the detectors, but a mesh that only hallucinates a face on a non-face follows the
   crop's angle and loses it when the crop turns), and so is a box scoring TURN_SCORE that the mesh is certain of on
   one turned crop (a tilted or half-turned head);
5. (detector 4) the full-range detector is asked for a second opinion on a box's own crop (_vouch): a short-range box
   the mesh confirms but that scores below VOUCH_SCORE needs it (the real animals' faces the full frame took for
   faces: big boxes scoring 0.5-0.7 that the full-range detector does not see on their crop), and a frame still
   without a face after _rescue gets its strongest boxes down to WEAK_SCORE accepted where the mesh confirms them
   and the full-range detector vouches for them (_vouch_rescue: cartoon faces, small or half-turned heads);
6. (detector 5) a frame still without a face: its strong short-range boxes the mesh doubted are faces where the
   full-range detector vouches for them and the mesh at least lies on the box (_vouch_doubted: the drawn, painted,
   CGI and puppet faces the mesh, made for photographs, cannot read).

Running the models directly costs no second detector run per face (the task graph re-detects inside every crop).
Each extra round is one detector run made with one affine warp from an image pyramid (short-range ~1.3 ms,
full-range ~3x that) plus the mesh on the boxes it finds: that is what a faceless meme pays.
`scripts/measure_detection.py` measures recall per hand label and false faces on the labelled shared memes.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..models import FACE_DETECTOR_FULL_RANGE, FACE_LANDMARKER, model_path
from ..settings import Settings
from .bundle import (BLENDSHAPE_INPUT, DETECT_SIDE, FULL_RANGE_LAYERS, FULL_RANGE_SIDE, MESH_SIDE, BundleModels,
                     sigmoid, ssd_anchors)
from .regions import Pyramid, iou, mesh_box, same_face, tile_levels, weighted_nms

log = logging.getLogger(__name__)

# What the index records as "the detector that analysed this file" (index facts and rows). Bump it whenever
# detect() finds other faces on the same pixels: the next incremental build re-analyses the files an older
# detector found no face in.
# 2: full-range detector, detector agreement, turned mesh retry; 3: _rescue, lower full-range gates; 4: the full-range
# detector's vouch on a box's own crop (fewer animal faces) and _vouch_rescue; 5: _vouch_doubted (strong short-range
# boxes the mesh doubts, vouched for by the full-range detector: cartoon faces)
DETECTOR_VERSION = "5"

FULL_FRAME_ONLY = "-full-frame"  # marks the detector id of a build without the rounds after the full frame


def detector_id(settings: Settings) -> str:
    """What rows and index facts record as the detector that analysed a file: DETECTOR_VERSION, marked when the
    rounds after the full frame are off (`memeindex build --fast`), so that a later build with them re-analyses
    the files the full frame alone found no face in."""
    return DETECTOR_VERSION if settings.second_pass else DETECTOR_VERSION + FULL_FRAME_ONLY


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
# The thresholds below were chosen on the `tune` and `heldout` rows of scripts/data/meme_labels.csv (the `test` rows
# were measured once, after): see scripts/measure_detection.py.
FULL_RANGE_SCORE = 0.5  # BlazeFace full-range boxes scoring at least this go to the mesh
AGREE_SCORE, AGREE_FULL_SCORE, AGREE_IOU = 0.6, 0.5, 0.3  # see FaceDetector._agree
# A frame without a face gets the full-range run only when some short-range run scored a box at least this (too weak
# to count): a frame with nothing face-like anywhere (text, objects) skips it. 0.4 in detector 2; 0.3 (and 0.3 for
# FULL_TILES_HINT) finds 5 more cartoon memes of the 408 dev rows, and with _rescue 2 more human ones (a tiny face
# only the full-range detector sees, weakly), no false face more.
FULL_RANGE_GATE = 0.3
FULL_TILES_HINT = 0.3  # full-range score of a box it could not confirm that calls its run on the tiles
MORE_SCORE = 0.65  # after a hit: a doubted short-range box scoring this calls the full-range run (more faces)
RETURN_SCORE = 0.7  # the turned retry: the strongest doubted box, if it scores at least this, ...
MESH_TURNS = (45.0, -45.0)  # ... is meshed again on crops turned by these degrees
# _rescue (detector 3), for a frame still without a face: its RESCUE_BOXES strongest boxes down to WEAK_SCORE, a face
# where the mesh's presence is STABLE_PRESENCE upright and turned both ways, or SURE_PRESENCE turned for a box scoring
# TURN_SCORE. Chosen on the dev rows (tune, heldout, tune2) of scripts/data/meme_labels.csv.
WEAK_SCORE = 0.3
RESCUE_BOXES = 2
STABLE_PRESENCE = 0.95
TURN_SCORE = 0.6
SURE_PRESENCE = 0.99
# Detector 4, the full-range detector's vouch (FaceDetector._vouch: its score on the box's own crop, VOUCH_CROP x the
# box's side). A short-range box the mesh confirms but that scores below VOUCH_SCORE is a face only when the vouch is
# at least VOUCH_FULL: the real animals' faces the full frame found look like that (score 0.52-0.68, vouch < 0.2: 6 of
# the 8 on the dev rows), the faces of people and cartoons rarely. A frame still without a face after _rescue: its
# VOUCH_BOXES strongest boxes down to WEAK_SCORE are faces when the mesh confirms them and the vouch is VOUCH_WEAK
# (FaceDetector._vouch_rescue). Chosen on the dev rows (tune, heldout, tune2, tune3) of scripts/data/meme_labels.csv.
VOUCH_SCORE = 0.7
VOUCH_FULL = 0.2
VOUCH_WEAK = 0.3
VOUCH_CROP = 2.5
VOUCH_BOXES = 3
# Detector 5, _vouch_doubted, for a frame still without a face after _vouch_rescue: a short-range box scoring at least
# DOUBTED_SCORE that the mesh doubts (drawn, painted, CGI and puppet faces: the mesh was made for photographed ones)
# is a face when the full-range detector vouches for it on its own crop (>= DOUBTED_VOUCH) and the mesh at least lies
# on it (plausible). Chosen on the dev rows: cartoon 77 -> 84 of 168, human 271 -> 272 of 274, false faces 3 of 105 unchanged.
DOUBTED_SCORE = 0.55
DOUBTED_VOUCH = 0.3
WEAK_VOUCH = 0.1  # the lowest vouch worth remembering (both tests read it from one run)


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

    def __init__(self, settings: Settings, num_threads: int = 1):
        self.settings = settings
        models_dir = self.settings.models_dir
        self._models = BundleModels(model_path(FACE_LANDMARKER, models_dir), num_threads,
                                    {"full": model_path(FACE_DETECTOR_FULL_RANGE, models_dir)})
        # detector key -> (input side, anchor centres in input pixels)
        self._detectors = {"detector": (DETECT_SIDE, ssd_anchors() * DETECT_SIDE),
                           "full": (FULL_RANGE_SIDE, ssd_anchors(FULL_RANGE_SIDE, FULL_RANGE_LAYERS) * FULL_RANGE_SIDE)}
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
                       min_score: float | None = None, model: str = "detector",
                       weak: list[_WeakRun] | None = None) -> tuple[list, _Hints]:
        """Detections of `model` (short-range "detector" or "full") in the frame region (x0, y0, x1, y1),
        letterboxed into its square input; the region may reach past the frame (the outside is `value` grey).
        Returns ([(box, score, 6x2 keypoints)] in frame pixels, the run's hints). With `weak`, the anchors scoring
        WEAK_SCORE up to `min_score` are appended to it as one _WeakRun, decoded only if a last look needs them and
        merged among themselves only (so the strong boxes are exactly those without `weak`)."""
        import cv2

        side_in, anchors_px = self._detectors[model]
        f = side_in / max(x1 - x0, y1 - y0)
        ox = (side_in - f * (x1 - x0)) / 2 - f * x0
        oy = (side_in - f * (y1 - y0)) / 2 - f * y0
        m = np.array([[f, 0, ox], [0, f, oy]], dtype=np.float64)
        crop = pyr.warp(m, side_in, cv2.BORDER_CONSTANT, value)
        out = self._models.run_image(model, crop, 2 / 255.0, -1.0)  # the detectors read -1..1
        n = len(anchors_px)
        reg = out[(1, n, 16)][0]
        scores = sigmoid(out[(1, n, 1)][0, :, 0])
        side = np.maximum(reg[:, 2], reg[:, 3])
        big, small = side >= 0.4 * f * min(x1 - x0, y1 - y0), side < 0.25 * f * min(x1 - x0, y1 - y0)
        hints = _Hints(float(scores[big].max()) if big.any() else 0.0,
                       float(scores[small].max()) if small.any() else 0.0, float(scores.max()))
        min_score = self.settings.min_face_score if min_score is None else min_score
        if weak is not None and min_score > WEAK_SCORE:
            low = np.nonzero((scores >= WEAK_SCORE) & (scores < min_score))[0]
            if low.size:
                weak.append(_WeakRun(model, reg[low], anchors_px[low], scores[low], f, ox, oy))
        keep = np.nonzero(scores >= min_score)[0]
        return _decode(reg[keep], anchors_px[keep], scores[keep], f, ox, oy), hints

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

    # -- mesh and blendshapes --------------------------------------------------------------------------
    def _mesh(self, pyr: Pyramid, box: tuple, kp: np.ndarray, turn: float = 0.0) -> tuple[float, np.ndarray]:
        """The face mesh on the box's upright crop, turned `turn` radians more: (presence 0..1, 478 x 3
        landmarks in frame pixels)."""
        import cv2

        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        # Upright crop: the eye keypoints (0, 1) level, as the task graph's DetectionsToRects does.
        angle = math.atan2(kp[1, 1] - kp[0, 1], kp[1, 0] - kp[0, 0]) + turn
        side = ROI_SCALE * max(box[2] - box[0], box[3] - box[1])
        c, s = math.cos(angle), math.sin(angle)
        # crop -> frame: p = centre + side/MESH_SIDE * R(angle) (u - MESH_SIDE/2)
        k = side / MESH_SIDE
        to_frame = np.array([[k * c, -k * s, cx - k * (c - s) * MESH_SIDE / 2],
                             [k * s, k * c, cy - k * (s + c) * MESH_SIDE / 2]], dtype=np.float64)
        to_crop = cv2.invertAffineTransform(to_frame)
        crop = pyr.warp(to_crop, MESH_SIDE, cv2.BORDER_REPLICATE)
        out = self._models.run_image("mesh", crop, 1 / 255.0, 0.0)  # the mesh reads 0..1
        presence = float(sigmoid(out[(1, 1, 1, 1)].ravel()[0]))
        mesh = out[(1, 1, 1, 1434)].reshape(478, 3).astype(np.float64)
        pts = np.empty((478, 3), dtype=np.float32)
        pts[:, :2] = mesh[:, :2] @ to_frame[:, :2].T + to_frame[:, 2]
        pts[:, 2] = mesh[:, 2] * k
        return presence, pts

    def _face(self, box: tuple, score: float, pts: np.ndarray) -> Face:
        shapes = self._run("shapes", pts[BLENDSHAPE_INPUT, :2][None].astype(np.float32))
        return Face(box=box, score=score, landmarks=pts,
                    blendshapes=np.asarray(next(iter(shapes.values())), dtype=np.float32).ravel())

    def detect(self, rgb: np.ndarray, frame: int = 0) -> list[Face]:
        """Faces of one RGB uint8 frame, largest first, at most settings.max_faces.

        The full frame first (what the plain Face Landmarker sees); more rounds only where it found nothing or
        there is evidence of more (the module docstring has the policy).
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
        seen = _Seen()
        weak: list[_WeakRun] = []  # boxes too weak for the mesh's word alone: see _rescue
        full, hints = self._detect_region(pyr, 0, 0, w, h, weak=weak)
        self._confirm(pyr, self._clean(full, w, h), seen, "detector")
        if not self.settings.second_pass:
            return seen.faces
        strict = max(self.settings.min_face_score, SECOND_PASS_SCORE)
        pad, panels, *finer = self._rounds(w, h)
        full_range = [(0, 0, w, h, 0, "full")]
        if seen.faces:  # more only where there is evidence of more: a wide frame, a strong box the mesh doubted
            rounds = [panels] if max(w, h) >= WIDE * min(w, h) else []
            rounds += [full_range] if seen.strong_rejects(MORE_SCORE) else []
        else:
            rounds = [pad if hints.big >= CLOSE_UP_HINT else [], panels]
            rounds += finer if hints.small >= SMALL_FACE_HINT else []
            rounds += [full_range]
        face_like = hints.best  # the best short-range score anywhere, too weak to count
        for regions in rounds:
            if not regions:
                continue
            model = regions[0][5] if len(regions[0]) > 5 else "detector"
            if model == "full" and not seen.faces and face_like < FULL_RANGE_GATE:
                continue  # nothing face-like anywhere: the full-range detector would find nothing either
            dets = []
            for x0, y0, x1, y1, fill, *_ in regions:
                found, hints = self._detect_region(pyr, x0, y0, x1, y1, fill,
                                                   FULL_RANGE_SCORE if model == "full" else strict, model=model,
                                                   weak=weak)
                dets += found
                if model == "detector":
                    face_like = max(face_like, hints.best)
            added = self._confirm(pyr, self._clean(dets, w, h), seen, model)
            if model == "full":
                added += self._agree(seen)
                if not seen.faces and regions is full_range and hints.best >= FULL_TILES_HINT:
                    # a face-like box too small to confirm: the full-range detector again, on the tiles (once)
                    rounds.append([(*t, 0, "full") for level in tile_levels(w, h) for t in level])
            if added:
                break
        if not seen.faces:
            self._turned_retry(pyr, seen)
        if seen.faces:
            return seen.faces
        candidates = self._last_candidates(seen, weak, w, h)
        self._rescue(pyr, seen, candidates)
        if not seen.faces:
            self._vouch_rescue(pyr, seen, candidates)
        if not seen.faces:
            self._vouch_doubted(pyr, seen, candidates)
        return seen.faces

    def _last_candidates(self, seen: "_Seen", weak: list[_WeakRun], w: int, h: int) -> list[_Candidate]:
        """The boxes the last looks (_rescue, _vouch_rescue, _vouch_doubted) choose from, strongest first (ties in
        the order found): the boxes the mesh doubted in the rounds, then the weak ones, each as its run saw it
        (clipped to the frame, not merged across runs: see _rescue). Only a frame still without a face after the
        rounds gets here, so only it pays for decoding the weak boxes."""
        candidates = list(seen.rejected)
        for run in weak:
            for det in run.decode():
                candidates += [_Candidate(run.model, *clean) for clean in self._clean([det], w, h)]
        return sorted(candidates, key=lambda c: -c.score)

    def _vouch_doubted(self, pyr: Pyramid, seen: "_Seen", candidates: list[_Candidate]) -> int:
        """The last look of all at a frame still without a face: its VOUCH_BOXES strongest short-range boxes scoring
        DOUBTED_SCORE that the mesh doubted are faces when the full-range detector vouches for them on their own crop
        (>= DOUBTED_VOUCH) and the mesh lies on the box (plausible). Two independent detectors that see a face the
        mesh cannot read: a drawn, painted, CGI or puppet face looks like that (the mesh was made for photographed
        faces), the non-faces of the labelled memes rarely do. The landmarks are the mesh's best guess, so such a
        face is matched worse than a photographed one, but it can be found. Returns how many faces it added."""
        strong = [c for c in candidates if not c.weak and c.model == "detector" and c.score >= DOUBTED_SCORE]
        added = 0
        for c in strong[:VOUCH_BOXES]:
            if any(iou(c.box, f.box) > 0.3 for f in seen.faces):
                continue
            if plausible(c.pts, c.box) and self._vouch(pyr, seen, c.box) >= DOUBTED_VOUCH:
                added += self._add(seen, c.box, c.score, c.pts)
        return added

    def _vouch_rescue(self, pyr: Pyramid, seen: "_Seen", candidates: list[_Candidate]) -> int:
        """The very last look at a frame still without a face: its VOUCH_BOXES strongest boxes (doubted ones the mesh
        did not reject, and the weak ones down to WEAK_SCORE) are faces when the mesh confirms them (presence >=
        MIN_PRESENCE) and the full-range detector vouches for them on their own crop (>= VOUCH_WEAK): two models
        that each see a face where the detector that found the box hardly did. Cartoon faces and small or half-turned
        heads look like that; a non-face rarely convinces both. Returns how many faces it added."""
        cands: list[_Candidate] = []
        for c in candidates:
            if (c.weak or c.presence >= MIN_PRESENCE) and not any(iou(c.box, k.box) > 0.5 for k in cands):
                cands.append(c)
        added = 0
        for c in cands[:VOUCH_BOXES]:
            if any(iou(c.box, f.box) > 0.3 for f in seen.faces):
                continue
            # the mesh as the rounds or _rescue ran it, else the vouch first (a full-range run is cheaper)
            presence, pts = (c.upright or (None, None)) if c.weak else (c.presence, c.pts)
            if presence is None:
                if self._vouch(pyr, seen, c.box) < VOUCH_WEAK:
                    continue
                presence, pts = self._mesh(pyr, c.box, c.kp)
            if presence >= MIN_PRESENCE and self._vouch(pyr, seen, c.box) >= VOUCH_WEAK:
                added += self._add(seen, c.box, c.score, pts)
        return added

    def _rescue(self, pyr: Pyramid, seen: "_Seen", candidates: list[_Candidate]) -> int:
        """Last resort for a frame still without a face: the strongest boxes the rounds saw (doubted by the mesh, or
        scoring below the rounds' thresholds down to WEAK_SCORE), judged by the mesh on crops turned by MESH_TURNS
        too. A box the mesh sees whichever way its crop is turned (presence >= STABLE_PRESENCE upright and on both
        turns) is a face: a mesh that hallucinates a face on a non-face follows the crop's angle, and loses it when
        the crop turns. A box scoring TURN_SCORE that the mesh calls certain (>= SURE_PRESENCE) on one turned crop is
        a tilted or half-turned head. Only boxes that can pass are meshed: weak short-range boxes below TURN_SCORE
        are left out, weak full-range ones (small faces score low there) are meshed upright first. At most
        RESCUE_BOXES boxes; the weak boxes come each as its run saw it, not merged (_last_candidates). Returns how
        many faces it added."""
        cands: list[_Candidate] = []
        for c in candidates:
            if c.score < TURN_SCORE and (c.model != "full" if c.weak else c.presence < STABLE_PRESENCE):
                continue  # cannot pass
            if any(iou(c.box, k.box) > 0.5 for k in cands) or any(iou(c.box, t) > 0.5 for t in seen.turned):
                continue  # the same box again (its best-scored run kept), or one _turned_retry looked at already
            cands.append(c)
        added = 0
        for c in cands[:RESCUE_BOXES]:
            if any(iou(c.box, f.box) > 0.3 for f in seen.faces):
                continue
            presence, pts = c.presence, c.pts
            if c.weak:
                c.upright = presence, pts = self._mesh(pyr, c.box, c.kp)  # kept for _vouch_rescue
                if presence < STABLE_PRESENCE and c.score < TURN_SCORE:
                    continue
            stable = presence >= STABLE_PRESENCE
            for turn in MESH_TURNS:  # each turned mesh only while one of the two tests can still pass
                turned, turned_pts = self._mesh(pyr, c.box, c.kp, math.radians(turn))
                if c.score >= TURN_SCORE and turned >= SURE_PRESENCE:
                    added += self._add(seen, c.box, c.score, turned_pts)
                    break
                stable = stable and turned >= STABLE_PRESENCE
                if not stable and c.score < TURN_SCORE:
                    break
            else:
                if stable:
                    added += self._add(seen, c.box, c.score, pts)
        return added

    def _turned_retry(self, pyr: Pyramid, seen: "_Seen") -> int:
        """Last resort for a frame without a face: the strongest box the mesh doubted, meshed again on crops
        turned by MESH_TURNS. A tilted head can mislead the detector's eye keypoints, and so the crop's angle."""
        added = 0
        strong = sorted((r for r in seen.rejected if r.score >= RETURN_SCORE), key=lambda r: -r.score)
        for r in strong[:1]:
            seen.turned.append(r.box)
            for turn in MESH_TURNS:
                presence, pts = self._mesh(pyr, r.box, r.kp, math.radians(turn))
                if presence >= MIN_PRESENCE:
                    added += self._add(seen, r.box, r.score, pts)
                    break
        return added

    def _confirm(self, pyr: Pyramid, dets, seen: "_Seen", model: str) -> int:
        """Run the mesh on each new box (largest first) and add the faces it confirms; returns how many.
        Boxes it does not confirm are kept in `seen` for _agree."""
        added = 0
        for box, score, kp in sorted(dets, key=lambda d: -(d[0][2] - d[0][0]) * (d[0][3] - d[0][1])):
            tried = seen.tried.setdefault(model, [])
            if any(iou(box, t) > 0.5 for t in tried) or any(iou(box, f.box) > 0.3 for f in seen.faces):
                continue  # this face (or non-face) was looked at already by this detector, or is a face found
            tried.append(box)
            presence, pts = self._mesh(pyr, box, kp)
            log.debug("%s box %s score %.2f presence %.3f", model, box, score, presence)
            if presence < MIN_PRESENCE or (model == "detector" and score < VOUCH_SCORE
                                           and self._vouch(pyr, seen, box) < VOUCH_FULL):
                seen.rejected.append(_Candidate(model, box, score, kp, presence, pts))
            elif self._add(seen, box, score, pts):
                added += 1
        return added

    def _vouch(self, pyr: Pyramid, seen: "_Seen", box: tuple) -> float:
        """The full-range detector's score for the face in `box`, run on the box's own square crop (VOUCH_CROP x its
        side, so the face reaches it at a size it was made for): its best box overlapping `box` (IoU >= 0.3), 0 if
        none scores WEAK_VOUCH. A second, independent opinion of a box the mesh confirms; remembered per frame."""
        if box in seen.vouched:
            return seen.vouched[box]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = VOUCH_CROP * max(box[2] - box[0], box[3] - box[1]) / 2
        dets, _ = self._detect_region(pyr, cx - half, cy - half, cx + half, cy + half, min_score=WEAK_VOUCH,
                                      model="full")
        score = seen.vouched[box] = max([d[1] for d in dets if iou(box, d[0]) >= 0.3], default=0.0)
        return score

    def _agree(self, seen: "_Seen") -> int:
        """Faces the mesh doubts but both detectors see: a short-range box scoring >= AGREE_SCORE overlapping a
        full-range box scoring >= AGREE_FULL_SCORE. Turned heads and profiles look like that (the mesh was made
        for faces that look at the camera); the non-faces of the labelled memes rarely convince both detectors."""
        short = [r for r in seen.rejected if r.model == "detector" and r.score >= AGREE_SCORE]
        full = [r for r in seen.rejected if r.model == "full" and r.score >= AGREE_FULL_SCORE]
        added = 0
        for r in sorted(short, key=lambda r: -r.score):
            other = [o for o in full if iou(r.box, o.box) >= AGREE_IOU]
            if other:
                best = max([(r.presence, r.pts)] + [(o.presence, o.pts) for o in other], key=lambda c: c[0])[1]
                if plausible(best, r.box):
                    added += self._add(seen, r.box, r.score, best)
        return added

    def _add(self, seen: "_Seen", box: tuple, score: float, pts: np.ndarray) -> bool:
        """Describe the face (blendshapes) and add it, unless it is one already found (a tile and the full frame,
        a face and a part of it, the two detectors)."""
        if any(same_face(pts, other.landmarks) for other in seen.faces):
            return False
        seen.faces.append(self._face(box, score, pts))
        return True


def plausible(pts: np.ndarray, box: tuple) -> bool:
    """Landmarks that can describe the face in `box`: the mesh lies on the box (its centre inside, its size within
    half to twice the box's), not collapsed or run off. A profile's mesh passes: narrow, but on the face."""
    mb = mesh_box(pts)
    cx, cy = (mb[0] + mb[2]) / 2, (mb[1] + mb[3]) / 2
    side, mside = max(box[2] - box[0], box[3] - box[1]), max(mb[2] - mb[0], mb[3] - mb[1])
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3] and 0.5 * side <= mside <= 2 * side


class _Hints(NamedTuple):
    """The face-like scores of one detector run, too weak to count: they skip rounds that would find nothing."""

    big: float  # best score of a box of side >= 0.4x the region's short side: see CLOSE_UP_HINT
    small: float  # ... of side < 0.25x it: see SMALL_FACE_HINT
    best: float  # best score of any box: see FULL_RANGE_GATE, FULL_TILES_HINT


def _decode(reg: np.ndarray, anchors: np.ndarray, scores: np.ndarray, f: float, ox: float, oy: float) -> list:
    """A detector's anchors (regressors, anchor centres in input pixels, scores) decoded, merged (weighted NMS) and
    mapped to frame pixels (input = f * frame + (ox, oy)): [(box, score, 6x2 keypoints)]."""
    if len(scores) == 0:
        return []
    cx, cy = reg[:, 0] + anchors[:, 0], reg[:, 1] + anchors[:, 1]
    boxes = np.stack([cx - reg[:, 2] / 2, cy - reg[:, 3] / 2, cx + reg[:, 2] / 2, cy + reg[:, 3] / 2], 1)
    kps = reg[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    dets = []
    for box, score, kp in weighted_nms(scores, boxes, kps):
        box = ((box[0] - ox) / f, (box[1] - oy) / f, (box[2] - ox) / f, (box[3] - oy) / f)
        dets.append((box, score, (kp - (ox, oy)) / f))
    return dets


class _WeakRun(NamedTuple):
    """One detector run's anchors scoring WEAK_SCORE up to its threshold, kept undecoded: most frames find a face in
    the rounds and never need them."""

    model: str
    reg: np.ndarray
    anchors: np.ndarray
    scores: np.ndarray
    f: float
    ox: float
    oy: float

    def decode(self) -> list:
        return _decode(self.reg, self.anchors, self.scores, self.f, self.ox, self.oy)


@dataclass(eq=False)
class _Candidate:
    """A box that is not a face yet: one the mesh doubted in the rounds, or a weak one (scoring WEAK_SCORE up to its
    run's threshold, never meshed there) for the last looks."""

    model: str  # the detector that found it: "detector" (short-range) or "full"
    box: tuple[float, float, float, float]
    score: float
    kp: np.ndarray  # the detector's 6 keypoints
    presence: float | None = None  # the mesh's presence in the rounds; None for a weak box
    pts: np.ndarray | None = None  # the mesh's landmarks in the rounds; None for a weak box
    upright: tuple[float, np.ndarray] | None = None  # a weak box's (presence, landmarks) once _rescue meshed it

    @property
    def weak(self) -> bool:
        return self.presence is None


class _Seen:
    """What one frame's rounds found so far: faces, the boxes each detector tried, the boxes the mesh doubted."""

    def __init__(self):
        self.faces: list[Face] = []
        self.tried: dict[str, list[tuple]] = {}
        self.rejected: list[_Candidate] = []  # the boxes the mesh doubted (or the vouch refused), in the order tried
        self.turned: list[tuple] = []  # boxes meshed on turned crops already
        self.vouched: dict[tuple, float] = {}  # box -> full-range score on its own crop: see FaceDetector._vouch

    def strong_rejects(self, score: float) -> bool:
        return any(r.score >= score for r in self.rejected)


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8, C-contiguous (grey H x W is repeated, an alpha channel dropped)."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)


