"""Shared fixtures: real face photos every machine has (matplotlib's Grace Hopper, scikit-image's astronaut)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from memeindex.settings import Settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def grace_rgb() -> np.ndarray:
    from media_fixtures import grace

    return grace()


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    from media_fixtures import astronaut

    return astronaut()


@pytest.fixture(scope="session")
def grace_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """Tests see the default settings, whatever the developer's shell exports."""
    for key in list(os.environ):
        if key.startswith("MEMEINDEX_") and key != "MEMEINDEX_MODELS":
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def media_index(tmp_path_factory) -> tuple[Path, Path]:
    """(image folder, index folder) of the small real index of media_fixtures' memes, built once per test run."""
    import media_fixtures as media

    return media.built_index(tmp_path_factory.getbasetemp() / "memeindex-media")


@pytest.fixture(scope="session")
def searcher(media_index):
    """A Searcher over the small real index of media_fixtures' memes."""
    from memeindex.search import Searcher

    s = Searcher(media_index[1], Settings.from_env())
    yield s
    s.close()


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env(workers=1)
