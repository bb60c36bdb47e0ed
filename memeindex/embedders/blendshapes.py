"""The baseline embedder: the landmarker's own blendshape scores, no learned model."""
from __future__ import annotations

import numpy as np

from ..faces import Face
from .base import EXPRESSION_BLENDSHAPES, l2_normalise


class BlendshapeEmbedder:
    """Square roots of the 43 expression blendshapes, L2-normalised.

    The square root lifts the many small scores (a slight frown) against the few large ones (an open jaw).
    """

    model_id = "blendshapes-v1"
    model_sha256 = ""  # code, not a file
    dim = len(EXPRESSION_BLENDSHAPES)

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        shapes = np.stack([f.blendshapes for f in faces])[:, EXPRESSION_BLENDSHAPES]
        return l2_normalise(np.sqrt(np.clip(shapes, 0.0, 1.0)))

    def close(self) -> None:
        """Nothing to release."""
