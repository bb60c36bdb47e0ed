"""One Settings object: every path, threshold and model choice, each overridable by a MEMEINDEX_* variable."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

# The checkout's top folder when run from a clone (editable install); models/ lives there.
_REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_models_dir() -> Path:
    if (_REPO_ROOT / "setup.cfg").exists():
        return _REPO_ROOT / "models"
    return Path.home() / ".cache" / "memeindex" / "models"


def _default_index_dir() -> Path:
    """Where `--index` points when neither it nor MEMEINDEX_INDEX is given: a per-user data folder, the same from
    any working directory (XDG_DATA_HOME, else ~/.local/share)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "memeindex" / "default"


def _env(name: str, default, cast=str):
    raw = os.environ.get(f"MEMEINDEX_{name}")
    if raw in (None, ""):
        return default
    try:
        return cast(raw)
    except ValueError:
        from .errors import BadSetting

        raise BadSetting(f"MEMEINDEX_{name}={raw!r} is not a valid {type(default).__name__}") from None


# Numbers no setting may go below 1 (a count, a size) and those that are fractions (0..1); every other number may be
# 0 (off, or no wait) but not negative. Out of range is BadSetting (exit 2), never a failure far from its cause
# (MEMEINDEX_MAX_PIXELS=0 failed every file of a build as an "undecodable image").
_AT_LEAST_ONE = frozenset({"workers", "max_pixels", "hard_max_pixels", "max_frames", "max_faces", "checkpoint_every",
                           "max_file_bytes", "max_upload_bytes", "max_k", "max_pending_searches",
                           "download_max_bytes"})
_FRACTIONS = frozenset({"min_face_score", "weak_score"})


def _out_of_range(name: str, value) -> str | None:
    """Why `value` is out of range for the setting `name` ("out of range: 1 or more"), or None when it is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, high = (1, None) if name in _AT_LEAST_ONE else (0, 1) if name in _FRACTIONS else (0, None)
    if value >= low and (high is None or value <= high):  # written so that NaN is out of range too
        return None
    return f"out of range: {f'from {low} to {high}' if high is not None else f'{low} or more'}"


@dataclass(frozen=True)
class Settings:
    models_dir: Path = field(default_factory=_default_models_dir)
    index_dir: Path = field(default_factory=_default_index_dir)
    embedder: str = "auto"  # "auto" = the learned model when present, else the blendshape baseline
    workers: int = max(1, os.cpu_count() or 1)
    max_pixels: int = 4_000_000  # frames are downscaled to this before detection
    hard_max_pixels: int = 250_000_000  # beyond this a file is refused unread (decompression bomb)
    max_frames: int = 3  # frames a build samples from an animated GIF/WebP (a query: pipeline.QUERY_FRAMES)
    max_faces: int = 8  # faces kept per frame, largest first
    min_face_score: float = 0.5
    min_face_px: int = 12  # a face box smaller than this (pixels) cannot be described
    second_pass: bool = True  # the detector rounds after the full frame (faces.detector); False: the full frame only
    weak_score: float = 0.5  # matches scoring below this (calibrated P(same expression)) are labelled weak
    index_type: str = "auto"  # auto | flat | hnsw | ivfsq | ivfpq (memeindex.vectors)
    checkpoint_every: int = 64  # files per resume checkpoint: a killed build loses at most this much work
    backend: str = "pool"  # where a build analyses files: pool (local processes) | inprocess | ray
    ray_address: str = ""  # the Ray cluster of the ray backend ("" = start a local Ray)
    file_timeout: float = 120.0  # seconds one file may take in a worker before it is killed and the file failed
    max_file_bytes: int = 512 * 1024 * 1024  # a bigger file fails unread
    # The service
    max_upload_bytes: int = 10 * 1024 * 1024  # larger uploads get 413
    max_k: int = 20
    max_pending_searches: int = 8  # searches running or queued on the model thread; beyond, 503 + Retry-After
    reload_interval: float = 2.0  # seconds between checks for a newly published index
    thumb_cache_bytes: int = 64 * 1024 * 1024
    ssl_certfile: str = ""  # camera access from a phone needs HTTPS
    ssl_keyfile: str = ""
    # `memeindex download`
    imgflip_api: str = "https://api.imgflip.com/get_memes"  # tests point it at a loopback server
    download_timeout: float = 15.0  # seconds a connection may stall (connecting: at most 5)
    download_max_bytes: int = 20 * 1024 * 1024  # a bigger body is aborted mid-stream
    download_interval: float = 0.5  # seconds between two requests: the rate limit
    download_retries: int = 3  # more tries after a 429, a 5xx, a timeout or a truncated body
    download_backoff: float = 1.0  # seconds before the first retry; doubles each time
    download_max_wait: float = 30.0  # cap on one wait, Retry-After included
    download_allow_private: str = ""  # addresses/networks (comma-separated CIDR) that may be private or loopback

    def __post_init__(self):
        """A value out of range is BadSetting naming the field (`workers=0`): a caller of the library set it, not
        the environment (from_env names the variable it read)."""
        for f in dataclasses.fields(self):
            problem = _out_of_range(f.name, getattr(self, f.name))
            if problem:
                from .errors import BadSetting

                raise BadSetting(f"{f.name}={getattr(self, f.name)!r} is {problem}")

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Defaults, then MEMEINDEX_* variables, then explicit overrides (None means 'not given')."""
        values = {}
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            cast = type(default)
            if cast is bool:
                cast = lambda s: s.strip().lower() in ("1", "true", "yes", "on")  # noqa: E731
            elif isinstance(default, Path):
                cast = Path
            values[f.name] = _env(f.name.upper(), default, cast)
            problem = _out_of_range(f.name, values[f.name])
            if problem and overrides.get(f.name) is None:  # read from MEMEINDEX_*: the message names the variable
                from .errors import BadSetting

                raw = os.environ.get(f"MEMEINDEX_{f.name.upper()}", values[f.name])
                raise BadSetting(f"MEMEINDEX_{f.name.upper()}={raw!r} is {problem}")
        # MEMEINDEX_MODELS and MEMEINDEX_INDEX are the short names users type.
        values["models_dir"] = _env("MODELS", values["models_dir"], Path)
        values["index_dir"] = _env("INDEX", values["index_dir"], Path)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
