"""The on-disk generation (generation.py) with fake rows: schema, paths, migrations, writer, checkpoints."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fakes import FAKE_MODEL_ID, write_fake_generation
from memeindex import generation as gen
from memeindex import vectors
from memeindex.errors import IndexDamaged, IndexMismatch
from memeindex.generation import FileRef, ImageRow, IndexDir


class FakeFace:
    def __init__(self, frame, box, rng, dim):
        v = rng.normal(size=dim).astype(np.float32)
        self.frame, self.box, self.score = frame, box, 0.9
        self.blendshapes = rng.random(52).astype(np.float32)
        self.embedding = v / np.linalg.norm(v)


def _file(rel, n_faces, rng, dim=8, frames=(0,)):
    ref = FileRef(rel, f"{abs(hash(rel)):064x}"[:64], 100, 10**18)
    faces = [FakeFace(frames[i % len(frames)], (1, 2, 30 + i, 40 + i), rng, dim) for i in range(n_faces)]
    return gen.file_rows(ref, faces, model_id=FAKE_MODEL_ID, detector="d1", phash="0123456789abcdef")


def _generation(tmp_path, files, dim=8):
    write_fake_generation(tmp_path / "index", [r.image for r in files], [f for r in files for f in r.faces], dim,
                          detector="d1")
    return IndexDir(tmp_path / "index")


def test_rows_of_one_file_number_faces_per_frame_and_agree():
    rng = np.random.default_rng(0)
    rows = _file("a.gif", 3, rng, frames=(0, 2))
    assert rows.image.status == "faces" and rows.image.faces == 3
    assert [(f.frame, f.face) for f in rows.faces] == [(0, 0), (2, 0), (0, 1)]
    assert {f.detector for f in rows.faces} == {rows.image.detector} == {"d1"}
    none = gen.file_rows(FileRef("b.png", "0" * 64, 1, 1), [], model_id="m", detector="d1")
    assert (none.image.status, none.image.faces, none.faces) == ("noface", 0, [])
    bad = gen.file_rows(FileRef("c.jpg", "1" * 64, 1, 1), model_id="m", detector="d1", reason="truncated")
    assert (bad.image.status, bad.image.reason) == ("failed", "truncated")


def test_generation_round_trips_through_plain_parquet(tmp_path):
    rng = np.random.default_rng(1)
    files = [_file(f"dir/m{i}.jpg", i % 3, rng) for i in range(7)]
    idx = _generation(tmp_path, files)
    g = idx.generation()
    faces = pq.read_table(g.faces_path)  # a plain Parquet reader, no memeindex code
    assert faces.num_rows == sum(len(r.faces) for r in files) == g.facts["count"]
    assert g.facts["schema_version"] == gen.SCHEMA_VERSION and g.facts["detector"] == "d1"
    assert set(gen.GENERATION_FILES) <= {p.name for p in g.folder.iterdir()}
    assert not list(idx.path.rglob("*.tmp*"))
    dist, ids = vectors.search(g.read_index(), gen.embeddings(faces)[[0, 3]], 1)
    assert ids[:, 0].tolist() == [0, 3] and np.allclose(dist, 0, atol=1e-3)  # FAISS id = row position
    images = g.images()
    assert images.column("phash").to_pylist()[0] == "0123456789abcdef"
    assert gen.agreement_errors(images, g.faces()) == []


def test_writer_refuses_tables_that_disagree(tmp_path):
    rng = np.random.default_rng(2)
    files = [_file("a.jpg", 2, rng), _file("b.jpg", 0, rng)]
    faces = gen.faces_table([f for r in files for f in r.faces], 8)
    files[0].image.status, files[0].image.faces = "noface", 0  # the #9 race: images says noface, faces has rows
    images = gen.images_table([r.image for r in files])
    with pytest.raises(gen.Disagreement, match="a.jpg"):
        gen.write_generation(IndexDir(tmp_path / "i"), faces, images,
                             vectors.build_index(gen.embeddings(faces), 8).index, model_id="fake-v1", dim=8)
    assert IndexDir(tmp_path / "i").current_or_none() is None


def test_agreement_errors_name_every_disagreement():
    """The writer's and `check`'s cross-check of the two tables (judged in Arrow): each kind of disagreement is
    named once, with the file's in-memory path (a name that is not UTF-8 told apart from its shown text)."""
    import dataclasses

    rng = np.random.default_rng(7)
    odd = os.fsdecode(b"odd\xff.jpg")
    shown_like_odd = "odd\\xff.jpg"  # a UTF-8 name spelled as the odd one is shown: another file
    files = [_file(p, n, rng) for p, n in (("a.jpg", 2), ("b.jpg", 0), (odd, 1), (shown_like_odd, 1), ("c.jpg", 1),
                                           ("d.jpg", 2))]
    face_rows = [f for r in files for f in r.faces]
    images = [r.image for r in files]
    assert gen.agreement_errors(gen.images_table(images), gen.faces_table(face_rows, 8)) == []

    images[0].faces = 1  # a.jpg has two face rows
    images[1].status = "maybe"
    images[2].sha256 = "f" * 64  # the odd name's faces come from other content
    images.append(dataclasses.replace(images[4]))  # c.jpg twice
    face_rows[-1].sha256 = "e" * 64  # d.jpg's second face comes from another content
    face_rows.append(dataclasses.replace(face_rows[0], path="gone.jpg"))
    errors = gen.agreement_errors(gen.images_table(images), gen.faces_table(face_rows, 8))
    assert sorted(errors) == sorted([
        "'a.jpg': images says faces with 1 face(s), faces holds 2", "'b.jpg' has status 'maybe'",
        f"{odd!r}: its faces come from other content than its image row", "'c.jpg' has two image rows",
        "faces of 'd.jpg' come from two contents", "'d.jpg': its faces come from other content than its image row",
        "'gone.jpg' has face rows but no image row"])


def test_non_utf8_names_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    odd = os.fsdecode(b"dir/\xff\xfe meme.jpg")
    files = [_file(odd, 1, rng), _file("dir/plain.jpg", 1, rng)]
    g = _generation(tmp_path, files).generation()
    images = g.images()
    shown = images.column("path").to_pylist()
    assert "dir/\\xff\\xfe meme.jpg" in shown and "dir/plain.jpg" in shown
    assert set(gen.row_keys(images)) == {odd, "dir/plain.jpg"}  # the exact names come back
    assert images.column("path_bytes").to_pylist()[shown.index("dir/plain.jpg")] is None
    assert set(gen.row_keys(g.faces())) == {odd, "dir/plain.jpg"}


def test_v1_tables_migrate_with_defaults(tmp_path):
    v1_images = pa.table({"path": ["a.jpg", "b.jpg"], "sha256": ["a" * 64, "b" * 64], "size": [1, 2],
                          "mtime_ns": [3, 4], "status": ["faces", "noface"], "faces": pa.array([1, 0], pa.int32()),
                          "reason": ["", ""]}).replace_schema_metadata({b"memeindex_schema": b"1"})
    rows = gen.image_rows(v1_images)
    assert [(r.path, r.status, r.detector, r.phash, r.template) for r in rows] == [
        ("a.jpg", "faces", "", "", ""), ("b.jpg", "noface", "", "", "")]
    migrated = gen.migrate_images(v1_images)
    assert migrated.schema.equals(gen.IMAGES_SCHEMA)
    dim = 4
    v1_faces = gen.faces_table([], dim).drop_columns(["template", "detector", "path_bytes"]) \
        .replace_schema_metadata({b"memeindex_schema": b"1"})
    assert gen.migrate_faces(v1_faces).schema.equals(gen.faces_schema(dim))
    newer = v1_images.replace_schema_metadata({b"memeindex_schema": str(gen.SCHEMA_VERSION + 1).encode()})
    with pytest.raises(IndexMismatch):
        gen.migrate_images(newer)


def test_v2_failures_of_the_run_are_recognised_by_their_reason(tmp_path):
    """v2 recorded no kind of failure: the upgrade marks the two failures v2's backends made for the run (the per-file
    time limit, a dead worker) so the next build retries them; a broken file's failure stays a failure."""
    reasons = ["", "cannot identify image file", "took longer than the 120 s per-file limit (MEMEINDEX_FILE_TIMEOUT)",
               "the worker analysing it died (signal 9)"]
    n = len(reasons)
    v2_images = pa.table({"path": [f"{i}.jpg" for i in range(n)], "path_bytes": pa.array([None] * n, pa.binary()),
                          "sha256": ["a" * 64] * n, "size": [1] * n, "mtime_ns": [1] * n,
                          "status": ["noface"] + ["failed"] * 3, "faces": pa.array([0] * n, pa.int32()),
                          "reason": reasons, "phash": [""] * n, "template": [""] * n, "detector": ["3"] * n}
                         ).replace_schema_metadata({b"memeindex_schema": b"2"})
    assert gen.migrate_images(v2_images).column("run_failures").to_pylist() == [0, 0, 1, 1]
    assert gen.migrate_images(v2_images).schema.equals(gen.IMAGES_SCHEMA)
    # A reader of some columns (the Searcher, `check`) gets the same: the migration's input is read with them.
    pq.write_table(v2_images, tmp_path / gen.IMAGES_FILE)
    g = gen.Generation(tmp_path)
    assert g.images(["status", "run_failures"]).column("run_failures").to_pylist() == [0, 0, 1, 1]
    assert g.images(["run_failures"]).column_names == ["run_failures"]
    assert g.images(["path", "dhash"]).column("dhash").to_pylist() == [""] * n


def test_v3_images_migrate_without_a_dhash(tmp_path):
    """v3 had no difference hash: "" (unknown), so grouping joins those files on their pHash alone, as v3 did."""
    rows = [_file("a.jpg", 1, np.random.default_rng(6)).image]
    v3 = gen.images_table(rows).drop_columns(["dhash"]).replace_schema_metadata({b"memeindex_schema": b"3"})
    migrated = gen.migrate_images(v3)
    assert migrated.schema.equals(gen.IMAGES_SCHEMA) and migrated.column("dhash").to_pylist() == [""]
    assert gen.image_rows(v3)[0].phash == rows[0].phash


def test_facts_refuse_another_model_or_a_newer_schema(tmp_path):
    gen.write_facts(tmp_path, model_id="fake-v1", dim=8, count=0)
    facts = gen.read_facts(tmp_path)
    gen.check_facts(facts, "fake-v1", 8, tmp_path)
    gen.check_facts({**facts, "schema_version": 1}, "fake-v1", 8, tmp_path)  # read through the migration
    for bad in ({**facts, "model_id": "fake-v2"}, {**facts, "schema_version": 99}, {**facts, "dim": 9}):
        with pytest.raises(IndexMismatch, match="rebuild"):
            gen.check_facts(bad, "fake-v1", 8, tmp_path)
    assert json.loads((tmp_path / gen.FACTS_FILE).read_text())["schema_version"] == gen.SCHEMA_VERSION


def test_checkpoints_count_only_complete_pairs_of_the_same_model(tmp_path):
    rng = np.random.default_rng(4)
    idx = IndexDir(tmp_path / "index")
    ck = gen.Checkpoints(idx)
    ck.write(1, [_file("a.jpg", 2, rng), _file("b.jpg", 0, rng)], "fake-v1", 8)
    ck.write(2, [_file("c.jpg", 1, rng)], "other-model", 8)
    images, faces = ck.read("fake-v1", 8)
    assert sorted(images.column("path").to_pylist()) == ["a.jpg", "b.jpg"] and faces.num_rows == 2
    next(idx.partial.glob("faces-*00001.parquet")).unlink()  # a pair whose faces file never got written
    images, faces = ck.read("fake-v1", 8)
    assert images.num_rows == 0 and faces.num_rows == 0
    ck.clear()
    assert not list(idx.partial.glob("*.parquet"))


def test_retag_moves_rows_to_a_new_path():
    rng = np.random.default_rng(5)
    faces = gen.faces_table(_file("old.jpg", 2, rng).faces, 8)
    moved = gen.retag(faces, os.fsdecode(b"new\xff.jpg"), "e" * 64, 5, 6)
    assert gen.row_keys(moved) == [os.fsdecode(b"new\xff.jpg")] * 2
    assert set(moved.column("sha256").to_pylist()) == {"e" * 64}
    assert isinstance(ImageRow("a", "b", 1, 2, "faces"), ImageRow)


def test_face_rows_file_holds_each_face_record_in_row_order_and_check_reads_its_size(tmp_path):
    rng = np.random.default_rng(7)
    files = [_file(f"m{i}.gif", i % 4, rng, frames=(0, 2)) for i in range(9)]
    idx = _generation(tmp_path, files)
    g = idx.generation()
    faces = g.faces()
    raw = g.face_rows_path.read_bytes()
    assert len(raw) == faces.num_rows * gen.FACE_ROW.itemsize and gen.FACE_ROW.itemsize == 72
    records = np.frombuffer(raw, gen.FACE_ROW)  # a plain fixed-width file: numpy reads it with the dtype alone
    assert records["frame"].tolist() == faces.column("frame").to_pylist()
    assert records["box"].tolist() == faces.column("box").to_pylist()
    shapes = np.asarray(faces.column("blendshapes").to_pylist())
    assert np.abs(records["blendshapes"] / 255.0 - shapes).max() <= 0.5 / 255 + 1e-6
    with g.open_face_rows(faces.num_rows) as f:
        assert os.pread(f.fileno(), 72, 72 * 3) == raw[72 * 3:72 * 4]
    assert gen.check(idx.path).ok

    g.face_rows_path.write_bytes(raw[:-10])  # truncated
    report = gen.check(idx.path)
    assert not report.ok and any(gen.FACE_ROWS_FILE in p for p in report.problems)
    with pytest.raises(IndexDamaged, match=gen.FACE_ROWS_FILE):
        g.open_face_rows(faces.num_rows)
    g.face_rows_path.write_bytes(raw[72:] + raw[:72])  # the right size, the wrong records
    assert any(gen.FACE_ROWS_FILE in p for p in gen.check(idx.path).problems)

    g.face_rows_path.unlink()  # a generation written before faces.rows: still valid
    assert gen.check(idx.path).ok and g.open_face_rows(faces.num_rows) is None


def test_hex_columns_read_as_numbers_one_way_for_meme_ids_and_hashes():
    """generation.hex_words decodes the sha256 prefixes (search's meme ids) and the picture hashes (templates);
    a damaged sha256 column is IndexMismatch, whatever is wrong with it (a short non-hex value or one of
    several-byte characters had escaped as a bare ValueError)."""
    from memeindex.search import _meme_keys
    from memeindex.templates import _hash_words

    shas = pa.chunked_array([pa.array(["00000000000000ff" + "e" * 48, "ABC", None]), pa.array(["f" * 64])])
    assert _meme_keys(shas).tolist() == [255, 0xABC, 0, 2**64 - 1]
    words, known = _hash_words(pa.array(["00000000000000ff", "00000000000000ff0", "ABCDEF0123456789"]))
    assert known.tolist() == [True, False, True] and words.tolist() == [255, 0, 0xABCDEF0123456789]
    for damaged in ("g" * 64, "zz", "é" * 9, "-1", " 1a", "0x1f", "1_2"):
        with pytest.raises(IndexMismatch, match="non-hex"):
            _meme_keys(pa.array([damaged]))


def test_migrations_run_until_a_generation_is_written_then_never(tmp_path, monkeypatch):
    """A table read through the migrations says the current schema, so the next build, which writes the kept rows
    of the previous generation back, records it and later reads run no migration step (the migrated tables had
    lost their version: an index built once over an older one was migrated from schema 1 at every read)."""
    rng = np.random.default_rng(0)
    rows = [_file("a.jpg", 2, rng), _file("b.jpg", 0, rng)]
    write_fake_generation(tmp_path / "idx", [r.image for r in rows], [f for r in rows for f in r.faces])
    g = IndexDir(tmp_path / "idx").generation()
    for path in (g.images_path, g.faces_path):  # the tables as schema 3 wrote them (without dhash)
        table = pq.read_table(path)
        table = table.drop_columns([c for c in ["dhash"] if c in table.column_names])
        pq.write_table(table.replace_schema_metadata({b"memeindex_schema": b"3"}), path)

    steps = []
    for version, step in list(gen.MIGRATIONS.items()):
        monkeypatch.setitem(gen.MIGRATIONS, version,
                            lambda table, kind, step=step, version=version: steps.append(version) or step(table, kind))
    images, faces = g.images(), g.faces()
    assert steps == list(range(3, gen.SCHEMA_VERSION)) * 2 and "dhash" in images.column_names
    assert gen.table_schema_version(images) == gen.table_schema_version(faces) == gen.SCHEMA_VERSION
    assert gen.table_schema_version(g.images(["path"])) == gen.SCHEMA_VERSION
    assert gen.migrate_faces(faces) is faces  # migrated once: not again

    folder = gen.write_generation(IndexDir(tmp_path / "idx"), faces, images, g.read_index(), model_id=FAKE_MODEL_ID,
                                  dim=8, root="/r")
    for path in (folder / gen.IMAGES_FILE, folder / gen.FACES_FILE):
        assert pq.read_schema(path).metadata[b"memeindex_schema"] == str(gen.SCHEMA_VERSION).encode()
    steps.clear()
    again = IndexDir(tmp_path / "idx").generation()
    again.images(), again.faces(), again.images(["status"]), again.faces(["path"])
    assert steps == []
