"""The embedders package: registry resolution, checksum pins, the blendshape constants."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from memeindex.embedders import registry
from memeindex.embedders.base import (EXPRESSION_BLENDSHAPES, MIRRORED_BLENDSHAPES, N_BLENDSHAPES,
                                      NON_EXPRESSION_BLENDSHAPES)
from memeindex.errors import BadSetting, ModelChecksumMismatch, ModelMissing
from memeindex.faces import BLENDSHAPE_NAMES
from memeindex.settings import Settings


def test_every_committed_model_matches_its_pin():
    assert registry.DEFAULT_LEARNED in registry.LEARNED_MODELS
    for model in registry.LEARNED_MODELS.values():
        assert model.verified_path().name == model.filename


def test_default_is_the_registry_entry_not_the_highest_sorting_name(monkeypatch, tmp_path):
    # Two files whose names sort the "wrong" way: v9 after v10. The default is whatever the registry names.
    v1 = registry.LEARNED_MODELS["expression-v1"]
    for name in ("expression-v9.tflite", "expression-v10.tflite"):
        shutil.copy(v1.path, tmp_path / name)
    models = {m.model_id: m for m in (registry.LearnedModel("expression-v9", "expression-v9.tflite", v1.sha256, v1.size),
                                      registry.LearnedModel("expression-v10", "expression-v10.tflite", v1.sha256,
                                                            v1.size))}
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "LEARNED_MODELS", models)
    monkeypatch.setattr(registry, "DEFAULT_LEARNED", "expression-v10")
    assert sorted(p.stem for p in tmp_path.glob("*.tflite"))[-1] == "expression-v9"
    assert registry.resolve("auto") == "expression-v10"


def test_tampered_or_missing_weights_are_refused(monkeypatch, tmp_path):
    default = registry.LEARNED_MODELS[registry.DEFAULT_LEARNED]
    data = bytearray(default.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / default.filename).write_bytes(bytes(data))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    settings = Settings.from_env()
    for name in (default.model_id, "auto", "learned"):  # a damaged default is refused, never silently replaced
        with pytest.raises(ModelChecksumMismatch):
            registry.get_embedder(settings, name)
    (tmp_path / default.filename).unlink()
    with pytest.raises(ModelMissing):
        registry.get_embedder(settings, default.model_id)
    assert registry.get_embedder(settings, "auto").model_id == "blendshapes-v1"  # no file: the baseline


@pytest.mark.parametrize("model_id", sorted(registry.LEARNED_MODELS))
def test_a_learned_model_loads_from_a_folder_whose_name_is_not_utf8(monkeypatch, tmp_path, grace_rgb, model_id):
    import os

    from memeindex.faces import FaceDetector

    model = registry.LEARNED_MODELS[model_id]
    settings = Settings.from_env()
    with FaceDetector(settings) as detector:
        faces = detector.detect(grace_rgb)
    expected = registry.get_embedder(settings, model_id).embed(grace_rgb, faces)
    odd = tmp_path / os.fsdecode(b"checkout-\xff\xfe") / "weights"  # a checkout under such a folder
    odd.mkdir(parents=True)
    shutil.copy(model.path, odd / model.filename)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", odd)
    embedder = registry.get_embedder(settings, model_id)  # LiteRT's model_path raised TypeError on such a path
    assert np.array_equal(embedder.embed(grace_rgb, faces), expected) and len(faces) == 1


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(BadSetting, match="blendshapes-v1"):  # a name the user chose, not a missing file
        registry.get_embedder(Settings.from_env(), "expression-v0")


def test_blendshape_constants():
    assert N_BLENDSHAPES == len(BLENDSHAPE_NAMES) == 52
    assert len(EXPRESSION_BLENDSHAPES) == 52 - len(NON_EXPRESSION_BLENDSHAPES) == 43
    assert not any(BLENDSHAPE_NAMES[i].startswith("eyeLook") for i in EXPRESSION_BLENDSHAPES)
    assert np.array_equal(MIRRORED_BLENDSHAPES[MIRRORED_BLENDSHAPES], np.arange(52))  # mirroring twice = identity
    names = list(BLENDSHAPE_NAMES)
    assert names[MIRRORED_BLENDSHAPES[names.index("mouthSmileLeft")]] == "mouthSmileRight"
    assert names[MIRRORED_BLENDSHAPES[names.index("jawOpen")]] == "jawOpen"


def test_an_index_of_another_learned_model_is_refused_with_the_rebuild_hint(tmp_path, grace_path):
    import memeindex
    from memeindex.errors import IndexMismatch
    from memeindex.search import Searcher

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(grace_path, images / "grace.jpg")
    index = tmp_path / "index"
    memeindex.build(images, index, settings=Settings.from_env(embedder="expression-v1", workers=1), progress=False)
    with pytest.raises(IndexMismatch, match=r"expression-v1.*rebuild"):
        Searcher(index, settings=Settings.from_env(embedder="expression-v2"))


def test_an_index_built_by_another_file_of_the_same_model_is_refused(tmp_path, grace_path):
    """A model retrained under the same model_id (expression-v2 has been, three times) makes other vectors: the index
    records the file's sha256, and a query, `check` and an incremental build refuse it with the rebuild hint."""
    import json

    import memeindex
    from memeindex.errors import IndexMismatch
    from memeindex.generation import IndexDir, check
    from memeindex.search import Searcher

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(grace_path, images / "grace.jpg")
    index = tmp_path / "index"
    settings = Settings.from_env(embedder="expression-v1", workers=1)
    memeindex.build(images, index, settings=settings, progress=False)
    facts_file = IndexDir(index).current() / "index.json"
    facts = json.loads(facts_file.read_text())
    pinned = registry.LEARNED_MODELS["expression-v1"].sha256
    assert facts["model_sha256"] == pinned
    Searcher(index, settings=settings).close()  # the same file: accepted
    facts["model_sha256"] = "0" * 64  # as if built by an earlier expression-v1 file
    facts_file.write_text(json.dumps(facts))
    with pytest.raises(IndexMismatch, match=r"another expression-v1 file.*rebuild"):
        Searcher(index, settings=settings)
    with pytest.raises(IndexMismatch, match="another expression-v1 file"):
        memeindex.build(images, index, settings=settings, progress=False)
    assert any("another expression-v1 file" in p for p in check(index, "expression-v1", 64, None, pinned).problems)
    del facts["model_sha256"]  # an index from before memeindex recorded the file: read as before
    facts_file.write_text(json.dumps(facts))
    Searcher(index, settings=settings).close()
    shutil.copy(grace_path, images / "grace-again.jpg")
    memeindex.build(images, index, settings=settings, progress=False)  # keeps the old vectors: cannot vouch for them
    assert json.loads((IndexDir(index).current() / "index.json").read_text())["model_sha256"] == ""
    memeindex.build(images, index, settings=settings, progress=False, rebuild=True)  # every vector made afresh
    assert json.loads((IndexDir(index).current() / "index.json").read_text())["model_sha256"] == pinned


def test_a_checkpoint_of_another_model_file_is_not_resumed(tmp_path):
    from memeindex.generation import Checkpoints, FileRef, IndexDir, file_rows

    checkpoints = Checkpoints(IndexDir(tmp_path / "index"))
    rows = [file_rows(FileRef("a.png", "0" * 64, 1, 1), [], model_id="m-v2", detector="d")]
    checkpoints.write(1, rows, "m-v2", 8, "a" * 64)
    assert checkpoints.read("m-v2", 8, "a" * 64)[0].num_rows == 1
    assert checkpoints.read("m-v2", 8, "b" * 64)[0].num_rows == 0  # the model retrained since: analysed again
    assert checkpoints.read("m-v2", 8)[0].num_rows == 0
