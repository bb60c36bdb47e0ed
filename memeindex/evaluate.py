"""`memeindex eval`: how well an embedder matches expressions across people, on a labelled face set.

DATASET_DIR holds `index.csv` with columns `path,label,subject` (path relative to the folder; a blank subject
counts as a person of its own) and optional `vote_<label>` columns (rater counts or shares). Every image goes
through the product's own detector once; each embedder then embeds the same faces, so the models are compared on
exactly the same inputs. The largest face of an image stands for it (its label is the image's).

Figures per model (computed by `memeindex.metrics`):

* faces / images: faces found, and images with at least one face, out of the dataset's images;
* cross-identity retrieval: each query ranks every other face whose subject differs (cosine similarity);
  P@k is the share of same-label faces among its top k, mAP the mean average precision over the whole ranking;
* triplet: FEC-style agreement with the raters. 20,000 seeded triplets of three different subjects; the
  ground-truth closest pair is the one with the smallest Jensen-Shannon distance between the vote distributions,
  kept only when it is clear of the next pair by at least 0.1; the model is right when its own closest pair
  (highest cosine similarity) is that pair. Chance is 1/3.
* identity: on subjects with several faces, the chance that a same-label pair of two different people is closer
  than a different-label pair of one person (1.0 = identity-blind, 0.5 = no better than a coin), with the two
  mean cosine distances.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from .metrics import sample_triplets, score

log = logging.getLogger(__name__)



# -- data -------------------------------------------------------------------------------------------------
def read_index(dataset_dir: str | Path) -> tuple[list[dict], list[str]]:
    """Rows of DATASET_DIR/index.csv and the names of its vote columns (without the `vote_` prefix).

    Raises DatasetInvalid, naming the file and line, for a missing or unreadable file, missing columns, a row
    without a path or label, or a vote that is not a number.
    """
    from .errors import DatasetInvalid

    path = Path(dataset_dir) / "index.csv"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            missing = {"path", "label"} - set(fields)
            if missing:
                raise DatasetInvalid(f"{path} lacks the column(s) {', '.join(sorted(missing))}")
            votes = [f[len("vote_"):] for f in fields if f.startswith("vote_")]
            rows = []
            for row in reader:
                where = f"{path}, line {reader.line_num}"
                if not (row.get("path") or "").strip() or not (row.get("label") or "").strip():
                    raise DatasetInvalid(f"{where}: every row needs a path and a label")
                for v in votes:
                    try:
                        float(row.get(f"vote_{v}") or 0)
                    except ValueError:
                        raise DatasetInvalid(f"{where}: vote_{v} is not a number") from None
                rows.append(row)
    except FileNotFoundError:
        raise DatasetInvalid(f"{path} is missing: a dataset folder holds index.csv (path,label,subject)") from None
    except UnicodeDecodeError:
        raise DatasetInvalid(f"{path} is not UTF-8 text") from None
    except csv.Error as exc:
        raise DatasetInvalid(f"{path} is not valid CSV ({exc})") from None
    return rows, votes


# -- running the models -----------------------------------------------------------------------------------
def _embedders(models, settings):
    from .embedders import BlendshapeEmbedder, ExpressionEmbedder, get_embedder

    if models is None:
        models = ["baseline", "auto"]
    elif isinstance(models, (str, ExpressionEmbedder)):
        models = [models]
    out = []
    for m in models:
        e = m if isinstance(m, ExpressionEmbedder) else get_embedder(settings, m)
        if all(e.model_id != o.model_id for o in out):
            out.append(e)
    return out or [BlendshapeEmbedder()]


def evaluate(dataset_dir: str | Path, models=None, settings=None, progress=True) -> dict:
    """Figures of each model on DATASET_DIR (see the module doc). `models`: None = baseline + learned (when a
    learned model file exists), else model names/ids ('baseline', 'learned', 'expression-v1') or embedders.
    `progress`: True for a bar on stderr, a text stream for a bar there, False for none."""
    from .faces import FaceDetector
    from .images import decode
    from .settings import Settings

    settings = settings or Settings.from_env()
    dataset_dir = Path(dataset_dir)
    rows, vote_names = read_index(dataset_dir)
    embedders = _embedders(models, settings)
    vectors = {e.model_id: [] for e in embedders}
    kept, n_faces = [], 0
    iterator = rows
    if progress:
        try:
            from tqdm import tqdm

            iterator = tqdm(rows, desc=f"eval {dataset_dir.name}", unit="img",
                            file=progress if hasattr(progress, "write") else None)
        except ImportError:  # pragma: no cover
            pass
    with FaceDetector(settings) as detector:
        for i, row in enumerate(iterator):
            try:
                frames = decode(dataset_dir / row["path"], max_pixels=settings.max_pixels,
                                hard_max_pixels=settings.hard_max_pixels, max_frames=1)
            except Exception as exc:  # noqa: BLE001 - an unreadable image counts as one without a face
                log.warning("%s: %s", row["path"], exc)
                continue
            rgb = frames[0].rgb
            faces = detector.detect(rgb)
            if not faces:
                continue
            n_faces += len(faces)
            kept.append(i)
            for e in embedders:
                vectors[e.model_id].append(e.embed(rgb, faces[:1])[0])
    labels = [rows[i]["label"] for i in kept]
    subjects = [rows[i].get("subject", "") for i in kept]
    votes = None
    if vote_names:
        votes = np.array([[float(rows[i].get(f"vote_{v}") or 0) for v in vote_names] for i in kept])
    triplets = sample_triplets(votes, subjects) if votes is not None else None
    result = {"dataset": str(dataset_dir), "images": len(rows), "models": {}}
    for e in embedders:
        emb = np.stack(vectors[e.model_id]) if kept else np.zeros((0, e.dim), np.float32)
        figures = {"faces": n_faces, "images": len(kept)}
        if kept:
            figures.update(score(emb, labels, subjects, votes, triplets))
        result["models"][e.model_id] = figures
    for e in embedders:
        close = getattr(e, "close", None)
        if close:
            close()
    return result

