"""FaceDetector on real photos (matplotlib's grace_hopper.jpg, scikit-image's astronaut) with the real model:
tiny images, close-ups, two faces on one wide canvas, a strip of small panels, and pictures with no face.

Every variant is made at test time; each box is checked against where the face really is: the box found on the
original photo, mapped through the same transform (IoU > 0.5).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memeindex.faces import BLENDSHAPE_NAMES, DETECTOR_VERSION, Face, FaceDetector, iou, merge_boxes, tiles
from memeindex.models import FACE_DETECTOR_FULL_RANGE, FACE_LANDMARKER
from memeindex.settings import Settings

MODELS = Path(__file__).resolve().parents[1] / "models"
SHARED_MEMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "memes"
LABELS = Path(__file__).resolve().parents[1] / "scripts" / "data" / "meme_labels.csv"
pytestmark = pytest.mark.skipif(
    not all((MODELS / m.filename).is_file() for m in (FACE_LANDMARKER, FACE_DETECTOR_FULL_RANGE)),
    reason="face models missing from models/: run `memeindex models fetch`")


def resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.LANCZOS))


def scaled(box, sx, sy=None, dx=0.0, dy=0.0):
    sy = sx if sy is None else sy
    return (box[0] * sx + dx, box[1] * sy + dy, box[2] * sx + dx, box[3] * sy + dy)


@pytest.fixture(scope="module")
def detector():
    with FaceDetector(Settings.from_env(models_dir=MODELS)) as det:
        yield det


@pytest.fixture(scope="module")
def grace():
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image

    with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg") as img:
        return np.asarray(img.convert("RGB"))


@pytest.fixture(scope="module")
def astronaut():
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut()[..., :3])


@pytest.fixture(scope="module")
def grace_box(detector, grace):
    faces = detector.detect(grace)
    assert len(faces) == 1
    return faces[0].box


@pytest.fixture(scope="module")
def astronaut_box(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    return faces[0].box


def one_face_at(faces: list[Face], box, min_iou: float = 0.5) -> Face:
    assert len(faces) == 1, [f.box for f in faces]
    assert iou(faces[0].box, box) > min_iou, (faces[0].box, box)
    return faces[0]


# -- the originals ---------------------------------------------------------------------------------------------
def test_grace_hopper_face_where_it_is(detector, grace, grace_box):
    # Hand-measured: her face spans about x 180-355, y 150-340 of the 512x600 photo.
    assert iou(grace_box, (180, 150, 355, 340)) > 0.5
    face = detector.detect(grace, frame=2)[0]
    assert face.frame == 2 and 0.5 <= face.score <= 1.0
    assert face.landmarks.shape == (478, 3) and face.landmarks.dtype == np.float32
    inside = ((face.landmarks[:, 0] >= grace_box[0] - 20) & (face.landmarks[:, 0] <= grace_box[2] + 20)
              & (face.landmarks[:, 1] >= grace_box[1] - 40) & (face.landmarks[:, 1] <= grace_box[3] + 20))
    assert inside.mean() > 0.95
    assert face.blendshapes.shape == (len(BLENDSHAPE_NAMES),) == (52,)
    assert face.blendshapes.dtype == np.float32
    assert 0.0 <= face.blendshapes.min() and face.blendshapes.max() <= 1.0


def test_astronaut_face_and_smile(detector, astronaut, astronaut_box):
    # Hand-measured: Eileen Collins' face spans about x 180-270, y 80-180 of the 512x512 picture.
    assert iou(astronaut_box, (180, 80, 270, 180)) > 0.5
    face = detector.detect(astronaut)[0]
    smile = face.blendshapes[[BLENDSHAPE_NAMES.index("mouthSmileLeft"), BLENDSHAPE_NAMES.index("mouthSmileRight")]]
    assert smile.min() > 0.5  # she smiles broadly: the mesh and blendshapes read the right crop


@pytest.mark.parametrize("which", ["grace", "astronaut"])
def test_landmarks_match_the_task_api(detector, which, request):
    """Our crops feed the bundle's mesh the way the mediapipe task graph does: same landmarks, within a pixel."""
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    rgb = request.getfixturevalue(which)
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(MODELS / "face_landmarker.task")),
        running_mode=vision.RunningMode.IMAGE, output_face_blendshapes=True)
    with vision.FaceLandmarker.create_from_options(options) as task:
        ref = task.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
    h, w = rgb.shape[:2]
    ref_xy = np.array([(p.x * w, p.y * h) for p in ref.face_landmarks[0]])
    ref_shapes = np.array([c.score for c in ref.face_blendshapes[0]])
    face = detector.detect(rgb)[0]
    assert np.abs(face.landmarks[:, :2] - ref_xy).mean() < 1.0
    assert np.abs(face.blendshapes - ref_shapes).mean() < 0.05


# -- memes' hard cases -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [64, 96])
def test_tiny_image_of_a_face(detector, grace, grace_box, width):
    height = round(width * grace.shape[0] / grace.shape[1])
    small = resize(grace, width, height)
    s = width / grace.shape[1]
    one_face_at(detector.detect(small), scaled(grace_box, s))


@pytest.mark.parametrize("margin", [0.0, 0.1])
def test_close_up_where_the_face_fills_the_frame(detector, grace, grace_box, margin):
    x0, y0, x1, y1 = grace_box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    cx0, cy0, cx1, cy1 = (round(max(0, x0 - mx)), round(max(0, y0 - my)),
                          round(min(grace.shape[1], x1 + mx)), round(min(grace.shape[0], y1 + my)))
    crop = np.ascontiguousarray(grace[cy0:cy1, cx0:cx1])
    big = resize(crop, crop.shape[1] * 3, crop.shape[0] * 3)  # a close-up is big, too
    for image, s in ((crop, 1.0), (big, 3.0)):
        # The face is the whole picture: its box is (about) the frame.
        face = one_face_at(detector.detect(image), scaled((x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0), s), 0.4)
        assert face.blendshapes.shape == (52,)


def test_two_faces_side_by_side_on_a_wide_canvas(detector, grace, astronaut, grace_box, astronaut_box):
    canvas = np.full((600, 1400, 3), 235, np.uint8)
    canvas[:, :512] = grace
    canvas[44:556, 888:1400] = astronaut
    faces = detector.detect(canvas)
    assert len(faces) == 2, [f.box for f in faces]
    expected = [grace_box, scaled(astronaut_box, 1.0, dx=888, dy=44)]
    for box in expected:  # one row per face, each where it is
        assert sum(iou(f.box, box) > 0.5 for f in faces) == 1, ([f.box for f in faces], box)
    assert faces[0].area >= faces[1].area  # largest first


def face_panel(rgb, box, face: int, side: int):
    """A `side`-px square panel of `rgb` scaled so its face is `face` px wide, centred; and the face's box in it."""
    from PIL import Image

    s = face / (box[2] - box[0])
    img = Image.fromarray(np.ascontiguousarray(rgb))
    img = img.resize((round(img.width * s), round(img.height * s)), Image.LANCZOS)
    x0, y0 = round((box[0] + box[2]) / 2 * s - side / 2), round((box[1] + box[3]) / 2 * s - side / 2)
    return np.asarray(img.crop((x0, y0, x0 + side, y0 + side))), scaled(box, s, dx=-x0, dy=-y0)


def test_small_faces_in_a_four_panel_strip(detector, grace, astronaut, grace_box, astronaut_box):
    """A 2x2 strip on a 1200x1200 canvas with captions, faces ~100 px (1/12 of the frame): too small for the
    full-frame pass, found by the tiles."""
    import cv2

    def mirrored(rgb, box):
        w = rgb.shape[1]
        return rgb[:, ::-1], (w - box[2], box[1], w - box[0], box[3])

    canvas = np.full((1200, 1200, 3), 255, np.uint8)
    expected = []
    sources = [(grace, grace_box), (astronaut, astronaut_box), mirrored(astronaut, astronaut_box),
               mirrored(grace, grace_box)]
    for i, (rgb, box) in enumerate(sources):
        panel, face_box = face_panel(rgb, box, 100, 300)
        x, y = 100 + (i % 2) * 600, 150 + (i // 2) * 600
        canvas[y:y + 300, x:x + 300] = panel
        cv2.putText(canvas, "WHEN THE TESTS PASS", (x - 60, y - 50), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 3)
        expected.append(scaled(face_box, 1.0, dx=x, dy=y))
    faces = detector.detect(canvas)
    assert len(faces) == 4, [f.box for f in faces]
    for box in expected:
        assert sum(iou(f.box, box) > 0.5 for f in faces) == 1, ([f.box for f in faces], box)


def test_faces_in_a_tall_two_panel_strip(detector, grace, astronaut, grace_box, astronaut_box):
    """A 500x1400 strip of two photo panels: the letterbox shrinks each face, the panel pass finds both."""
    canvas = np.full((1400, 500, 3), 255, np.uint8)
    expected = []
    for i, (rgb, box) in enumerate(((grace, grace_box), (astronaut, astronaut_box))):
        panel, face_box = face_panel(rgb, box, 110, 420)
        y = 100 + i * 700
        canvas[y:y + 420, 40:460] = panel
        expected.append(scaled(face_box, 1.0, dx=40, dy=y))
    faces = detector.detect(canvas)
    assert len(faces) == 2, [f.box for f in faces]
    for box in expected:
        assert sum(iou(f.box, box) > 0.5 for f in faces) == 1, ([f.box for f in faces], box)


def test_max_faces_keeps_the_largest(grace, astronaut):
    canvas = np.full((600, 1400, 3), 235, np.uint8)
    canvas[:, :512] = grace
    canvas[44:556, 888:1400] = astronaut
    with FaceDetector(Settings.from_env(models_dir=MODELS, max_faces=1)) as det:
        faces = det.detect(canvas)
    assert len(faces) == 1 and faces[0].box[2] < 700  # Grace's face is the larger


# -- tilted and turned faces ---------------------------------------------------------------------------------------
def tilted_small(rgb: np.ndarray, box, degrees: float):
    """`rgb` turned `degrees` (counter-clockwise, canvas grown to fit) in the middle of a grey canvas twice its
    size, shrunk back to the turned size: a tilted head at half the size. Returns (image, where the face's
    centre went, the face's side there)."""
    from PIL import Image

    turned = Image.fromarray(rgb).rotate(degrees, expand=True, resample=Image.BILINEAR, fillcolor=(128, 128, 128))
    tw, th = turned.size
    canvas = Image.new("RGB", (2 * tw, 2 * th), (128, 128, 128))
    canvas.paste(turned, (tw // 2, th // 2))
    a = np.radians(degrees)
    h, w = rgb.shape[:2]
    cx, cy = (box[0] + box[2]) / 2 - w / 2, (box[1] + box[3]) / 2 - h / 2  # about the photo's centre
    # PIL turns counter-clockwise on screen (y down): x' = x cos a + y sin a, y' = -x sin a + y cos a
    centre = ((cx * np.cos(a) + cy * np.sin(a) + tw) / 2, (-cx * np.sin(a) + cy * np.cos(a) + th) / 2)
    side = max(box[2] - box[0], box[3] - box[1]) / 2
    return np.asarray(canvas.resize((tw, th), Image.LANCZOS)), centre, side


@pytest.mark.parametrize("degrees", [50, 60, -60])
def test_small_tilted_face_missed_by_the_first_pass_is_found(detector, astronaut, astronaut_box, degrees):
    img, centre, side = tilted_small(astronaut, astronaut_box, degrees)
    with FaceDetector(Settings.from_env(models_dir=MODELS, second_pass=False)) as first_pass_only:
        assert first_pass_only.detect(img) == []  # what the full frame alone (and the plain landmarker) sees
    faces = detector.detect(img)
    assert len(faces) == 1, [f.box for f in faces]
    box = faces[0].box
    found_side = max(box[2] - box[0], box[3] - box[1])
    assert np.hypot((box[0] + box[2]) / 2 - centre[0], (box[1] + box[3]) / 2 - centre[1]) < 0.5 * side
    assert 0.5 * side < found_side < 2 * side
    assert np.isfinite(faces[0].landmarks).all() and np.isfinite(faces[0].blendshapes).all()


def test_detector_version_is_a_string():
    assert isinstance(DETECTOR_VERSION, str) and DETECTOR_VERSION


def shared_meme(name: str) -> np.ndarray:
    from memeindex.images import decode

    path = SHARED_MEMES / name
    if not path.is_file():
        pytest.skip(f"{path} absent (../shared/data)")
    return decode(path, max_frames=1)[0].rgb


# Hand-labelled (scripts/data/meme_labels.csv, or plainly the same template) as showing a photographed human face
# turned away from the camera; the detector before DETECTOR_VERSION 2 found no face in any of them.
TURNED = ["imgflip/448-Talking-to-wall.jpg", "imgflip/140-talking-to-wall.jpg", "imgflip/375-fast-guy-explaining.jpg",
          "imgflip/10-Sad-Pablo-Escobar.jpg", "memegen/slap.png"]


@pytest.mark.shared
@pytest.mark.parametrize("name", TURNED)
def test_turned_faces_of_real_memes_are_found_and_embedded(detector, name):
    from memeindex.embedders import get_embedder

    rgb = shared_meme(name)
    with FaceDetector(Settings.from_env(models_dir=MODELS, second_pass=False)) as first_pass_only:
        assert first_pass_only.detect(rgb) == []  # the face mesh alone doubts these faces
    faces = detector.detect(rgb)
    assert faces
    embedder = get_embedder(Settings.from_env(models_dir=MODELS))
    try:
        vectors = embedder.embed(rgb, faces)
    finally:
        embedder.close()
    assert vectors.shape[0] == len(faces) and np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)  # a profile still gets a usable vector


@pytest.mark.shared
def test_tilted_head_on_a_pillow_is_found_beside_the_upright_one(detector):
    rgb = shared_meme("imgflip/21-I-Bet-Hes-Thinking-About-Other-Women.jpg")  # she lies tilted, he looks up
    with FaceDetector(Settings.from_env(models_dir=MODELS, second_pass=False)) as first_pass_only:
        assert len(first_pass_only.detect(rgb)) == 1
    faces = detector.detect(rgb)
    assert len(faces) == 2
    w = rgb.shape[1]
    assert sorted((f.box[0] + f.box[2]) / 2 < w / 2 for f in faces) == [False, True]  # one on each side


@pytest.mark.shared
def test_no_face_in_the_faceless_labelled_memes(detector):
    import csv

    if not LABELS.is_file() or not SHARED_MEMES.is_dir():
        pytest.skip("labels or ../shared/data absent")
    # The dev rows (tune, heldout, tune2, tune3): faceless memes (real animals' faces left out) the thresholds were
    # chosen to keep faceless, a regression guard. The test rows' false faces are measured by
    # scripts/measure_detection.py.
    with open(LABELS, newline="") as f:
        names = [r["file"] for r in csv.DictReader(f)
                 if r["label"] == "none" and "animal" not in r["notes"]
                 and r["split"] in ("tune", "heldout", "tune2", "tune3")]
    assert len(names) >= 60
    with_faces = [n for n in names if detector.detect(shared_meme(n))]
    # The one dev false face of detector 4: an Xbox logo that the mesh and the full-range detector both take for a
    # face (_vouch_rescue); kept visible here rather than tuned away.
    assert with_faces == ["imgflip/296-achievement-unlocked.jpg"]


def the_meme_face(detector, name: str, where: tuple[float, float, float, float]):
    """(frame, its one face) of a shared meme, asserting the face's centre lies in `where` (fractions of the frame:
    x0, y0, x1, y1)."""
    rgb = shared_meme(name)
    h, w = rgb.shape[:2]
    faces = detector.detect(rgb)
    assert len(faces) == 1, [f.box for f in faces]
    cx, cy = (faces[0].box[0] + faces[0].box[2]) / 2 / w, (faces[0].box[1] + faces[0].box[3]) / 2 / h
    assert where[0] <= cx <= where[2] and where[1] <= cy <= where[3], (cx, cy)
    return rgb, faces[0]


# Dev rows of meme_labels.csv that detector 2 missed and _rescue (detector 3) finds: a tiny face (~20 px in 500x375) the
# short-range detector does not see and the full-range one scores 0.33, which the mesh confirms upright and turned both
# ways; and a half-turned head whose short-range box (0.61) the mesh doubts upright but is certain of turned by 45 degrees.
@pytest.mark.shared
@pytest.mark.parametrize("name, where", [
    ("imgflip/348-Jack-Sparrow-Being-Chased.jpg", (0.5, 0.3, 0.6, 0.42)),  # his face, in fractions of the frame
    ("imgflip/67-Domino-Effect.jpg", (0.6, 0.3, 0.75, 0.5)),  # the man on the right
])
def test_missed_memes_found_by_the_rescue(detector, name, where):
    rgb, face = the_meme_face(detector, name, where)
    assert np.isfinite(face.blendshapes).all() and face.landmarks.shape == (478, 3)
    with FaceDetector(Settings.from_env(models_dir=MODELS, second_pass=False)) as first_pass_only:
        assert first_pass_only.detect(rgb) == []


# Dev rows labelled `none` (real animals) whose full-frame box the mesh confirms (presence >= 0.5) at a score below
# VOUCH_SCORE: detector 4 asks the full-range detector about the box's own crop, which does not see a face there.
@pytest.mark.shared
@pytest.mark.parametrize("name", ["memegen/doge.jpg", "memegen/grumpycat.jpg", "imgflip/389-Laughing-wolf.jpg"])
def test_real_animal_faces_the_full_range_detector_does_not_vouch_for_are_rejected(detector, name, monkeypatch):
    from memeindex.faces import detector as detector_module

    rgb = shared_meme(name)
    assert detector.detect(rgb) == []
    monkeypatch.setattr(detector_module, "VOUCH_SCORE", 0.0)  # no vouch asked: the mesh's word alone
    with FaceDetector(Settings.from_env(models_dir=MODELS, second_pass=False)) as unvouched:
        assert len(unvouched.detect(rgb)) == 1


# Dev rows each vouching step alone finds, judged with that step's vouch made impossible. _vouch_rescue: a weak box
# (short-range 0.31-0.65) the mesh confirms and the full-range detector vouches for on its own crop (a small
# soldier's face beside the clown, Fry (a cartoon), a Lego Batman). _vouch_doubted (detector 5): a strong short-range
# box (0.64-0.78) the mesh doubts (presence < 0.5: it was made for photographed faces), which the full-range detector
# vouches for (cartoons: Batman slapping Robin, Y U No, the balloon-chasing figure).
@pytest.mark.shared
@pytest.mark.parametrize("name, where, step_vouch", [  # where: the face's centre, in fractions of the frame
    ("imgflip/378-Army-clown.jpg", (0.45, 0.1, 0.6, 0.25), "VOUCH_WEAK"),
    ("imgflip/219-Shut-Up-And-Take-My-Money-Fry.jpg", (0.35, 0.35, 0.55, 0.6), "VOUCH_WEAK"),
    ("memegen/firsttry.png", (0.3, 0.35, 0.45, 0.55), "VOUCH_WEAK"),
    ("imgflip/14-Batman-Slapping-Robin.jpg", (0.6, 0.45, 0.85, 0.7), "DOUBTED_VOUCH"),
    ("memegen/yuno.jpg", (0.35, 0.3, 0.6, 0.6), "DOUBTED_VOUCH"),
    ("memegen/balloon.jpg", (0.1, 0.15, 0.35, 0.35), "DOUBTED_VOUCH"),
])
def test_faces_only_a_vouch_of_the_full_range_detector_finds(detector, name, where, step_vouch, monkeypatch):
    from memeindex.faces import detector as detector_module

    rgb, face = the_meme_face(detector, name, where)
    assert np.isfinite(face.blendshapes).all()
    monkeypatch.setattr(detector_module, step_vouch, 1.1)  # no vouch can pass: the rounds before find nothing
    with FaceDetector(Settings.from_env(models_dir=MODELS)) as without:
        assert without.detect(rgb) == []


# -- no face ---------------------------------------------------------------------------------------------------
def caption_meme() -> np.ndarray:
    import cv2

    img = np.full((500, 700, 3), 255, np.uint8)
    for i, line in enumerate(("NOBODY:", "ABSOLUTELY NOBODY:", "ME AT 3 AM:", "REWRITING THE DETECTOR", ":-) (o_o)")):
        cv2.putText(img, line, (30, 80 + 90 * i), cv2.FONT_HERSHEY_DUPLEX, 1.6, (0, 0, 0), 3)
    return img


def scenery() -> np.ndarray:
    rng = np.random.default_rng(0)
    y = np.linspace(0, 1, 480)[:, None, None]
    sky = (1 - y) * np.array([110, 160, 230]) + y * np.array([60, 130, 60])  # blue sky to green field
    img = sky + rng.normal(0, 12, (480, 800, 3))
    img[300:] = img[300:] * 0.8 + rng.normal(0, 25, (180, 800, 3))  # grass texture
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("make", [
    lambda: np.full((600, 600, 3), 200, np.uint8),
    lambda: np.zeros((40, 1000, 3), np.uint8),
    lambda: np.full((3, 3, 3), 90, np.uint8),
    caption_meme,
    scenery,
], ids=["blank", "thin-black-bar", "3px", "caption-text", "scenery"])
def test_no_face(detector, make):
    assert detector.detect(make()) == []


def test_text_photo_has_no_face(detector):
    data = pytest.importorskip("skimage.data")
    gray = data.text()
    assert detector.detect(np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))) == []


def test_grayscale_rgba_and_noncontiguous_input(detector, grace, grace_box):
    gray = grace.mean(axis=2).astype(np.uint8)
    one_face_at(detector.detect(gray), grace_box)  # H x W
    one_face_at(detector.detect(np.repeat(gray[..., None], 3, axis=2)), grace_box)
    rgba = np.concatenate([grace, np.full(grace.shape[:2] + (1,), 255, np.uint8)], axis=2)
    one_face_at(detector.detect(rgba), grace_box)
    mirrored = grace[:, ::-1]  # a view with negative strides
    w = grace.shape[1]
    one_face_at(detector.detect(mirrored), (w - grace_box[2], grace_box[1], w - grace_box[0], grace_box[3]))


@pytest.mark.parametrize("key, side, scale, offset", [("detector", 128, 2 / 255.0, -1.0), ("mesh", 256, 1 / 255.0, 0.0)])
def test_image_written_into_the_input_tensor_gives_the_float_path_outputs(detector, grace, key, side, scale, offset):
    # run_image (the detector's fast path) must be bit-identical to feeding the float32 tensor the slow way.
    import cv2

    crop = np.ascontiguousarray(cv2.resize(grace, (side, side), interpolation=cv2.INTER_AREA))
    models = detector._models
    fast = {shape: out.copy() for shape, out in models.run_image(key, crop, scale, offset).items()}
    slow = models.run(key, (crop.astype(np.float32) * scale + offset)[None].astype(np.float32))
    assert fast.keys() == slow.keys()
    for shape in fast:
        assert np.array_equal(fast[shape], slow[shape]), key
    assert any(np.abs(out).max() > 0 for out in fast.values())


def test_closed_detector_refuses(grace):
    det = FaceDetector(Settings.from_env(models_dir=MODELS))
    det.close()
    with pytest.raises(RuntimeError):
        det.detect(grace)


# -- geometry helpers (no model) -------------------------------------------------------------------------------
def test_iou_and_merge_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 15, 10)) - 1 / 3) < 1e-9
    merged = merge_boxes([((0, 0, 10, 10), 0.6), ((1, 1, 11, 11), 0.9), ((50, 50, 60, 60), 0.7)])
    assert merged == [((1, 1, 11, 11), 0.9), ((50, 50, 60, 60), 0.7)]


@pytest.mark.parametrize("w,h", [(600, 600), (1400, 600), (500, 1500), (1600, 1200), (300, 60), (30, 30)])
def test_tiles_cover_the_frame(w, h):
    boxes = tiles(w, h)
    assert len(boxes) <= 24
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and x1 - x0 == y1 - y0
    if boxes:
        covered = np.zeros((h, w), bool)
        for x0, y0, x1, y1 in boxes:
            covered[y0:y1, x0:x1] = True
        assert covered.all()


def test_weighted_nms_merges_and_survives_degenerate_boxes():
    from memeindex.faces.regions import weighted_nms as _weighted_nms

    kps = np.zeros((3, 6, 2))
    out = _weighted_nms(np.array([0.9, 0.6, 0.8]), np.array([[0, 0, 10, 10], [1, 1, 11, 11], [5, 5, 5, 5]]), kps)
    assert len(out) == 2  # the two overlapping boxes are one, the zero-area one stays alone (and ends the loop)
    box, score, _ = out[0]
    assert score == 0.9 and 0 < box[0] < 1  # score-weighted mean of the cluster
