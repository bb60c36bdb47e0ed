"""What a query answers, end to end on real photos and real models: one result per template with the other files
as variants, a calibrated score (an exact re-query near 1, another expression far lower), the traits both faces
share, in one format for `--json` and the API."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from conftest import SHARED_DATA
from memeindex import calibrate, traits
from memeindex.cli import main
from memeindex.embedders.registry import DEFAULT_LEARNED
from memeindex.settings import Settings

MATCH_KEYS = {"id", "path", "name", "score", "distance", "box", "frame", "traits", "variants", "variants_total",
              "weak"}


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def a_copy_of(rgb: np.ndarray) -> Image.Image:
    """What another meme site makes of a picture: cropped, shrunk, captioned and saved at low JPEG quality."""
    h, w = rgb.shape[:2]
    img = Image.fromarray(rgb[h // 12: h - h // 20, w // 16: w - w // 10]).resize((w * 2 // 3, h * 2 // 3))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, img.width, img.height // 8), fill="white")
    draw.text((12, 10), "ME WHEN THE BUILD IS GREEN", fill="black")
    return img


def test_a_duplicate_pair_is_one_result_and_scores_mean_something(tmp_path, grace_rgb, astronaut_rgb, grace_path):
    root = tmp_path / "memes"
    (root / "other-site").mkdir(parents=True)
    Image.fromarray(grace_rgb).save(root / "grace.jpg", quality=95)
    a_copy_of(grace_rgb).save(root / "other-site" / "grace-hopper-meme.jpg", quality=45)
    Image.fromarray(astronaut_rgb).save(root / "astronaut.png")
    run("build", root, "--index", tmp_path / "index")

    result = json.loads(run("query", grace_path, "--index", tmp_path / "index", "-k", "3", "--json"))
    matches = result["matches"]
    assert [m["path"] for m in matches] in (["grace.jpg", "astronaut.png"],
                                            ["other-site/grace-hopper-meme.jpg", "astronaut.png"])
    top, other = matches
    pair = {"grace.jpg", "other-site/grace-hopper-meme.jpg"}
    assert [v["path"] for v in top["variants"]] == sorted(pair - {top["path"]}) and other["variants"] == []
    assert (top["variants_total"], other["variants_total"]) == (1, 0)
    assert all(set(m) >= MATCH_KEYS for m in matches) and result["calibrated"] is True
    # The same photo again scores near 1; a smiling astronaut, another expression, far lower and weak.
    assert top["score"] >= 0.9 and not top["weak"]
    assert other["score"] <= 0.3 and other["weak"] and other["score"] < top["score"] - 0.6
    assert math.isclose(top["score"], calibrate.curve_for(result["model_id"]).score(top["distance"]), abs_tol=1e-3)
    assert any(t["name"] == "eyes squinted" for t in top["traits"])  # grace's squint, on both faces

    table = run("query", grace_path, "--index", tmp_path / "index", "-k", "3").splitlines()
    assert table[2].split()[1] == f"{round(top['score'] * 100)}%" and top["path"] in table[2]
    assert "eyes squinted" in table[2] and "+1 variant" in table[2]
    assert table[3].strip() == f"also: {top['variants'][0]['path']}"

    # Incremental builds keep the groups right: a third copy joins the template, a removed file leaves it.
    Image.fromarray(grace_rgb).resize((256, 300)).save(root / "other-site" / "grace-small.png")
    (root / "grace.jpg").unlink()
    run("build", root, "--index", tmp_path / "index")
    again = json.loads(run("query", grace_path, "--index", tmp_path / "index", "-k", "3", "--json"))["matches"]
    assert len(again) == 2 and again[1]["path"] == "astronaut.png"
    assert {again[0]["path"], *(v["path"] for v in again[0]["variants"])} == {
        "other-site/grace-hopper-meme.jpg", "other-site/grace-small.png"}


def test_unknown_model_gets_the_documented_fallback(caplog):
    curve = calibrate.curve_for("expression-v999-not-fitted")
    assert curve is calibrate.FALLBACK and not curve.fitted
    assert curve.score(0.0) == 1.0 and curve.score(math.sqrt(2)) == 0.0 and curve.score(1.9) == 0.0
    assert math.isclose(curve.score(math.sqrt(2) / 2), 0.5)


@pytest.mark.parametrize("model_id", sorted({"expression-v1", "expression-v2", DEFAULT_LEARNED}))
def test_committed_calibration_of_each_learned_model_is_monotone(model_id):
    curve = calibrate.curve_for(model_id)
    assert curve.fitted
    # Each model spreads distances over its own range (v1's fit ends at ~1.0, v2's at ~1.8): check the curve
    # from 0 to the far end of its own fit, where unrelated pairs lie.
    scores = curve.score(np.linspace(0, curve.distances[-1], 200))
    assert np.all(np.diff(scores) <= 1e-12) and scores[0] >= 0.9 and scores[-1] <= 0.05


def test_isotonic_fit_recovers_a_known_rate():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 1.2, 200_000)
    truth = 1 / (1 + np.exp(-(3 - 7 * d)))
    curve = calibrate.fit_isotonic(d, rng.random(len(d)) < truth)
    grid = np.linspace(0.05, 1.15, 50)
    assert np.abs(curve.score(grid) - 1 / (1 + np.exp(-(3 - 7 * grid)))).max() < 0.06
    assert np.all(np.diff(curve.scores) <= 0)
    report = calibrate.check(curve, d, truth > 0.5)
    assert report["brier"] < report["brier_base"]


def test_traits_name_what_both_faces_show(grace_rgb, astronaut_rgb):
    from memeindex.pipeline import FaceAnalyzer

    with FaceAnalyzer(Settings.from_env()) as analyzer:
        grace = analyzer.analyze(grace_rgb)[0].blendshapes
        astronaut = analyzer.analyze(astronaut_rgb)[0].blendshapes
    same = traits.shared(grace, grace)
    assert same and same[0].name == "eyes squinted" and same[0].strength > 0.6
    assert len(same) <= traits.MAX_TRAITS and all(traits.MIN_SHARED <= t.strength <= 1 for t in same)
    alone = traits.strengths(astronaut)[0][list(traits.TRAITS).index("smiling")]
    assert alone > 0.8  # the astronaut smiles broadly ...
    assert "smiling" not in {t.name for t in traits.shared(grace, astronaut)}  # ... and grace does not


MEMES = SHARED_DATA / "memes"


@pytest.mark.shared
@pytest.mark.skipif(not MEMES.is_dir(), reason="needs ../shared/data/memes")
def test_known_duplicate_templates_and_a_wide_open_mouth(tmp_path):
    """The issue's own examples: woman-yelling-at-cat from two sites, Andy from two sites; the yelling woman's
    wide-open mouth is a trait she shares with Michael Scott's."""
    root = tmp_path / "memes"
    files = ["imgflip/17-Woman-Yelling-At-Cat.jpg", "imgflip/446-woman-yelling-at-cat.jpg", "memegen/woman-cat.jpg",
             "imgflip/172-Afraid-To-Ask-Andy.jpg", "memegen/afraid.jpg", "memegen/michael-scott.jpg"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(MEMES / name, root / name)
    run("build", root, "--index", tmp_path / "index")
    result = json.loads(run("query", MEMES / "memegen/woman-cat.jpg", "--index", tmp_path / "index", "-k", "3",
                            "--json"))
    groups = [{m["path"], *(v["path"] for v in m["variants"])} for m in result["matches"]]
    assert groups[0] == set(files[:3]), groups  # three files, one template, one result
    assert {files[3], files[4]} in groups
    for m in result["matches"][:2]:
        if m["path"] in (files[5], *files[:3]):
            jaw = [t for t in m["traits"] if t["name"] == "jaw open"]
            assert jaw and jaw[0]["strength"] >= 0.8, m["traits"]
    assert any(m["path"] == files[5] for m in result["matches"])


def test_a_template_of_many_copies_lists_a_few_and_counts_them_all(tmp_path):
    """A meme copied far more often than the result lists (a fake generation, no model): every answer names
    VARIANTS_LISTED of its copies and carries how many there are, in the one format of --json and the API."""
    import hashlib
    from types import SimpleNamespace

    from fakes import FAKE_MODEL_ID, write_fake_generation
    from memeindex.cli import VARIANTS_SHOWN, format_query
    from memeindex.generation import FaceRow, ImageRow
    from memeindex.search import VARIANTS_LISTED, QueryResult, Searcher

    dim, copies = 8, VARIANTS_LISTED + 5
    unit = np.eye(dim, dtype=np.float32)
    images, faces = [], []
    for i in range(copies + 1):  # copies of one template, then one meme of its own
        path, sha = f"copy-{i:03d}.jpg" if i < copies else "alone.jpg", hashlib.sha256(b"%d" % i).hexdigest()
        template = "t-many" if i < copies else ""
        images.append(ImageRow(path, sha, 1, i, "faces", 1, "", "", template))
        faces.append(FaceRow(path, sha, 1, i, 0, 0, (0, 0, 9, 9), 0.9, np.zeros(52, np.float32),
                             unit[0] if i < copies else unit[1], FAKE_MODEL_ID, template))
    write_fake_generation(tmp_path / "index", images, faces, dim, root=str(tmp_path))
    analyzer = SimpleNamespace(embedder=SimpleNamespace(model_id=FAKE_MODEL_ID, dim=dim, model_sha256=""), close=lambda: None)
    searcher = Searcher(tmp_path / "index", Settings.from_env(), analyzer=analyzer)
    try:
        many, alone = searcher.search_vector(unit[0], k=2)
    finally:
        searcher.close()
    out = many.to_dict()
    assert set(out) >= MATCH_KEYS and len(out["variants"]) == VARIANTS_LISTED
    assert out["variants_total"] == copies - 1  # every copy but the matched file itself
    assert [v["path"] for v in out["variants"]] == sorted(p.path for p in images[:copies] if p.path != out["path"]
                                                         )[:VARIANTS_LISTED]
    assert (alone.to_dict()["variants"], alone.to_dict()["variants_total"]) == ([], 0)
    query_face = SimpleNamespace(box=(0, 0, 9, 9), frame=0, score=0.9)
    table = format_query(QueryResult([query_face], 0, [many, alone], FAKE_MODEL_ID, calibrated=False)).splitlines()
    assert f"+{copies - 1} variants" in table[2] and table[3].endswith(f"and {copies - 1 - VARIANTS_SHOWN} more")
