"""The faces the expression models learn and are selected on, detected and cropped once, cached on disk.

Every face goes through the product's own code: `FaceDetector` (largest face of each image, as `memeindex eval`
takes it) and the crop functions of `memeindex.embedders.learned`, so training sees exactly what inference sees.
The cache key holds the detector's version, `CROP_CODE_VERSION` and the list of files, so a change to detection
or cropping never trains on stale crops. A cache is byte-reproducible in one environment (np.savez writes fixed zip
timestamps, the pool keeps the files' order), not across OpenCV builds: the detector's and the crops' warps differ
by up to ~1 px between builds, and the key does not hold the build (a cache extracted under another one is reused as
it is; the model's summary records the cv2 it was trained with: export.environment).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..atomicfile import replacing
from ..settings import Settings

log = logging.getLogger(__name__)

CROP_CODE_VERSION = "3"  # bump whenever the cached crops would differ (crop functions, what is stored)
FERPLUS = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"]  # FER+ vote order
MEME_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}


def file_sha256(path: Path) -> str:
    from ..models import sha256_file

    return sha256_file(path)


# -- what to extract --------------------------------------------------------------------------------------
@dataclass
class FerSplit:
    """FER-2013 Training rows cut, seeded and by image, into a fit part and a validation part (FER has no subjects)."""

    fit: list[dict]
    val: list[dict]


def fer_training_split(data: Path, seed: int, n_val: int, n_fit: int) -> FerSplit:
    """Usable Training rows (raters voted, mostly not 'not a face'), permuted by `seed`: first n_val = validation."""
    with open(data / "fer2013" / "index.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["usage"] == "Training"]
    usable = [r for r in rows if sum(float(r[f"vote_{e}"] or 0) for e in FERPLUS) > 0
              and float(r["ferplus_not_a_face"] or 0) < 5]
    order = np.random.default_rng(seed).permutation(len(usable))
    picked = [usable[i] for i in order[: n_val + n_fit]]
    return FerSplit(fit=picked[n_val:], val=picked[:n_val])


def votes_of(rows: list[dict]) -> np.ndarray:
    return np.array([[float(r[f"vote_{e}"] or 0) for e in FERPLUS] for r in rows], np.float32)


def majority(votes: np.ndarray) -> np.ndarray:
    """FER+ raters' majority label (ties: the first class in FERPLUS order)."""
    return np.array([FERPLUS[i] for i in np.argmax(votes, axis=1)])


def meme_files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in MEME_SUFFIXES
                  and not p.name.startswith("."))


# -- extraction -------------------------------------------------------------------------------------------
_detector = None
_settings = None


def _init_worker(settings: Settings) -> None:
    global _detector, _settings
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.disable(logging.WARNING)
    from ..faces import FaceDetector

    _settings = dataclasses.replace(settings, workers=1)
    _detector = FaceDetector(_settings)


def _faces_of(job: tuple[str, bool]):
    """(box, landmarks, gray48, blendshapes) per face kept: the largest, or every face when all_faces."""
    from ..embedders.learned import face_inputs

    path, all_faces = job
    rgb = _decode(path, _settings)
    if rgb is None:
        return []
    faces = _detector.detect(rgb)
    faces = faces if all_faces else faces[:1]
    if not faces:
        return []
    gray, shapes = face_inputs(rgb, faces)
    return [(np.asarray(f.box, np.float32), np.asarray(f.landmarks, np.float32), g, s)
            for f, g, s in zip(faces, gray, shapes)]


def _decode(path: str, settings: Settings) -> np.ndarray | None:
    """The first frame, RGB, exactly as `memeindex eval` decodes it (None when unreadable)."""
    from ..images import decode

    try:
        return decode(path, max_pixels=settings.max_pixels, hard_max_pixels=settings.hard_max_pixels,
                      max_frames=1)[0].rgb
    except Exception:  # noqa: BLE001 - an unreadable file has no face
        return None


def cache_name(path: Path) -> str:
    """A file's name in a cache key: its last three path parts (dataset/part/file), wherever ../shared lives."""
    return "/".join(Path(path).parts[-3:])


def extract(name: str, paths: list[Path], cache: Path, settings: Settings, workers: int = 2,
            all_faces: bool = False) -> dict:
    """Faces of `paths`, cached in cache/NAME-KEY.npz: image [m] (index into paths), box [m,4],
    landmarks [m,478,3], gray48 [m,48,48] uint8 (v1's input), shapes [m,52]; plus `key` and `paths`."""
    from ..faces import detector_id

    key_src = json.dumps({"detector": detector_id(settings), "crop_code": CROP_CODE_VERSION, "all_faces": all_faces,
                          "paths": [cache_name(p) for p in paths]})
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    out = Path(cache) / f"{name}-{key}.npz"
    if not out.exists():
        from tqdm import tqdm

        from ..embedders.learned import CROP

        found = []
        jobs = [(str(p), all_faces) for p in paths]
        with get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
            for i, faces in enumerate(tqdm(pool.imap(_faces_of, jobs, chunksize=32), total=len(jobs),
                                           desc=f"faces {name}", unit="img", mininterval=10)):
                found.extend((i, *f) for f in faces)
        arrays = {"image": np.array([f[0] for f in found], np.int64),
                  "box": np.array([f[1] for f in found], np.float32).reshape(-1, 4),
                  "landmarks": np.array([f[2] for f in found], np.float32).reshape(-1, 478, 3),
                  "gray48": np.array([f[3] for f in found], np.uint8).reshape(-1, CROP, CROP),
                  "shapes": np.array([f[4] for f in found], np.float32).reshape(-1, 52)}
        out.parent.mkdir(parents=True, exist_ok=True)
        with replacing(out) as tmp, open(tmp, "wb") as f:  # to a file object savez adds no ".npz" to the name
            np.savez(f, **arrays)
        log.info("%s: %d faces in %d images -> %s", name, len(found), len(paths), out)
    z = np.load(out)
    return {k: z[k] for k in z.files} | {"key": key, "file": out, "paths": list(paths)}


def color_crops(faces: dict, crop, settings: Settings) -> np.ndarray:
    """uint8 [m,112,112,3]: crop(rgb, box, landmarks) of every cached face, from its re-decoded image."""
    out, last, rgb = [], None, None
    for i, box, lm in zip(faces["image"], faces["box"], faces["landmarks"]):
        if i != last:
            rgb, last = _decode(str(faces["paths"][i]), settings), i
        out.append(crop(rgb, box, lm))
    return np.array(out, np.uint8).reshape(-1, 112, 112, 3)


def labelled_set(dataset_dir: Path) -> tuple[list[dict], list[Path]]:
    """Rows of a `memeindex eval` set (index.csv) and their image paths."""
    from ..evaluate import read_index

    rows, _ = read_index(dataset_dir)
    return rows, [Path(dataset_dir) / r["path"] for r in rows]


# -- the expression-v1 recipe's cache: 64 px aligned gray crops (jitter room) of FER-2013 and muxspace --------
V1_CACHE_SIDE = 64


def _v1_one(path: str):
    from ..embedders.learned import CROP, alignment_matrix, face_inputs, to_gray

    zoom = V1_CACHE_SIDE / CROP
    raw = None
    rgb = _decode(path, _settings)
    if rgb is None:
        return False, None, None, None, None
    if rgb.shape[0] == 48 and rgb.shape[1] == 48:
        raw = to_gray(rgb)
    faces = _detector.detect(rgb)
    if not faces:
        return False, None, None, None, raw
    face = faces[0]
    crops, shapes = face_inputs(rgb, [face], V1_CACHE_SIDE, zoom)
    return True, crops[0], shapes[0], alignment_matrix(face.landmarks, V1_CACHE_SIDE, zoom), raw


def extract_v1(dataset: Path, out: Path, settings: Settings, workers: int = 2, usage: str | None = None) -> None:
    """v1's cache of one dataset (index.csv): found, crop [n,64,64], shapes, matrix, raw (FER's own pixels)."""
    with open(dataset / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if usage:
        keep = set(usage.split(","))
        rows = [r for r in rows if r.get("usage") in keep]
    paths = [str(dataset / r["path"]) for r in rows]
    n = len(paths)
    found = np.zeros(n, bool)
    crop = np.zeros((n, V1_CACHE_SIDE, V1_CACHE_SIDE), np.uint8)
    shapes = np.zeros((n, 52), np.float32)
    matrix = np.zeros((n, 2, 3), np.float32)
    raw = np.zeros((n, 48, 48), np.uint8)
    with get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
        for i, (ok, c, s, m, r) in enumerate(pool.imap(_v1_one, paths, chunksize=64)):
            if r is not None:
                raw[i] = r
            if ok:
                found[i], crop[i], shapes[i], matrix[i] = True, c, s, m
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, path=np.array([r["path"] for r in rows]), found=found, crop=crop, shapes=shapes,
                            matrix=matrix, raw=raw)


def extract_v1_caches(data: Path, cache: Path, settings: Settings, workers: int) -> None:
    jobs = [(data / "fer2013", cache / "fer2013.npz", "Training,PublicTest"), (data / "muxspace", cache / "muxspace.npz", None)]
    for src, out, usage in jobs:
        if not out.exists():
            log.info("extracting %s -> %s", src, out)
            extract_v1(src, out, settings, workers, usage)


def load_fer(data: Path, cache: Path):
    z = np.load(cache / "fer2013.npz")
    with open(data / "fer2013" / "index.csv", newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    paths = [str(p) for p in z["path"]]
    votes = np.array([[float(rows[p][f"vote_{e}"]) for e in FERPLUS] for p in paths], np.float32)
    not_face = np.array([float(rows[p]["ferplus_not_a_face"] or 0) for p in paths])
    usage = np.array([rows[p]["usage"] for p in paths])
    # the publictest labels exactly as `memeindex eval` reads them (FER+ majority, non-faces dropped)
    with open(data / "fer2013-publictest" / "index.csv", newline="") as fh:
        pt = {os.path.normpath(os.path.join("fer2013-publictest", r["path"])).split("fer2013/", 1)[1]: r["label"]
              for r in csv.DictReader(fh)}
    pt_label = np.array([pt.get(p, "") for p in paths])
    return dict(crop=z["crop"], shapes=z["shapes"], found=z["found"], votes=votes, not_face=not_face,
                usage=usage, pt_label=pt_label)


def load_mux(data: Path, cache: Path):
    z = np.load(cache / "muxspace.npz")
    with open(data / "muxspace" / "index.csv", newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    paths = [str(p) for p in z["path"]]
    keep = z["found"]
    return dict(crop=z["crop"][keep], shapes=z["shapes"][keep],
                label=np.array([rows[p]["label"] for p in paths])[keep],
                subject=[rows[p]["subject"] for p, k in zip(paths, keep) if k])
