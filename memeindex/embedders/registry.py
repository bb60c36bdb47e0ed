"""Embedders by name: each name maps to a factory; each learned model is pinned by sha256.

Which learned model `auto` and `learned` mean is written here (`DEFAULT_LEARNED`), never inferred from file
names: a new model becomes the default by one explicit edit, and `expression-v10` cannot lose to `expression-v9`
by sort order. The learned weights ship inside the package (`weights/`), so a wheel carries them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BadSetting, ModelChecksumMismatch, ModelMissing
from ..settings import Settings
from .base import ExpressionEmbedder
from .blendshapes import BlendshapeEmbedder

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class LearnedModel:
    """A committed LiteRT expression model: its id, its file under weights/, and the bytes it must be."""

    model_id: str
    filename: str
    sha256: str
    size: int
    color_crop: str | None = None  # the colour crop its pretrained branch sees (learned.COLOR_CROPS), if any

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename

    def present(self) -> bool:
        return self.path.is_file()

    def verified_path(self) -> Path:
        """The file's path once its size and sha256 match the pin; typed errors otherwise."""
        from ..models import sha256_file

        if not self.present():
            raise ModelMissing(f"learned model {self.path} is missing: reinstall memeindex (the wheel carries it)")
        size = self.path.stat().st_size
        digest = sha256_file(self.path) if size == self.size else None
        if digest != self.sha256:
            raise ModelChecksumMismatch(f"{self.path} is not the pinned {self.model_id} "
                                        f"(size {size}, sha256 {digest or 'not computed'}; want {self.sha256})")
        return self.path


LEARNED_MODELS = {m.model_id: m for m in (
    LearnedModel("expression-v1", "expression-v1.tflite",
                 "ab3f712d11c7c975bc6cb502995dda98e6d541e2783289248b269eee4c9a2029", 719_184),
    LearnedModel("expression-v2", "expression-v2.tflite",
                 "173791feafccec1513a84c77841d6dd2c5048922a94479e1fcdfca6f12640d18", 1_442_296, color_crop="box10"),
)}
# What `auto` (when present) and `learned` resolve to. expression-v2 is committed and selectable by name, but stays
# off the default: near-duplicate grouping scales its embedding limits for v2 (templates.json), yet v2's embedding
# puts a mirrored copy or another face with the same expression about as close as a crop of the same face, so no
# scale keeps both apart while grouping the crops (README, "Results"); grouping needs other same-face evidence first.
DEFAULT_LEARNED = "expression-v1"
ALIASES = {"baseline": BlendshapeEmbedder.model_id, "learned": DEFAULT_LEARNED}


def _learned_factory(model: LearnedModel) -> Callable[[Settings], ExpressionEmbedder]:
    def make(settings: Settings) -> ExpressionEmbedder:
        from .learned import LearnedEmbedder  # litert is heavy: load only when asked

        return LearnedEmbedder(model.verified_path(), model_id=model.model_id, color_crop=model.color_crop,
                               sha256=model.sha256)

    return make


FACTORIES: dict[str, Callable[[Settings], ExpressionEmbedder]] = {
    BlendshapeEmbedder.model_id: lambda settings: BlendshapeEmbedder(),
    **{m.model_id: _learned_factory(m) for m in LEARNED_MODELS.values()},
}


def names() -> list[str]:
    """Every name get_embedder accepts."""
    return ["auto", *ALIASES, *FACTORIES]


def resolve(name: str, source: str = "") -> str:
    """The model id a name stands for ('auto' -> the default learned model when its file is present). An unknown
    name is BadSetting (a value the user chose, exit 2, as an unknown backend is); `source` says where it was read
    ("MEMEINDEX_EMBEDDER")."""
    if name == "auto":
        return DEFAULT_LEARNED if LEARNED_MODELS[DEFAULT_LEARNED].present() else BlendshapeEmbedder.model_id
    model_id = ALIASES.get(name, name)
    if model_id not in FACTORIES:
        raise BadSetting(f"unknown embedder {name!r}{f' ({source})' if source else ''}: choose one of "
                         f"{', '.join(names())}")
    return model_id


def get_embedder(settings: Settings, name: str | None = None) -> ExpressionEmbedder:
    """The embedder named `name` (or settings.embedder, which users set as MEMEINDEX_EMBEDDER): 'auto', 'baseline',
    'learned' or a model id."""
    if name:
        return FACTORIES[resolve(name)](settings)
    return FACTORIES[resolve(settings.embedder, "MEMEINDEX_EMBEDDER")](settings)
