"""The calibrated score: a match's distance -> P(people call the two expressions the same), in 0..1.

Raw distances mean different things for different embedders (and for one embedder, everything sits within a
narrow band of cosine similarity), so the score is fitted per embedder `model_id` on held-out labelled faces:
a curve P(same | distance) whose target is "the FER+ raters' majority gives both faces the same label",
fitted (isotonic: monotone, no assumed shape) on pairs of `fer2013-publictest` faces by
`scripts/fit_calibration.py`, which writes the curve into `calibration.json` beside this module. A score of 0.7 then means: of face pairs this far apart, about 70 % show
what people call the same expression.

A model with no entry there (a new embedder before its fit is committed) gets `FALLBACK`: the uncalibrated
`max(0, 1 - distance / sqrt(2))` (1 for the same vector, 0 for orthogonal ones), a warning in the log, and
results say `"calibrated": false`.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .atomicfile import replacing

log = logging.getLogger(__name__)

CALIBRATION_FILE = Path(__file__).resolve().with_name("calibration.json")


@dataclass(frozen=True)
class Curve:
    """A non-increasing curve through (distance, score) knots, linear between them, flat beyond the ends."""

    distances: tuple[float, ...]
    scores: tuple[float, ...]
    fitted: bool = True

    def score(self, distance) -> np.ndarray | float:
        s = np.interp(np.asarray(distance, np.float64), self.distances, self.scores)
        return float(s) if s.ndim == 0 else s


# No fit for the model: 1 at distance 0, 0 at sqrt(2) (orthogonal unit vectors) and beyond, linear between.
FALLBACK = Curve(distances=(0.0, math.sqrt(2.0)), scores=(1.0, 0.0), fitted=False)


@lru_cache(maxsize=None)
def _entries(path: Path = CALIBRATION_FILE) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("models", {})
    except FileNotFoundError:
        return {}


def curve_for(model_id: str) -> Curve:
    """The fitted curve of `model_id`, or FALLBACK (logged once) when none is committed."""
    entry = _entries().get(model_id)
    if entry is None:
        _warn_fallback(model_id)
        return FALLBACK
    return Curve(distances=tuple(entry["distances"]), scores=tuple(entry["scores"]))


@lru_cache(maxsize=None)
def _warn_fallback(model_id: str) -> None:
    log.warning("no calibration for embedder %s: scores are the uncalibrated 1 - distance/sqrt(2) "
                "(run scripts/fit_calibration.py --model %s)", model_id, model_id)


# -- fitting (scripts/fit_calibration.py) ------------------------------------------------------------------------
def fit_isotonic(distance: np.ndarray, target: np.ndarray, knots: int = 40) -> Curve:
    """P(target | distance), non-increasing in distance: the pairs are cut into `knots` equal-count bins of
    distance, and the bins' shares of target are made monotone by pool-adjacent-violators (weighted by size)."""
    d = np.asarray(distance, np.float64)
    y = np.asarray(target, np.float64)
    order = np.argsort(d, kind="stable")
    parts = [p for p in np.array_split(order, knots) if len(p)]
    xs = [float(d[p].mean()) for p in parts]
    blocks: list[list[float]] = []  # [share, weight, number of bins pooled]
    for p in parts:
        blocks.append([float(y[p].mean()), float(len(p)), 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:  # must not rise with distance: pool
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    ys = [v for v, _, n in blocks for _ in range(n)]
    return Curve(distances=tuple(round(x, 4) for x in xs), scores=tuple(round(v, 4) for v in ys))


def check(curve: Curve, distance: np.ndarray, target: np.ndarray, bins: int = 10) -> dict:
    """Held-out figures of a curve: Brier score (vs. the constant base rate), log loss, and reliability bins
    (equal-count bins of distance: mean predicted vs. observed share of same-label pairs)."""
    d = np.asarray(distance, np.float64)
    y = np.asarray(target, np.float64)
    p = np.clip(curve.score(d), 1e-9, 1 - 1e-9)
    base = float(y.mean())
    order = np.argsort(d)
    rows = []
    for part in np.array_split(order, bins):
        rows.append({"lo": float(d[part].min()), "hi": float(d[part].max()), "n": int(len(part)),
                     "predicted": float(p[part].mean()), "observed": float(y[part].mean())})
    return {"brier": float(((p - y) ** 2).mean()), "brier_base": float(((base - y) ** 2).mean()),
            "log_loss": float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()), "base_rate": base, "bins": rows}


def save(model_id: str, curve: Curve, facts: dict, path: Path = CALIBRATION_FILE) -> Path:
    """Write (or replace) the entry of `model_id` in calibration.json, keeping the other models' entries."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    data.setdefault("about", "distance -> P(same expression) per embedder; written by scripts/fit_calibration.py")
    models = data.setdefault("models", {})
    models[model_id] = {**facts, "distances": list(curve.distances), "scores": list(curve.scores)}
    data["models"] = dict(sorted(models.items()))
    text = re.sub(r"\[\s+([-0-9.,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]",
                  json.dumps(data, indent=2))  # a knot list on one line
    with replacing(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    _entries.cache_clear()
    return path
