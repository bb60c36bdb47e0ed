"""Explain a match: the expression traits two faces share ("jaw open", "brows raised", ...) and how strongly.

A trait reads a few of MediaPipe's 52 blendshapes (the mean of a left/right pair, or the strongest of several
groups), then is scaled between its resting level and a strong level so that 0 means "not shown" and 1 "shown
as strongly as faces that make it do" (`LEVELS`: the median and the 97th percentile of each trait over the faces of
fer2013-publictest, printed by `scripts/fit_calibration.py --traits`). Two faces share a trait as strongly as
the weaker of them shows it; a match names the strongest shared traits, at most `MAX_TRAITS`, each at least
`MIN_SHARED`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .faces import BLENDSHAPE_NAMES

MAX_TRAITS = 3
MIN_SHARED = 0.3

# name -> groups of blendshapes; the trait's raw value is the largest mean of a group.
TRAITS: dict[str, tuple[tuple[str, ...], ...]] = {
    "jaw open": (("jawOpen",),),
    "smiling": (("mouthSmileLeft", "mouthSmileRight"),),
    "brows raised": (("browInnerUp",), ("browOuterUpLeft", "browOuterUpRight")),
    "brows lowered": (("browDownLeft", "browDownRight"),),
    "eyes wide": (("eyeWideLeft", "eyeWideRight"),),
    "eyes squinted": (("eyeSquintLeft", "eyeSquintRight"),),
    "eyes closed": (("eyeBlinkLeft", "eyeBlinkRight"),),
    "mouth corners down": (("mouthFrownLeft", "mouthFrownRight"),),
    "lips pressed": (("mouthPressLeft", "mouthPressRight"),),
    "lips pursed": (("mouthPucker",),),
    "mouth rounded": (("mouthFunnel",),),
    "mouth stretched": (("mouthStretchLeft", "mouthStretchRight"),),
    "upper lip raised": (("mouthUpperUpLeft", "mouthUpperUpRight"),),
    "nose wrinkled": (("noseSneerLeft", "noseSneerRight"),),
    "cheeks puffed": (("cheekPuff",),),
    "chin raised": (("mouthShrugLower",),),
    "lips rolled in": (("mouthRollLower", "mouthRollUpper"),),
    "mouth pulled aside": (("mouthLeft",), ("mouthRight",)),
}

# (resting, strong) raw level of each trait; see the module docstring for where they come from.
LEVELS: dict[str, tuple[float, float]] = {
    "jaw open": (0.019, 0.595), "smiling": (0.003, 0.922), "brows raised": (0.176, 0.876),
    "brows lowered": (0.021, 0.698), "eyes wide": (0.011, 0.311), "eyes squinted": (0.281, 0.666),
    "eyes closed": (0.09, 0.638), "mouth corners down": (0.004, 0.304), "lips pressed": (0.021, 0.321),
    "lips pursed": (0.019, 0.929), "mouth rounded": (0.004, 0.304), "mouth stretched": (0.013, 0.444),
    "upper lip raised": (0.002, 0.712), "nose wrinkled": (0.0, 0.3), "cheeks puffed": (0.0, 0.3),
    "chin raised": (0.008, 0.308), "lips rolled in": (0.012, 0.312), "mouth pulled aside": (0.003, 0.303),
}
MIN_RANGE = 0.3  # a trait the reference faces hardly ever show still needs this much above rest to count fully

_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}
_GROUPS = [[np.array([_INDEX[n] for n in group]) for group in groups] for groups in TRAITS.values()]
_NAMES = list(TRAITS)


@dataclass(frozen=True)
class Trait:
    """Data: the CLI (cli.format_traits) words it for people."""

    name: str
    strength: float  # 0..1: how strongly both faces show it (the weaker of the two)

    def to_dict(self) -> dict:
        return {"name": self.name, "strength": round(self.strength, 2)}


def raw_levels(blendshapes: np.ndarray) -> np.ndarray:
    """Raw trait values of faces (rows of 52 blendshapes) -> [n, len(TRAITS)]."""
    b = np.atleast_2d(np.asarray(blendshapes, np.float32))
    return np.stack([np.max([b[:, g].mean(axis=1) for g in groups], axis=0) for groups in _GROUPS], axis=1)


def measure_levels(blendshapes: np.ndarray) -> dict[str, tuple[float, float]]:
    """LEVELS as measured on a set of faces: (median, max(97th percentile, median + MIN_RANGE)) per trait."""
    raw = raw_levels(blendshapes)
    lo, hi = np.quantile(raw, 0.5, axis=0), np.quantile(raw, 0.97, axis=0)
    return {n: (round(float(lo[i]), 3), round(float(max(hi[i], lo[i] + MIN_RANGE)), 3)) for i, n in enumerate(_NAMES)}


def strengths(blendshapes: np.ndarray) -> np.ndarray:
    """Trait strengths in 0..1 of faces (rows of 52 blendshapes) -> [n, len(TRAITS)]."""
    lo = np.array([LEVELS[n][0] for n in _NAMES], np.float32)
    hi = np.array([LEVELS[n][1] for n in _NAMES], np.float32)
    return np.clip((raw_levels(blendshapes) - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0)


def shared(query_blendshapes: np.ndarray, match_blendshapes: np.ndarray) -> list[Trait]:
    """The traits both faces show (strongest first), at most MAX_TRAITS, each shared at least MIN_SHARED."""
    return shared_strengths(strengths(query_blendshapes)[0], strengths(match_blendshapes)[0])


def shared_strengths(query: np.ndarray, match: np.ndarray) -> list[Trait]:
    """`shared` of two faces' trait strengths (`strengths` rows): a query's are computed once for all its matches."""
    both = np.minimum(query, match)
    order = np.argsort(-both, kind="stable")[:MAX_TRAITS]
    return [Trait(_NAMES[i], float(both[i])) for i in order if both[i] >= MIN_SHARED]
