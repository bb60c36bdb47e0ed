"""Near-duplicate grouping on real photos: the same picture resized, recompressed, cropped or captioned is one
template; another face in the same layout is not."""
from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw

from memeindex.templates import NEAR_PICTURE_BITS, assign, hash_distance, perceptual_hash


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _resize(rgb: np.ndarray, f: float) -> np.ndarray:
    img = Image.fromarray(rgb)
    return np.asarray(img.resize((round(img.width * f), round(img.height * f)), Image.LANCZOS))


def _captioned(rgb: np.ndarray, text: str) -> np.ndarray:
    """A white caption band over the top, as meme generators draw it."""
    img = Image.fromarray(rgb.copy())
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, img.width, img.height // 7), fill="white")
    draw.text((10, 8), text, fill="black")
    return np.asarray(img)


def _in_layout(face_rgb: np.ndarray) -> np.ndarray:
    """A photo pasted small into one fixed meme layout: a big white caption panel above, grey below."""
    canvas = Image.new("RGB", (600, 900), (235, 235, 235))
    ImageDraw.Draw(canvas).rectangle((0, 0, 600, 560), fill="white")
    photo = Image.fromarray(face_rgb)
    photo.thumbnail((320, 320))
    canvas.paste(photo, (140, 570))
    return np.asarray(canvas)


def test_hash_is_stable_under_resize_and_recompression_and_tells_pictures_apart(grace_rgb, astronaut_rgb):
    h = perceptual_hash(grace_rgb)
    assert len(h) == 16 and int(h, 16) >= 0
    assert hash_distance(h, perceptual_hash(_jpeg(_resize(grace_rgb, 0.4), 35))) <= 6
    assert hash_distance(h, perceptual_hash(grace_rgb[..., 0])) <= 6  # the grey version of the picture
    assert hash_distance(h, perceptual_hash(astronaut_rgb)) >= 16


# Both learned models: their embedding distances differ ~3.5x in scale, and grouping must hold under each.
@pytest.fixture(scope="module", params=["expression-v1", "expression-v2"])
def analyzer(request):
    from memeindex.pipeline import FaceAnalyzer
    from memeindex.settings import Settings

    with FaceAnalyzer(Settings.from_env(), request.param) as a:
        yield a


def _tables(analyzer, pictures: dict[str, np.ndarray]) -> tuple[pa.Table, pa.Table]:
    """The images and faces tables a build would publish for these pictures (only the columns assign reads)."""
    images, faces = [], []
    for path, rgb in pictures.items():
        sha = hashlib.sha256(rgb.tobytes() + path.encode()).hexdigest()
        found = analyzer.analyze(rgb)
        images.append({"path": path, "sha256": sha, "phash": perceptual_hash(rgb),
                       "status": "faces" if found else "noface"})
        faces += [{"path": path, "sha256": sha, "blendshapes": f.blendshapes.tolist(),
                   "embedding": f.embedding.tolist()} for f in found]
    return pa.Table.from_pylist(images), pa.Table.from_pylist(faces)


def test_assign_groups_variants_of_one_picture_and_nothing_else(analyzer, grace_rgb, astronaut_rgb):
    g = grace_rgb
    pictures = {
        "grace.jpg": g,
        "copies/grace-small-low-quality.jpg": _jpeg(_resize(g, 0.5), 40),
        "copies/grace-captioned.jpg": _captioned(g, "WHEN THE CODE COMPILES"),
        "copies/grace-cropped.jpg": g[60:520, 40:480],
        "astronaut.png": astronaut_rgb,
        "wall.png": np.full((300, 400, 3), 180, np.uint8),
        "sky.png": np.tile(np.linspace(40, 220, 400, dtype=np.uint8)[None, :, None], (300, 1, 3)),
    }
    images, faces = _tables(analyzer, pictures)
    groups = assign(images, faces, analyzer.embedder.model_id)
    assert set(groups) == set(pictures)
    grace = {groups[p] for p in pictures if "grace" in p}
    assert len(grace) == 1, groups
    others = [groups["astronaut.png"], groups["wall.png"], groups["sky.png"]]
    assert len(set(others) | grace) == 4, groups
    shas = dict(zip(images.column("path").to_pylist(), images.column("sha256").to_pylist()))
    assert grace.pop() == min(shas[p] for p in pictures if "grace" in p)[:16]  # the smallest member id


def test_a_shared_layout_with_different_faces_stays_apart(analyzer, grace_rgb, astronaut_rgb):
    pictures = {"layout-grace.png": _in_layout(grace_rgb),
                "layout-astronaut.png": _in_layout(astronaut_rgb[:300, 120:380])}
    images, faces = _tables(analyzer, pictures)
    assert faces.num_rows == 2  # both faces are found, so the faces decide
    bits = hash_distance(*images.column("phash").to_pylist())
    assert bits <= NEAR_PICTURE_BITS  # the layout alone makes the two pictures look closer than chance
    groups = assign(images, faces, analyzer.embedder.model_id)
    assert groups["layout-grace.png"] != groups["layout-astronaut.png"]


def test_a_collage_of_two_memes_does_not_merge_them(analyzer, grace_rgb, astronaut_rgb):
    h = astronaut_rgb.shape[0]  # the demo folder's two-people.jpg: both pictures side by side, as tall
    grace = np.asarray(Image.fromarray(grace_rgb).resize((round(grace_rgb.shape[1] * h / grace_rgb.shape[0]), h)))
    collage = np.concatenate([grace, astronaut_rgb], axis=1)
    pictures = {"grace.jpg": grace_rgb, "astronaut.png": astronaut_rgb, "two-people.jpg": collage}
    images, faces = _tables(analyzer, pictures)
    assert faces.num_rows == 4  # the collage holds both faces, each within a re-encode of its picture's
    groups = assign(images, faces, analyzer.embedder.model_id)
    assert len({groups["grace.jpg"], groups["astronaut.png"]}) == 2, groups  # they merged through the collage


def test_two_copies_of_a_one_face_meme_do_not_pass_for_a_collage(analyzer, grace_rgb, astronaut_rgb):
    h = astronaut_rgb.shape[0]
    grace = np.asarray(Image.fromarray(grace_rgb).resize((round(grace_rgb.shape[1] * h / grace_rgb.shape[0]), h)))
    pictures = {"grace.jpg": grace_rgb, "two-people.jpg": np.concatenate([grace, astronaut_rgb], axis=1)}
    images, faces = _tables(analyzer, pictures)
    copy = images.filter(pa.compute.equal(images.column("path"), "grace.jpg")).to_pylist()[0]
    copy_faces = faces.filter(pa.compute.equal(faces.column("path"), "grace.jpg")).to_pylist()
    images = pa.concat_tables([images, pa.Table.from_pylist([{**copy, "path": "copy/grace.jpg"}], images.schema)])
    faces = pa.concat_tables([faces, pa.Table.from_pylist([{**f, "path": "copy/grace.jpg"} for f in copy_faces],
                                                          faces.schema)])  # a build writes each copy's rows
    groups = assign(images, faces, analyzer.embedder.model_id)
    assert groups["grace.jpg"] == groups["copy/grace.jpg"] != groups["two-people.jpg"], groups


def test_copies_share_a_template_and_an_unknown_hash_stays_alone(analyzer, grace_rgb):
    images, faces = _tables(analyzer, {"a/grace.jpg": grace_rgb})
    row = images.to_pylist()[0]
    images = pa.Table.from_pylist([row, {**row, "path": "b/same-bytes.jpg"},
                                   {"path": "broken.jpg", "sha256": "f" * 64, "phash": "", "status": "failed"}])
    groups = assign(images, faces, analyzer.embedder.model_id)
    assert groups["a/grace.jpg"] == groups["b/same-bytes.jpg"] == row["sha256"][:16]
    assert groups["broken.jpg"] == "f" * 16


def test_embedding_limits_scale_with_the_model_and_an_unmeasured_model_keeps_the_reference(caplog):
    from memeindex import templates

    assert templates.embedding_scale(templates.REFERENCE_MODEL) == 1.0
    assert templates.face_match(None) == templates.FACE_MATCH
    measured = templates._measured()
    v2 = measured["expression-v2"]["distance"] / measured[templates.REFERENCE_MODEL]["distance"]
    assert v2 > 2  # v2 spreads the same face over a wider range than v1
    assert [e for _, _, e in templates.face_match("expression-v2")] == pytest.approx(
        [e * v2 for _, _, e in templates.FACE_MATCH])
    with caplog.at_level("WARNING", logger="memeindex.templates"):
        assert templates.face_match("no-such-model") == templates.FACE_MATCH
    assert "not measured for model no-such-model" in caplog.text


@pytest.mark.parametrize("search", ["exact", "approximate"])
def test_planted_near_duplicates_are_found_by_both_pair_searches(search):
    """scripts/bench_templates.py plants near-duplicate templates (hash bits flipped, faces moved within
    FACE_MATCH's first rule) among thousands of files: the exact search (small collections) and the inverted
    file (large ones, forced here) both recover every planted template and join no two others."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_templates.py"
    proc = subprocess.run([sys.executable, str(script), "--files", "6000", "--search", search, "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["search"] == search and out["files"] == 6000 and out["faces"] > 6000
    assert out["recall"] == 1.0 and out["false_joins"] == 0, out


def _faceless(pictures: dict[str, np.ndarray], dhash: bool = True) -> tuple[pa.Table, pa.Table]:
    """Images and (empty) faces tables of faceless pictures: only their hashes can group them."""
    from memeindex.templates import picture_hashes

    rows = []
    for path, rgb in pictures.items():
        phash, dh = picture_hashes(rgb)
        rows.append({"path": path, "sha256": hashlib.sha256(rgb.tobytes()).hexdigest(), "phash": phash,
                     "status": "noface", **({"dhash": dh} if dhash else {})})
    faces = pa.table({"path": pa.array([], pa.string()), "sha256": pa.array([], pa.string()),
                      "blendshapes": pa.array([], pa.list_(pa.float32(), 52)),
                      "embedding": pa.array([], pa.list_(pa.float32(), 64))})
    return pa.Table.from_pylist(rows), faces


def test_faceless_pictures_whose_phashes_meet_by_chance_are_kept_apart_by_the_dhash():
    """skimage's checkerboard and a grey ramp (light at the top) are unrelated pictures whose pHashes lie within
    SAME_PICTURE_BITS: the pHash alone joined them; their difference hashes disagree, so now they stay apart, while
    resized, recompressed and captioned copies of a photo still join. An index without dhash (written before it)
    or a file without one groups on the pHash alone, as before."""
    import skimage.data

    from memeindex.templates import DHASH_BITS, SAME_PICTURE_BITS

    rocket = skimage.data.rocket()
    pictures = {"checkerboard.png": np.stack([skimage.data.checkerboard()] * 3, axis=-1),
                "ramp.png": np.tile(np.linspace(220, 40, 300).astype(np.uint8)[:, None, None], (1, 400, 3)),
                "rocket.jpg": rocket, "copies/rocket-small.jpg": _jpeg(_resize(rocket, 0.35), 30),
                "copies/rocket-captioned.jpg": _captioned(rocket, "LIFTOFF")}
    images, faces = _faceless(pictures)
    row = {r["path"]: r for r in images.to_pylist()}
    assert hash_distance(row["checkerboard.png"]["phash"], row["ramp.png"]["phash"]) <= SAME_PICTURE_BITS
    assert hash_distance(row["checkerboard.png"]["dhash"], row["ramp.png"]["dhash"]) > DHASH_BITS
    groups = assign(images, faces)
    assert groups["checkerboard.png"] != groups["ramp.png"], groups
    assert len({groups[p] for p in pictures if "rocket" in p}) == 1, groups
    assert groups["rocket.jpg"] not in (groups["checkerboard.png"], groups["ramp.png"])

    old, _ = _faceless(pictures, dhash=False)
    assert assign(old, faces)["checkerboard.png"] == assign(old, faces)["ramp.png"]  # the pHash alone decides
    unknown = images.set_column(images.schema.get_field_index("dhash"), "dhash",
                                pa.array(["" if p == "ramp.png" else row[p]["dhash"] for p in pictures]))
    groups = assign(unknown, faces)
    assert groups["checkerboard.png"] == groups["ramp.png"] and len(set(groups.values())) == 2


def test_template_ids_give_each_row_its_template_in_row_order():
    """What a build writes: per images row and per faces row, in the tables' order (a face's is its file's)."""
    from memeindex.templates import template_ids

    rng = np.random.default_rng(0)
    shas = [f"{i:x}" * 64 for i in range(1, 5)]
    images = pa.table({"path": ["d.jpg", "a.jpg", "c.jpg", "b.jpg"], "sha256": [shas[3], shas[0], shas[2], shas[0]],
                       "phash": ["0" * 16, "f" * 16, "", "f" * 16], "status": ["noface", "faces", "failed", "faces"]})
    emb = rng.standard_normal((2, 64)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    faces = pa.table({"path": ["a.jpg", "a.jpg"], "sha256": [shas[0]] * 2,
                      "blendshapes": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(104, np.float32)), 52),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 64)})
    image_ids, face_ids = template_ids(images, faces)
    assert image_ids.to_pylist() == [shas[3][:16], shas[0][:16], shas[2][:16], shas[0][:16]]
    assert face_ids.to_pylist() == [shas[0][:16]] * 2
    assert assign(images, faces) == dict(zip(images.column("path").to_pylist(), image_ids.to_pylist()))


def test_close_hashes_give_each_pair_once():
    from memeindex.templates import _close_hashes

    hashes = np.array([0, 0b111, 0xFFFF_FFFF_0000_0000, 0b1], np.uint64)
    lo, hi, bits = _close_hashes(hashes, np.array([0, 1, 3]), 4)  # 0-1, 0-3 and 1-3 are found from both sides
    assert sorted(zip(lo.tolist(), hi.tolist(), bits.tolist())) == [(0, 1, 3), (0, 3, 1), (1, 3, 2)]


def test_union_of_pairs_labels_each_node_with_its_components_smallest_node():
    from memeindex.templates import _smallest_members

    rng = np.random.default_rng(1)
    n = 2000
    a, b = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    chain = np.arange(n - 1, 1500, -1)  # a long chain given from its far end: many rounds of hooking
    a, b = np.concatenate([a, chain]), np.concatenate([b, chain - 1])
    parent = list(range(n))  # the reference: a plain union-find

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in zip(a.tolist(), b.tolist()):
        ri, rj = find(i), find(j)
        parent[max(ri, rj)] = min(ri, rj)
    assert _smallest_members(n, a, b).tolist() == [find(i) for i in range(n)]
    assert _smallest_members(3, np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == [0, 1, 2]


def test_hash_only_joins_ask_the_dhash_of_two_faceless_files_only():
    """Two faceless files whose pHashes meet even within LONE_FACE_BITS stay apart when their dHashes disagree (a
    chance meeting: bench_templates at 1M files found one); a file with faces and one without join on the pHash
    alone within LONE_FACE_BITS (a copy whose face the detector missed)."""
    from memeindex.templates import DHASH_BITS, LONE_FACE_BITS

    near, far = "0" * 15 + "7", "f" * 16  # 3 bits from "0" * 16; 64 bits
    rows = [("a.png", "a", "0" * 16, "0" * 16, "noface"), ("b.png", "b", near, far, "noface"),
            ("c.png", "c", "f" * 16, "0" * 16, "noface"), ("d.png", "d", "f" * 15 + "8", far, "faces")]
    images = pa.table({"path": [r[0] for r in rows], "sha256": [r[1] * 64 for r in rows],
                       "phash": [r[2] for r in rows], "dhash": [r[3] for r in rows], "status": [r[4] for r in rows]})
    assert hash_distance(near, "0" * 16) <= LONE_FACE_BITS and hash_distance(far, "0" * 16) > DHASH_BITS
    emb = np.zeros((1, 64), np.float32)
    emb[0, 0] = 1
    faces = pa.table({"path": ["d.png"], "sha256": ["d" * 64],
                      "blendshapes": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(52, np.float32)), 52),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 64)})
    groups = assign(images, faces)
    assert groups["a.png"] != groups["b.png"]  # faceless, pHash 3 bits, dHash 64: a chance meeting
    assert groups["c.png"] == groups["d.png"]  # faceless + faces, pHash 3 bits: one picture, its face missed once
    assert assign(images.drop_columns(["dhash"]), faces)["a.png"] == assign(images.drop_columns(["dhash"]),
                                                                             faces)["b.png"]


def test_malformed_hashes_are_unknown_not_an_error():
    """A damaged or hand-edited hash column: 16 characters one of which is not ASCII, not hex, short, null."""
    import pyarrow as pa

    from memeindex.templates import _hash_words

    words, known = _hash_words(pa.array(["00000000000000ff", "é123456789abcdef", "g123456789abcdef", "abc", None, ""]))
    assert known.tolist() == [True, False, False, False, False, False] and words[0] == 255


def test_faces_find_their_file_by_its_exact_name_not_its_stored_text():
    """Two copies of a one-face picture, one named b"a\\xff.jpg" (not UTF-8: stored as the text "a\\\\xff.jpg" with
    its bytes in path_bytes) and one named that text itself: each copy's face is its own file's (generation's key
    column), so the content holds one face, not two, and it joins a far crop of the picture with the same one face.
    Keyed by the stored text, both faces fell to the first file: a two-face collage, kept apart."""
    from memeindex.generation import stored_path
    from memeindex.templates import template_ids

    odd, odd_bytes = stored_path(os.fsdecode(b"a\xff.jpg"))
    assert odd == "a\\xff.jpg" and odd_bytes == b"a\xff.jpg"
    shas = ["a" * 64, "a" * 64, "b" * 64]
    images = pa.table({"path": [odd, odd, "b.jpg"], "path_bytes": pa.array([None, odd_bytes, None], pa.binary()),
                       "sha256": shas, "phash": ["0" * 16, "0" * 16, "f" * 16], "status": ["faces"] * 3})
    emb = np.zeros((3, 64), np.float32)
    emb[:, 0] = 1  # the same face in all three
    faces = pa.table({"path": [odd, odd, "b.jpg"], "path_bytes": pa.array([None, odd_bytes, None], pa.binary()),
                      "sha256": shas,
                      "blendshapes": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(3 * 52, np.float32)), 52),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 64)})
    image_ids, face_ids = template_ids(images, faces)
    assert image_ids.to_pylist() == ["a" * 16] * 3 and face_ids.to_pylist() == ["a" * 16] * 3
