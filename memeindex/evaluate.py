"""`memeindex eval`: how well an embedder matches expressions across people, on a labelled face set.

DATASET_DIR holds `index.csv` with columns `path,label,subject` (path relative to the folder; a blank subject
counts as a person of its own) and optional `vote_<label>` columns (rater counts or shares). Every image goes
through the product's own detector once; each embedder then embeds the same faces, so the models are compared on
exactly the same inputs. The largest face of an image stands for it (its label is the image's).

Figures per model:

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

log = logging.getLogger(__name__)

TRIPLETS = 20_000
TRIPLET_MARGIN = 0.1
SEED = 0
_IDENTITY_PAIRS = 200_000


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


def subject_ids(subjects: list[str | None]) -> np.ndarray:
    """Integer ids per subject name; every blank subject gets an id of its own."""
    ids, names = np.empty(len(subjects), np.int64), {}
    for i, s in enumerate(subjects):
        s = (s or "").strip()
        ids[i] = names.setdefault(s, len(names)) if s else -(i + 1)
    return ids


# -- metrics ----------------------------------------------------------------------------------------------
def retrieval_metrics(emb: np.ndarray, labels, subjects, ks=(1, 3), chunk: int = 1024) -> dict:
    """Cross-identity P@k and mAP of cosine-similarity rankings (rows of `emb` are L2-normalised).

    Each query ranks every other item whose subject differs; queries with no such item, or (for mAP) no
    same-label item among them, are left out of that figure.
    """
    emb = np.asarray(emb, np.float32)
    labels = np.asarray(labels)
    subj = subject_ids(list(subjects))
    n = len(emb)
    p_sums = {k: 0.0 for k in ks}
    p_count = 0
    ap_sum, ap_count = 0.0, 0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        sim = emb[start:stop] @ emb.T
        valid = subj[start:stop, None] != subj[None, :]  # also excludes the query itself
        sim = np.where(valid, sim, -np.inf)
        order = np.argsort(-sim, axis=1, kind="stable")
        rel = (labels[order] == labels[start:stop, None]) & np.take_along_axis(valid, order, axis=1)
        n_valid = valid.sum(axis=1)
        has = n_valid > 0
        p_count += int(has.sum())
        for k in ks:
            denom = np.minimum(n_valid, k)
            p_sums[k] += float((rel[:, :k].sum(axis=1)[has] / denom[has]).sum())
        n_rel = rel.sum(axis=1)
        hits = np.cumsum(rel, axis=1)
        prec = hits / np.arange(1, n + 1)[None, :]
        ap = (prec * rel).sum(axis=1)
        ok = n_rel > 0
        ap_sum += float((ap[ok] / n_rel[ok]).sum())
        ap_count += int(ok.sum())
    out = {f"P@{k}": (p_sums[k] / p_count if p_count else float("nan")) for k in ks}
    out["mAP"] = ap_sum / ap_count if ap_count else float("nan")
    out["queries"] = p_count
    return out


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (square root of the divergence, natural log) between rows of p and q."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    m = (p + q) / 2

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(a > 0, a * np.log(a / b), 0.0)
        return t.sum(axis=-1)

    return np.sqrt(np.maximum((kl(p, m) + kl(q, m)) / 2, 0.0))


def sample_triplets(votes: np.ndarray, subjects, n: int = TRIPLETS, margin: float = TRIPLET_MARGIN,
                    seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """`n` seeded triplets of three different subjects; those with a clear closest pair by the votes.

    Returns (triplets [m, 3] item indices, pair [m]: which pair is closest, 0 = (a,b), 1 = (a,c), 2 = (b,c)).
    Items whose votes sum to zero are never drawn.
    """
    votes = np.asarray(votes, np.float64)
    subj = subject_ids(list(subjects))
    pool = np.flatnonzero(votes.sum(axis=1) > 0)
    if len(pool) < 3 or len(np.unique(subj[pool])) < 3:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    tri = np.zeros((0, 3), np.int64)
    while len(tri) < n:  # draw, keep those of three different subjects, until there are n
        t = pool[rng.integers(0, len(pool), size=(2 * (n - len(tri)) + 16, 3))]
        s = subj[t]
        t = t[(s[:, 0] != s[:, 1]) & (s[:, 0] != s[:, 2]) & (s[:, 1] != s[:, 2])]
        tri = np.concatenate([tri, t])
    tri = tri[:n]
    d = np.stack([js_distance(votes[tri[:, 0]], votes[tri[:, 1]]),
                  js_distance(votes[tri[:, 0]], votes[tri[:, 2]]),
                  js_distance(votes[tri[:, 1]], votes[tri[:, 2]])], axis=1)
    ranked = np.sort(d, axis=1)
    clear = ranked[:, 1] - ranked[:, 0] >= margin
    return tri[clear], np.argmin(d[clear], axis=1)


def triplet_accuracy(emb: np.ndarray, triplets: np.ndarray, pair: np.ndarray) -> float | None:
    """Share of triplets whose most similar pair of embeddings is the raters' closest pair."""
    if len(triplets) == 0:
        return None
    e = np.asarray(emb, np.float32)
    a, b, c = e[triplets[:, 0]], e[triplets[:, 1]], e[triplets[:, 2]]
    sims = np.stack([(a * b).sum(1), (a * c).sum(1), (b * c).sum(1)], axis=1)
    return float((np.argmax(sims, axis=1) == pair).mean())


def identity_metrics(emb: np.ndarray, labels, subjects, seed: int = SEED) -> dict | None:
    """Identity-blindness on the subjects that repeat: same label/other person vs other label/same person.

    `identity` is the chance (over up to 200k seeded pairs of pairs) that a same-label pair of two people is
    more similar than a different-label pair of one person; None when the set has no such pairs.
    """
    emb = np.asarray(emb, np.float32)
    labels = np.asarray(labels)
    subj = subject_ids(list(subjects))
    sim = emb @ emb.T
    iu = np.triu_indices(len(emb), k=1)
    same_subj = subj[iu[0]] == subj[iu[1]]
    same_label = labels[iu[0]] == labels[iu[1]]
    # Only faces of repeated subjects take part, so both kinds of pairs come from the same people.
    counts = {s: c for s, c in zip(*np.unique(subj, return_counts=True))}
    repeated = np.array([counts[s] > 1 for s in subj])
    both = repeated[iu[0]] & repeated[iu[1]]
    pos = sim[iu][both & same_label & ~same_subj]  # same expression, different people
    neg = sim[iu][both & ~same_label & same_subj]  # different expressions, one person
    if len(pos) == 0 or len(neg) == 0:
        return None
    rng = np.random.default_rng(seed)
    pi = rng.integers(0, len(pos), _IDENTITY_PAIRS)
    ni = rng.integers(0, len(neg), _IDENTITY_PAIRS)
    wins = (pos[pi] > neg[ni]).mean() + 0.5 * (pos[pi] == neg[ni]).mean()
    return {"identity": float(wins), "d_same_expr_other_person": float(1 - pos.mean()),
            "d_other_expr_same_person": float(1 - neg.mean()), "identity_pairs": [int(len(pos)), int(len(neg))]}


def score(emb: np.ndarray, labels, subjects, votes: np.ndarray | None = None,
          triplets: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Every figure for one model's embeddings of the found faces (one row per image that has a face)."""
    out = retrieval_metrics(emb, labels, subjects)
    if triplets is None and votes is not None:
        triplets = sample_triplets(votes, subjects)
    if triplets is not None:
        out["triplet"] = triplet_accuracy(emb, *triplets)
        out["triplets"] = int(len(triplets[0]))
    else:
        out["triplet"], out["triplets"] = None, 0
    ident = identity_metrics(emb, labels, subjects)
    if ident:
        out.update(ident)
    return out


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


def format_report(result: dict) -> str:
    """The figures of `evaluate` as a table, one column per model."""
    models = list(result["models"])
    rows = [("faces found", lambda m: f"{m['faces']} in {m['images']}/{result['images']} images")]

    def num(key, fmt="{:.3f}"):
        return lambda m: "-" if m.get(key) is None else fmt.format(m[key])

    rows += [("P@1 (cross-identity)", num("P@1")), ("P@3 (cross-identity)", num("P@3")),
             ("mAP (cross-identity)", num("mAP"))]
    if any(m.get("triplet") is not None for m in result["models"].values()):
        rows.append(("triplet (raters, chance 0.333)",
                     lambda m: "-" if m.get("triplet") is None else f"{m['triplet']:.3f} of {m['triplets']}"))
    if any("identity" in m for m in result["models"].values()):
        rows.append(("identity-blind (1 = ideal)", num("identity")))
        rows.append(("  d same expr / other person", num("d_same_expr_other_person")))
        rows.append(("  d other expr / same person", num("d_other_expr_same_person")))
    cells = [[name] + [fn(result["models"][m]) for m in models] for name, fn in rows]
    header = ["", *models]
    widths = [max(len(str(r[c])) for r in [header, *cells]) for c in range(len(header))]
    lines = [f"{result['dataset']}: {result['images']} images"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in cells:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return "\n".join(lines)
