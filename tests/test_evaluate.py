"""The metric code of `memeindex eval` on tiny hand-computable cases, and once on the shared data."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from memeindex.cli import format_eval
from memeindex.evaluate import read_index
from memeindex.metrics import (identity_metrics, js_distance, retrieval_metrics, sample_triplets, score, subject_ids,
                               triplet_accuracy)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def unit(*vs):
    v = np.array(vs, np.float64)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


# four faces on a circle: a, b near (1, 0); c, d near (0, 1)
EMB = unit([1, 0], [0.95, 0.05], [0, 1], [0.05, 0.95])


def test_subject_ids_blank_is_unique():
    ids = subject_ids(["ann", "", "ann", None, "bob", ""])
    assert ids[0] == ids[2]
    assert len({ids[1], ids[3], ids[5], ids[0], ids[4]}) == 5


def test_retrieval_all_blank_subjects():
    m = retrieval_metrics(EMB, ["x", "x", "y", "y"], ["", "", "", ""])
    assert m["P@1"] == pytest.approx(1.0)  # each nearest neighbour shares the label
    assert m["P@3"] == pytest.approx(1 / 3)  # three candidates, one of them relevant
    assert m["mAP"] == pytest.approx(1.0)  # the one relevant face is ranked first
    assert m["queries"] == 4


def test_retrieval_excludes_same_subject():
    # a and b are one person: a may not retrieve b, so a's only same-label face is gone
    labels = ["x", "x", "y", "x"]
    m = retrieval_metrics(EMB, labels, ["s", "s", "", ""])
    # a: candidates d (x, sim .05/.95 normalised > 0) then c (y) -> P@1 1, AP 1
    # b: candidates d (x) then c (y)                             -> P@1 1, AP 1
    # c: ranking d (x), b (x), a (x): no same-label face (y)     -> P@1 0, no AP
    # d: ranking c (y), b (x), a (x)                             -> P@1 0, AP = (1/2 + 2/3) / 2
    assert m["P@1"] == pytest.approx(2 / 4)
    assert m["P@3"] == pytest.approx((1 / 2 + 1 / 2 + 0 + 2 / 3) / 4)  # a, b have only two candidates
    assert m["mAP"] == pytest.approx((1 + 1 + (1 / 2 + 2 / 3) / 2) / 3)


def test_retrieval_chunked_equals_whole():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(50, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    labels = rng.integers(0, 4, 50)
    subjects = [str(s) if s < 10 else "" for s in rng.integers(0, 20, 50)]
    a = retrieval_metrics(e, labels, subjects, chunk=7)
    b = retrieval_metrics(e, labels, subjects, chunk=1000)
    for k in ("P@1", "P@3", "mAP"):
        assert a[k] == pytest.approx(b[k])


def test_js_distance_known_values():
    assert js_distance(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(math.sqrt(math.log(2)))
    assert js_distance(np.array([3.0, 1]), np.array([0.75, 0.25])) == pytest.approx(0.0)  # counts or shares
    p, q = np.array([0.5, 0.5]), np.array([1.0, 0.0])
    m = np.array([0.75, 0.25])
    expect = math.sqrt((0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25) + math.log(1 / 0.75)) / 2)
    assert js_distance(p, q) == pytest.approx(expect)
    assert m.sum() == 1


def test_triplets_pick_the_clear_pair():
    votes = np.array([[10, 0], [9, 1], [0, 10]], float)
    tri, pair = sample_triplets(votes, ["", "", ""], n=50, seed=3)
    assert len(tri) == 50  # every draw is a permutation of the three, all clear
    for t, p in zip(tri, pair):
        pairs = [(t[0], t[1]), (t[0], t[2]), (t[1], t[2])]
        assert set(pairs[p]) == {0, 1}
    good = unit([1, 0], [0.9, 0.1], [0, 1])
    bad = unit([1, 0], [0, 1], [0.9, 0.1])
    assert triplet_accuracy(good, tri, pair) == 1.0
    assert triplet_accuracy(bad, tri, pair) == 0.0


def test_triplets_need_three_subjects_and_a_margin():
    votes = np.array([[10, 0], [9, 1], [0, 10], [1, 9]], float)
    assert len(sample_triplets(votes, ["a", "a", "b", "b"])[0]) == 0  # only two people
    flat = np.array([[5, 5], [5, 5], [4, 6]], float)  # no pair clear of the next by 0.1
    tri, pair = sample_triplets(flat, ["", "", ""], n=20)
    assert len(tri) == 0
    assert triplet_accuracy(EMB[:3], tri, pair) is None
    # the same seed draws the same triplets
    a = sample_triplets(np.random.default_rng(0).integers(0, 10, (30, 4)), [""] * 30, n=500, seed=7)
    b = sample_triplets(np.random.default_rng(0).integers(0, 10, (30, 4)), [""] * 30, n=500, seed=7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_identity_metric():
    # two people, each making two expressions; the embedding follows the expression: identity-blind
    emb = unit([1, 0], [0, 1], [0.98, 0.02], [0.02, 0.98])
    labels, subjects = ["x", "y", "x", "y"], ["p", "p", "q", "q"]
    assert identity_metrics(emb, labels, subjects)["identity"] == 1.0
    # an embedding that follows the person instead
    emb = unit([1, 0], [0.98, 0.02], [0, 1], [0.02, 0.98])
    assert identity_metrics(emb, labels, subjects)["identity"] == 0.0
    assert identity_metrics(emb, labels, ["", "", "", ""]) is None


def test_score_and_report_shape():
    votes = np.array([[10, 0], [9, 1], [0, 10], [1, 9]], float)
    figures = score(EMB, ["x", "x", "y", "y"], ["", "", "", ""], votes)
    assert figures["triplet"] == 1.0 and figures["triplets"] > 0
    result = {"dataset": "toy", "images": 5,
              "models": {"m1": {"faces": 4, "images": 4, **figures},
                         "m2": {"faces": 4, "images": 4, **figures, "triplet": None, "triplets": 0}}}
    text = format_eval(result)
    assert "m1" in text and "m2" in text and "P@3" in text and "triplet" in text
    json.dumps(result)


def test_read_index(tmp_path):
    (tmp_path / "index.csv").write_text("path,label,subject,vote_happy,vote_sad\na.png,happy,,3,1\n")
    rows, votes = read_index(tmp_path)
    assert votes == ["happy", "sad"] and rows[0]["label"] == "happy"
    (tmp_path / "index.csv").write_text("file,label\na.png,happy\n")
    with pytest.raises(ValueError):
        read_index(tmp_path)


@pytest.mark.shared
def test_evaluate_on_shared_subset(tmp_path):
    src = SHARED / "expressions" / "fer2013-publictest"
    if not (src / "index.csv").exists():
        pytest.skip("../shared/data is absent")
    from memeindex.embedders.registry import DEFAULT_LEARNED, LEARNED_MODELS
    from memeindex.evaluate import evaluate
    from memeindex.settings import Settings

    with open(src / "index.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    rows = rows[:60]
    for r in rows:
        r["path"] = str((src / r["path"]).resolve())
    with open(tmp_path / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    settings = Settings.from_env()
    result = evaluate(tmp_path, settings=settings, progress=False)
    assert result["images"] == 60
    ids = list(result["models"])
    assert ids[0] == "blendshapes-v1"
    if LEARNED_MODELS[DEFAULT_LEARNED].present():
        assert len(ids) == 2 and ids[1].startswith("expression-")
    for m in result["models"].values():
        assert 40 <= m["images"] <= 60
        assert 0 <= m["P@1"] <= 1 and 0 <= m["P@3"] <= 1 and 0 <= m["mAP"] <= 1
        assert m["triplet"] is None or 0 <= m["triplet"] <= 1
    assert "P@3" in format_eval(result)
