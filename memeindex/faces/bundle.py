"""The three models of MediaPipe's Face Landmarker bundle (BlazeFace short-range detector, 478-point face mesh,
blendshapes), loaded from the pinned .task file, and BlazeFace full-range (its own pinned file), run directly on
LiteRT."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

DETECT_SIDE = 128  # BlazeFace short-range input
FULL_RANGE_SIDE = 192  # BlazeFace full-range input
MESH_SIDE = 256  # face mesh input

# face_blendshapes_graph.cc: the 146 mesh points the blendshapes model reads, in pixels of the frame.
BLENDSHAPE_INPUT = np.array([
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78,
    80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152,
    153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246,
    249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312,
    314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381,
    382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472,
    473, 474, 475, 476, 477])

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


class BundleModels:
    """The bundle's interpreters. Not picklable and not thread-safe: one per process, callers serialise."""

    FILES = {"detector": "face_detector.tflite", "mesh": "face_landmarks_detector.tflite",
             "shapes": "face_blendshapes.tflite"}

    def __init__(self, task: Path, num_threads: int = 1, extra: dict[str, Path] | None = None):
        """The bundle's models from `task`, plus `extra` models {key: .tflite path} (the full-range detector)."""
        self._nets = {}
        with zipfile.ZipFile(task) as bundle:
            for key, name in self.FILES.items():
                self._load(key, bundle.read(name), num_threads)
        for key, path in (extra or {}).items():
            self._load(key, Path(path).read_bytes(), num_threads)

    def _load(self, key: str, content: bytes, num_threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        net = Interpreter(model_content=content, num_threads=num_threads)
        net.allocate_tensors()
        outs = {tuple(d["shape"]): d["index"] for d in net.get_output_details()}
        self._nets[key] = (net, net.get_input_details()[0]["index"], outs)

    def run(self, key: str, tensor: np.ndarray) -> dict:
        """Outputs of model `key` for `tensor`, keyed by their shapes."""
        if not self._nets:
            raise RuntimeError("FaceDetector is closed")
        net, inp, outs = self._nets[key]
        net.set_tensor(inp, tensor)
        net.invoke()
        return {shape: net.get_tensor(index) for shape, index in outs.items()}

    def run_image(self, key: str, crop: np.ndarray, scale: float, offset: float) -> dict:
        """`run` on the uint8 image `crop` (H x W x 3) fed as float32 `crop * scale + offset`, written straight into
        the model's input tensor: no float temporaries and no copy into the interpreter (per crop, ~0.2-0.5 ms of
        a 256 px mesh crop's pre- and post-processing on these cores)."""
        if not self._nets:
            raise RuntimeError("FaceDetector is closed")
        net, inp, outs = self._nets[key]
        view = net.tensor(inp)()[0]  # a view of the input buffer; it must be gone before invoke (LiteRT checks)
        np.multiply(crop, np.float32(scale), out=view, casting="unsafe")
        if offset:
            np.add(view, np.float32(offset), out=view)
        del view
        net.invoke()
        return {shape: net.get_tensor(index) for shape, index in outs.items()}

    def close(self) -> None:
        self._nets = {}


SHORT_RANGE_LAYERS = ((8, 2), (16, 6))  # (stride, anchors a cell): strides 8, 16, 16, 16 with 2 anchors each
FULL_RANGE_LAYERS = ((4, 1),)  # one 48x48 layer, 1 anchor a cell (face_detection_full_range.pbtxt)


def ssd_anchors(side: int = DETECT_SIDE, layers=SHORT_RANGE_LAYERS) -> np.ndarray:
    """Anchor centres of a BlazeFace model in 0..1: 896 for short-range (128 px), 2304 for full-range (192 px)."""
    rows = []
    for stride, per_cell in layers:
        n = side // stride
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        rows.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(rows).astype(np.float32)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -100.0, 100.0)))


def blendshape_names() -> list[str]:
    """The 52 blendshape names in the order the landmarker reports them."""
    return list(BLENDSHAPE_NAMES)
