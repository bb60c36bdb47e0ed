"""The training package's data side (no TensorFlow needed) and the runtime's independence from TensorFlow."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.mark.shared
def test_fer_validation_split_is_seeded_disjoint_and_from_training_only():
    from memeindex.train.data import fer_training_split

    expressions = SHARED / "data" / "expressions"
    if not (expressions / "fer2013" / "index.csv").exists():
        pytest.skip("../shared/data is absent")
    a = fer_training_split(expressions, seed=0, n_val=300, n_fit=700)
    b = fer_training_split(expressions, seed=0, n_val=300, n_fit=100)
    c = fer_training_split(expressions, seed=1, n_val=300, n_fit=700)
    assert [r["path"] for r in a.val] == [r["path"] for r in b.val]  # the split does not depend on n_fit
    assert [r["path"] for r in a.val] != [r["path"] for r in c.val]
    assert not {r["path"] for r in a.val} & {r["path"] for r in a.fit}
    assert all(r["usage"] == "Training" for r in a.val + a.fit)


@pytest.mark.shared
def test_faceapi_weights_read_as_published():
    from memeindex.train.model import read_faceapi_weights

    folder = SHARED / "models" / "face-api-expression"
    if not folder.exists():
        pytest.skip("../shared/models is absent")
    weights = read_faceapi_weights(folder)
    assert sum(w.size for w in weights.values()) == 323_687  # the count in ../shared/models/README.md
    assert weights["fc/weights"].shape == (256, 7) and weights["dense0/conv0/filters"].shape == (3, 3, 3, 32)
    assert all(np.isfinite(w).all() for w in weights.values())


def test_cache_key_names_files_wherever_shared_lives():
    from memeindex.train.data import cache_name

    assert cache_name(Path("/a/shared/data/expressions/fer2013/Training/x.png")) == \
        cache_name(Path("/elsewhere/fer2013/Training/x.png")) == "fer2013/Training/x.png"


def test_runtime_embedding_never_imports_tensorflow():
    code = ("import sys, numpy as np; from memeindex.embedders import get_embedder; from memeindex.settings import Settings; "
            "e = get_embedder(Settings.from_env(), 'auto'); e.embed(np.zeros((64, 64, 3), np.uint8), []); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_geometry_is_the_rank_correlation_of_pairwise_similarities():
    from memeindex.train.loop import Geometry, _l2

    rng = np.random.default_rng(0)
    x = _l2(rng.normal(size=(60, 16)))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    reference = Geometry(x, n=60, seed=0)
    assert reference.kept(x @ rotation) > 0.9999  # a rotation keeps every pairwise similarity
    assert abs(reference.kept(_l2(rng.normal(size=(60, 16))))) < 0.1  # unrelated faces: none kept
    assert 0.3 < reference.kept(_l2(x + 0.15 * rng.normal(size=x.shape))) < 0.9999


def test_readout_choice_keeps_the_floors_geometry_and_the_smallest_size_within_the_margin():
    from memeindex.train.loop import choose_readout

    def t(crop, w, dim, geometry, score):
        return {"crop": crop, "probs_weight": w, "dim": dim, "geometry": geometry, "score": score}

    trials = [t("box10", 0.0, 64, 0.80, 1.580), t("box10", 0.0, 128, 0.81, 1.584),
              t("box10", 0.5, 64, 0.79, 1.600),  # better FER score, less geometry than the floor: not eligible
              t("aligned", 0.0, 64, 0.70, 1.650)]
    chosen, floor = choose_readout(trials, "box10", 0.005)
    assert floor is trials[0] and chosen is trials[0]  # 128 is within the margin of 64
    chosen, _ = choose_readout(trials, "box10", 0.001)
    assert chosen is trials[1]  # a larger size that wins by more than the margin


def test_readout_choice_floor_is_the_centred_pca_and_a_centring_competes_like_any_candidate():
    from memeindex.train.loop import choose_readout

    def t(dim, centre, geometry, score):
        return {"crop": "box10", "probs_weight": 0.0, "dim": dim, "centre": centre, "geometry": geometry,
                "score": score}

    trials = [t(64, 0.0, 0.79, 1.700),  # less geometry than the centred floor: not eligible however well it scores
              t(64, 1.0, 0.80, 1.580), t(64, 0.5, 0.83, 1.590), t(128, 0.5, 0.84, 1.593), t(128, 1.0, 0.81, 1.640)]
    chosen, floor = choose_readout(trials, "box10", 0.005)
    assert floor is trials[1]
    assert chosen is trials[4]
    chosen, _ = choose_readout(trials[:4], "box10", 0.005)
    assert chosen is trials[2]  # the 128-d read-out of the same centring is within the margin


def test_training_summary_is_written_through_atomicfile(tmp_path):
    """The bytes are the ones it always wrote; a temp a killed writer left beside it is cleared (atomicfile's)."""
    import hashlib
    import json

    from memeindex.train.export import write_summary

    model = tmp_path / "expression-vX.tflite"
    model.write_bytes(b"flatbuffer")
    from test_atomicfile import dead_pid

    leftover = tmp_path / f".expression-vX.train.json.tmp{dead_pid()}"
    leftover.write_text("half")
    out = write_summary(model, {"epochs": 3})
    want = {"model": model.name, "bytes": 10, "sha256": hashlib.sha256(b"flatbuffer").hexdigest(), "epochs": 3}
    assert out.read_text() == json.dumps(want, indent=1) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expression-vX.tflite", "expression-vX.train.json"]


def test_readout_choice_among_a_trained_branch_keeps_v1s_floor():
    """--branch: the floor stays the issue's recipe (v1, face-api at weight 1, centred 64); only the trained
    branch's trials compete, face-api's weight against it among the choices; a v1 trial never wins there."""
    from memeindex.train.loop import choose_readout

    def t(dim, centre, geometry, score, branch=None, fw=None):
        extra = {} if branch is None else {"branch": branch, "feature_weight": fw}
        return {"crop": "box10", "probs_weight": 0.0, "dim": dim, "centre": centre, "geometry": geometry,
                "score": score, **extra}

    trials = [t(64, 1.0, 0.80, 1.580), t(64, 0.5, 0.86, 1.700),  # v1's: the floor and a v1 trial scoring best
              t(64, 1.0, 0.82, 1.590, "fer-fit", 1.0),  # a branch trial centred like the floor, not the floor
              t(64, 0.5, 0.75, 1.650, "fer-fit", 0.5),  # less geometry than the floor: not eligible
              t(64, 0.5, 0.85, 1.610, "fer-fit", 1.0), t(128, 0.5, 0.86, 1.614, "fer-fit", 1.0),
              t(64, 0.5, 0.81, 1.612, "fer-fit", 0.75)]
    chosen, floor = choose_readout(trials, "box10", 0.005, among="fer-fit")
    assert floor is trials[0]
    assert chosen is trials[4]  # best eligible is the 128-d weight-1 trial; its 64-d is within the margin
    assert choose_readout(trials, "box10", 0.005)[0] is trials[1]  # the default still chooses among v1's


def test_branch_training_crop_has_the_runtime_crop_at_its_centre(tmp_path, astronaut_rgb):
    """The branch trains on 64 px crops re-cut from cached landmarks (v1's jitter room): their 48 px centre is the
    crop the runtime feeds the model (face_inputs), so training and inference see the same face."""
    from PIL import Image

    from memeindex.embedders.learned import face_inputs
    from memeindex.faces import FaceDetector
    from memeindex.settings import Settings
    from memeindex.train.augment import center_crop
    from memeindex.train.branch import gray_crops64

    models = Path(__file__).resolve().parents[1] / "models"
    settings = Settings.from_env(models_dir=models)
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut_rgb).save(path)
    with FaceDetector(settings) as det:
        faces = det.detect(astronaut_rgb)[:1]
    assert faces
    runtime, _ = face_inputs(astronaut_rgb, faces)
    cached = {"image": np.array([0]), "landmarks": np.array([faces[0].landmarks], np.float32), "paths": [path]}
    crops = gray_crops64(cached, settings)
    assert crops.shape == (1, 64, 64)
    diff = np.abs(center_crop(crops).astype(int) - runtime.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 12  # the same face; resampling differs by a little
