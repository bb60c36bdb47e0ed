"""What every expression embedder is (the Protocol), the normalisation they share, and the blendshape facts.

The store and the index only see `model_id`, `dim` and float32 rows; they never care which embedder made them,
and an index refuses to mix the vectors of two model ids. The blendshape constants below are the one definition
the baseline, the learned models and the training code all use.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..faces import BLENDSHAPE_NAMES, Face

N_BLENDSHAPES = len(BLENDSHAPE_NAMES)  # 52 MediaPipe scores per face

# The gaze scores say where the eyes look, not what the face expresses; `_neutral` is always zero.
NON_EXPRESSION_BLENDSHAPES = frozenset({"_neutral"} | {n for n in BLENDSHAPE_NAMES if n.startswith("eyeLook")})
# Indices (in BLENDSHAPE_NAMES order) of the 43 scores that describe the expression.
EXPRESSION_BLENDSHAPES = np.array([i for i, n in enumerate(BLENDSHAPE_NAMES) if n not in NON_EXPRESSION_BLENDSHAPES])


def _mirror_permutation() -> np.ndarray:
    names = list(BLENDSHAPE_NAMES)
    swap = {"Left": "Right", "Right": "Left"}
    perm = []
    for n in names:
        side = next((s for s in swap if s in n), None)
        perm.append(names.index(n.replace(side, swap[side])) if side else names.index(n))
    return np.array(perm)


# blendshapes[MIRRORED_BLENDSHAPES] are the scores of the mirror image of the face (left and right swapped).
MIRRORED_BLENDSHAPES = _mirror_permutation()


@runtime_checkable
class ExpressionEmbedder(Protocol):
    model_id: str
    dim: int
    # sha256 of the model file ("" for a model that is code): an index records it, so an index built by another
    # file under the same model_id (a retrained model) is refused instead of queried with unlike vectors.
    model_sha256: str

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        """One L2-normalised float32 row per face of the frame `rgb` (shape len(faces) x dim)."""
        ...

    def close(self) -> None:
        """Release the model (an embedder is unusable afterwards)."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
