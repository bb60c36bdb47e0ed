"""The meme images of a folder, for the benchmark and measurement scripts (not part of the package)."""
from pathlib import Path

SKIP = {".tsv", ".csv", ".md", ".txt", ".json"}  # the shared folders' index files


def meme_files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() not in SKIP
                  and not p.name.startswith("."))
