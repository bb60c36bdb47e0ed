"""Expression embedders: faces -> compact L2-normalised vectors, versioned by `model_id`, chosen by name.

base.py: the Protocol, l2_normalise, the blendshape constants; blendshapes.py: the baseline; learned.py: the
committed LiteRT models (weights/); registry.py: name -> factory, learned models pinned by sha256.
"""
from .base import ExpressionEmbedder, l2_normalise
from .blendshapes import BlendshapeEmbedder
from .registry import DEFAULT_LEARNED, LEARNED_MODELS, get_embedder

__all__ = ["BlendshapeEmbedder", "DEFAULT_LEARNED", "ExpressionEmbedder", "LEARNED_MODELS", "get_embedder",
           "l2_normalise"]
