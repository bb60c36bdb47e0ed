"""What the benchmark scripts share: synthetic expression embeddings and this process's memory figures.

Imported by scripts/bench_scale.py and scripts/bench_templates.py (scripts/ is on sys.path when they run)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CENTRES = 2000  # expression centres the clustered vectors are drawn around (as real expression embeddings cluster)
CENTRES_SEED = 12345  # the same centres in every script and run
SPREAD = 0.8  # a vector's distance from its centre, before it is made unit


def expression_vectors(rng: np.random.Generator, shape, dim: int, distribution: str = "clustered") -> np.ndarray:
    """Unit float32 vectors of `dim`, an array of `shape` + (dim,): `clustered` around CENTRES fixed centres, or
    `uniform` on the sphere (the worst case for an approximate index: no structure to exploit)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if distribution == "uniform":
        vectors = rng.standard_normal((*shape, dim), dtype=np.float32)
    else:
        centres = np.random.default_rng(CENTRES_SEED).standard_normal((CENTRES, dim)).astype(np.float32)
        vectors = centres[rng.integers(0, len(centres), shape)] + \
            SPREAD * rng.standard_normal((*shape, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors


def status_mb(field: str) -> float:
    """This process's /proc/self/status figure `field` (VmRSS, VmHWM) in MB; NaN where there is none."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Linux: the process's VmHWM starts again from its current RSS (proc(5), /proc/PID/clear_refs "5")."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
