"""The Ray backend on a local Ray (2 CPUs) gives the same rows as the default backend on 40 real shared memes."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import SHARED_DATA
from memeindex import generation as gen
from memeindex.generation import IndexDir

from test_cli import run, summary

pytest.importorskip("ray")
MEMES = SHARED_DATA / "memes" / "imgflip"
COLUMNS = ["path", "sha256", "size", "status", "faces", "reason", "phash", "template", "detector"]


@pytest.mark.shared
@pytest.mark.skipif(not MEMES.is_dir(), reason="../shared/data is absent")
def test_ray_backend_matches_the_local_backend(tmp_path):
    root = tmp_path / "memes"
    root.mkdir()
    for path in sorted(p for p in MEMES.iterdir() if p.suffix.lower() in (".jpg", ".png", ".gif"))[:40]:
        os.symlink(path, root / path.name)  # a folder of links, as a curated collection often is
    local, ray = tmp_path / "local", tmp_path / "ray"
    a = run("build", root, "--index", local, "--workers", "2")
    b = run("build", root, "--index", ray, "--backend", "ray", "--workers", "2")
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    sa, sb = summary(a), summary(b)
    assert sa["images"] == sb["images"] == "40" and sa["faces"] == sb["faces"] and int(sa["faces"]) > 10
    ga, gb = IndexDir(local).generation(), IndexDir(ray).generation()
    assert ga.images(COLUMNS).equals(gb.images(COLUMNS))
    fa, fb = ga.faces(), gb.faces()
    assert fa.select(["path", "frame", "face"]).equals(fb.select(["path", "frame", "face"]))
    np.testing.assert_allclose(gen.embeddings(fa), gen.embeddings(fb), atol=1e-5)
    assert run("check", "--index", ray).exit_code == 0
