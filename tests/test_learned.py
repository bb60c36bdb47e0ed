"""The learned expression embedder: alignment geometry, and the real model on real photos."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from memeindex.embedders.learned import CROP, EYE_A, EYE_B, EYE_DIST, EYE_Y, align_face, alignment_matrix, face_inputs



def fake_landmarks(left_eye, right_eye) -> np.ndarray:
    """478 landmarks at the origin except the four eye corners, placed around the given eye centres."""
    pts = np.zeros((478, 3), np.float32)
    for (i, j), (cx, cy) in ((EYE_A, left_eye), (EYE_B, right_eye)):
        pts[i, :2] = (cx - 3, cy)
        pts[j, :2] = (cx + 3, cy)
    return pts


def apply(m, xy):
    return m[:, :2] @ np.asarray(xy, np.float64) + m[:, 2]


@pytest.mark.parametrize("angle", [0.0, 20.0, -35.0])
def test_alignment_puts_eyes_level_at_fixed_scale(angle):
    a = math.radians(angle)
    centre, half = np.array([200.0, 150.0]), 40.0
    d = np.array([math.cos(a), math.sin(a)]) * half
    m = alignment_matrix(fake_landmarks(centre - d, centre + d))
    left, right = apply(m, centre - d), apply(m, centre + d)
    assert left[1] == pytest.approx(EYE_Y * CROP, abs=1e-3)
    assert right[1] == pytest.approx(EYE_Y * CROP, abs=1e-3)
    assert right[0] - left[0] == pytest.approx(EYE_DIST * CROP, abs=1e-3)
    assert (left[0] + right[0]) / 2 == pytest.approx(CROP / 2, abs=1e-3)


def test_alignment_ignores_mesh_handedness_and_zoom_keeps_the_centre():
    l, r = np.array([100.0, 100.0]), np.array([160.0, 100.0])
    assert np.allclose(alignment_matrix(fake_landmarks(l, r)), alignment_matrix(fake_landmarks(r, l)))
    # the 64 px crop at zoom 64/48 holds the 48 px crop at its centre, pixel for pixel
    m48 = alignment_matrix(fake_landmarks(l, r), 48)
    m64 = alignment_matrix(fake_landmarks(l, r), 64, zoom=64 / 48)
    for p in ([100, 100], [130, 180], [90, 60]):
        assert np.allclose(apply(m64, p) - 8, apply(m48, p), atol=1e-3)


def test_align_face_crops_the_right_pixels():
    gray = np.zeros((300, 300), np.uint8)
    gray[95:106, 95:106] = 255  # a bright blob on the left eye only
    crop = align_face(gray, fake_landmarks((100, 100), (160, 100)))
    assert crop.shape == (CROP, CROP) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop > 128)
    x_left = CROP / 2 - EYE_DIST * CROP / 2
    assert abs(xs.mean() - x_left) < 1.5 and abs(ys.mean() - EYE_Y * CROP) < 1.5


# -- the real model on real photos ------------------------------------------------------------------------
from memeindex.embedders.registry import DEFAULT_LEARNED, LEARNED_MODELS  # noqa: E402


def _model_file(model_id: str = DEFAULT_LEARNED):
    return LEARNED_MODELS[model_id].verified_path()


def _photo(name):
    if name == "grace":
        import matplotlib
        from PIL import Image

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        return np.asarray(Image.open(path).convert("RGB"))
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def detector():
    from memeindex.faces import FaceDetector
    from memeindex.settings import Settings

    with FaceDetector(Settings.from_env()) as det:
        yield det


@pytest.fixture(scope="module", params=sorted(LEARNED_MODELS))
def kit(request, detector):
    """(detector, embedder) for every committed learned model."""
    from memeindex.embedders.registry import get_embedder
    from memeindex.settings import Settings

    embedder = get_embedder(Settings.from_env(), request.param)
    yield detector, embedder
    embedder.close()


def _embed(kit, rgb):
    detector, embedder = kit
    faces = detector.detect(np.ascontiguousarray(rgb))
    assert faces, "no face found"
    return embedder.embed(rgb, faces[:1])[0]


def test_model_identity_and_shape(kit):
    _, embedder = kit
    assert embedder.model_id == _model_file(embedder.model_id).stem
    assert embedder.model_id.startswith("expression-")
    assert 64 <= embedder.dim <= 128
    assert _model_file(embedder.model_id).stat().st_size < 2_000_000


def test_embeddings_are_unit_vectors_batched_like_singly(kit):
    detector, embedder = kit
    rgb = np.concatenate([_photo("astronaut"), np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).fromarray(_photo("grace")).resize((512, 512)))], axis=1)
    faces = detector.detect(rgb)
    assert len(faces) == 2
    both = embedder.embed(rgb, faces)
    assert both.shape == (2, embedder.dim) and both.dtype == np.float32
    assert np.allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    one = np.stack([embedder.embed(rgb, [f])[0] for f in faces])
    assert np.allclose(both, one, atol=1e-5)
    assert embedder.embed(rgb, []).shape == (0, embedder.dim)


def test_same_face_flipped_or_rescaled_stays_closer_than_another_expression(kit):
    import cv2

    grace, astro = _photo("grace"), _photo("astronaut")
    g = _embed(kit, grace)
    g_flip = _embed(kit, grace[:, ::-1])
    g_small = _embed(kit, cv2.resize(grace, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA))
    a = _embed(kit, astro)
    a_flip = _embed(kit, astro[:, ::-1])
    # Grace Hopper's composed face vs the astronaut's broad smile
    other = float(g @ a)
    assert float(g @ g_flip) > other + 0.1
    assert float(g @ g_small) > other + 0.1
    assert float(a @ a_flip) > other + 0.1


def test_face_inputs_match_what_the_model_sees(kit):
    detector, embedder = kit
    rgb = _photo("astronaut")
    faces = detector.detect(rgb)
    crops, shapes = face_inputs(rgb, faces[:1])
    assert crops.shape == (1, CROP, CROP) and shapes.shape == (1, 52)
    colors = embedder.color_inputs(rgb, faces[:1])
    assert colors is None or colors.shape == (1, 112, 112, 3)
    assert np.allclose(embedder.embed_inputs(crops, shapes, colors), embedder.embed(rgb, faces[:1]))


def test_auto_embedder_is_the_default_learned_model():
    from memeindex.embedders import get_embedder
    from memeindex.settings import Settings

    settings = Settings.from_env()
    assert get_embedder(settings, "auto").model_id == DEFAULT_LEARNED
    assert get_embedder(settings, "learned").model_id == DEFAULT_LEARNED
    for model_id in LEARNED_MODELS:
        assert get_embedder(settings, model_id).model_id == model_id
    assert get_embedder(settings, "baseline").model_id == "blendshapes-v1"


def test_color_crops_frame_the_detector_box():
    from memeindex.embedders.learned import COLOR_CROPS, FACE_SIDE, box_matrix

    box = (40.0, 30.0, 140.0, 150.0)  # 100 x 120 px
    m = box_matrix(box, FACE_SIDE, 0.0)
    assert np.allclose(apply(m, box[:2]), (0, 0), atol=1e-4)
    assert np.allclose(apply(m, box[2:]), (FACE_SIDE, FACE_SIDE), atol=1e-4)
    m10 = box_matrix(box, FACE_SIDE, 0.10)  # widened by 10 % per side: the box spans 1/1.2 of the crop, centred
    assert np.allclose(apply(m10, box[:2]), (FACE_SIDE * 0.1 / 1.2,) * 2, atol=1e-4)
    gray = np.zeros((200, 200), np.uint8)
    gray[30:150, 40:140] = 200  # the box itself is bright, the frame around it dark
    crop = COLOR_CROPS["box"](gray, box, None)
    assert crop.shape == (FACE_SIDE, FACE_SIDE, 3) and crop.dtype == np.uint8
    assert crop[2:-2, 2:-2].min() > 150
    assert COLOR_CROPS["box10"](gray, box, None)[1, 1].max() < 50
