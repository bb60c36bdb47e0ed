"""Pure retrieval, triplet and identity metrics over embeddings (no I/O, no models): `memeindex eval` and the
training code's selection both use these, so a figure means the same everywhere. What each figure measures is
described in `memeindex.evaluate`'s docstring.
"""
from __future__ import annotations

import numpy as np

TRIPLETS = 20_000
TRIPLET_MARGIN = 0.1
SEED = 0
_IDENTITY_PAIRS = 200_000


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
