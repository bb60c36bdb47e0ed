"""ExpressionEmbedder: faces -> compact expression vectors. Pluggable and versioned by `model_id`.

The store and the index only see `model_id`, `dim` and float32 rows; they never care which embedder made them,
and an index refuses to mix the vectors of two model ids.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .faces import BLENDSHAPE_NAMES, Face
from .settings import Settings

log = logging.getLogger(__name__)


@runtime_checkable
class ExpressionEmbedder(Protocol):
    model_id: str
    dim: int

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        """One L2-normalised float32 row per face of the frame `rgb` (shape len(faces) x dim)."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


# The gaze scores say where the eyes look, not what the face expresses; `_neutral` is always zero.
_DROPPED = {"_neutral"} | {n for n in BLENDSHAPE_NAMES if n.startswith("eyeLook")}
BASELINE_KEEP = np.array([i for i, n in enumerate(BLENDSHAPE_NAMES) if n not in _DROPPED])


class BlendshapeEmbedder:
    """Baseline: square roots of the 43 expression blendshapes, L2-normalised.

    The square root lifts the many small scores (a slight frown) against the few large ones (an open jaw).
    """

    model_id = "blendshapes-v1"
    dim = len(BASELINE_KEEP)

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        shapes = np.stack([f.blendshapes for f in faces])[:, BASELINE_KEEP]
        return l2_normalise(np.sqrt(np.clip(shapes, 0.0, 1.0)))


def learned_model_files(models_dir: Path) -> list[Path]:
    return sorted(Path(models_dir).glob("expression-*.tflite"))


def get_embedder(settings: Settings | None = None, name: str | None = None) -> ExpressionEmbedder:
    """The embedder named `name` (or settings.embedder): 'baseline', 'learned', 'auto' or a model id."""
    settings = settings or Settings.from_env()
    name = name or settings.embedder
    if name in ("baseline", BlendshapeEmbedder.model_id):
        return BlendshapeEmbedder()
    learned = learned_model_files(settings.models_dir)
    if name == "auto" and not learned:
        return BlendshapeEmbedder()
    from .learned import LearnedEmbedder  # noqa: WPS433 (litert is heavy: load only when asked)

    if name in ("auto", "learned"):
        return LearnedEmbedder(learned[-1])
    for path in learned:
        if path.stem == name:
            return LearnedEmbedder(path)
    from .errors import ModelMissing

    raise ModelMissing(f"no embedder named {name!r} (known: baseline, learned, "
                       f"{', '.join(p.stem for p in learned) or 'no learned model files'})")
