"""atomicfile.replacing: the one temp-file-and-rename every whole-file writer uses."""
import pytest

from memeindex.atomicfile import replacing


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "index.tsv"
    dest.write_text("old\n")
    with replacing(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".")  # beside it (an atomic rename), hidden
        tmp.write_text("new\n")
        assert dest.read_text() == "old\n"  # readers see the old file until the rename
    assert dest.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["index.tsv"]

    with pytest.raises(ValueError), replacing(dest) as tmp:
        tmp.write_text("half")
        raise ValueError("the download broke off")
    assert dest.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["index.tsv"]

    own = tmp_path / ".index.tsv.part-1"  # a folder whose clean-up looks for its own temp names
    with replacing(dest, tmp=own) as tmp:
        assert tmp == own
        tmp.write_text("newer\n")
    assert dest.read_text() == "newer\n" and not own.exists()
