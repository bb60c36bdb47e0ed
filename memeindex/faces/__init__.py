"""Face detection: every face of a frame with its box, detector score, landmarks and blendshapes.

detector.py holds FaceDetector (the rounds policy) and DETECTOR_VERSION, regions.py the frame geometry (boxes,
tiles, NMS, pyramid), bundle.py the LiteRT models of the pinned Face Landmarker bundle.
"""
from .bundle import BLENDSHAPE_NAMES, blendshape_names
from .detector import DETECTOR_VERSION, Face, FaceDetector, detector_id
from .regions import iou, merge_boxes, tiles

__all__ = ["BLENDSHAPE_NAMES", "DETECTOR_VERSION", "Face", "FaceDetector", "detector_id", "blendshape_names", "iou",
           "merge_boxes", "tiles"]
