"""The user-facing surface: usage errors and their exit codes, what messages show, the service's own pages.
Real models, the small real index of media_fixtures."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import media_fixtures as media
from memeindex.cli import main
from memeindex.errors import BadSetting


def run(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return media.built_index(tmp_path_factory.getbasetemp() / "memeindex-media")[1]


def test_an_unknown_embedder_is_a_usage_error_naming_the_choices(tmp_path, index, grace_path):
    from memeindex.embedders.registry import names

    (tmp_path / "index.csv").write_text("path,label\ng.jpg,neutral\n")
    typo = run("eval", tmp_path, "--embedder", "baseline", "--embedder", "expresion-v1")
    assert typo.exit_code == 2, typo.output  # click's code for a bad command line, not a missing model's 3
    assert "Invalid value for '--embedder'" in typo.stderr and "'expresion-v1'" in typo.stderr
    assert all(name in typo.stderr for name in names())
    env = {"MEMEINDEX_EMBEDDER": "expresion-v1"}
    for args in (("query", grace_path, "--index", index), ("check", "--index", index),
                 ("build", grace_path.parent, "--index", tmp_path / "idx")):
        result = run(*args, env=env)
        assert result.exit_code == BadSetting.exit_code == 2, (args, result.output)
        line = result.stderr.strip()
        assert line.startswith("memeindex: error: unknown embedder 'expresion-v1' (MEMEINDEX_EMBEDDER): choose one "
                               "of ") and "\n" not in line and all(name in line for name in names()), line
    assert not (tmp_path / "idx").exists()  # refused before the build made anything

