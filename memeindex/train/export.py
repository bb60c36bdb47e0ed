"""Export a Keras embedding to LiteRT, prove the two agree, and write the training summary beside the model."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..atomicfile import replacing

# LiteRT vs Keras on the same inputs: the file holds float16 weights, Keras float32 ones, so the unit vectors
# differ slightly; a broken export (wrong input order, a dropped branch) differs by orders of magnitude more.
PARITY_MAX_ABS = 5e-3  # per coordinate
PARITY_MIN_COSINE = 0.9995  # per face


def export_tflite(model, path: Path, float16: bool = True) -> None:
    """The Keras model as a LiteRT flatbuffer (dynamic batch; float16 weights unless told), written atomically."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if float16:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        blob = conv.convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_bytes(blob)


def assert_parity(keras_out: np.ndarray, litert_out: np.ndarray, max_abs: float = PARITY_MAX_ABS,
                  min_cosine: float = PARITY_MIN_COSINE) -> float:
    """Raise unless the LiteRT outputs match Keras's (unit rows); returns the max abs difference."""
    a, b = np.asarray(keras_out, np.float64), np.asarray(litert_out, np.float64)
    diff = float(np.abs(a - b).max())
    cos = float((np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())
    if not np.isfinite(diff) or diff > max_abs or cos < min_cosine:
        raise AssertionError(f"LiteRT output differs from Keras: max abs {diff:.3g} (limit {max_abs}), "
                             f"min cosine {cos:.6f} (limit {min_cosine})")
    return diff


def environment() -> dict:
    """Library versions and the git commit the model was trained from.

    OpenCV matters as much as the model libraries: the detector's crops and the cached faces are cv2 warps, and two
    OpenCV builds give landmarks up to ~1 px apart (5.0.0 headless of the training venv against 5.1.0 contrib, which
    mediapipe brings into the test venv), so the caches, and the model fitted on them, follow the build. Several
    distributions install cv2/: `cv2` is the version actually imported.
    """
    from importlib.metadata import PackageNotFoundError, version

    import cv2

    versions = {}
    for pkg in ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "mediapipe", "numpy", "opencv-contrib-python",
                "opencv-python", "opencv-python-headless"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    versions["cv2"] = cv2.__version__
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "libraries": versions, "git_commit": commit, "git_dirty": dirty}


def write_summary(model_path: Path, summary: dict) -> Path:
    """model_path's summary, beside it: NAME.train.json (sha256 and size of the model included)."""
    blob = model_path.read_bytes()
    out = model_path.with_name(model_path.stem + ".train.json")
    full = {"model": model_path.name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(), **summary}
    with replacing(out) as tmp:
        tmp.write_text(json.dumps(full, indent=1, default=_jsonable) + "\n")
    return out


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value))
