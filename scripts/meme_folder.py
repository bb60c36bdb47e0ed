"""The meme folder `make run` indexes: printed on stdout, everything else goes to stderr.

Usage: python scripts/meme_folder.py shared|imgflip|demo|ask [--imgflip-dir DIR] [--demo-dir DIR]

  shared   ../shared/data/memes, beside the checkout
  imgflip  imgflip's popular templates, downloaded into --imgflip-dir (a re-run fetches only what is missing);
           when the download fails (offline), the folder of an earlier download, else the demo folder
  demo     a folder made from public-domain photos (scripts/demo_images.py)
  ask      (no ../shared) an earlier imgflip download when there is one; else, on a terminal, offers to download
           imgflip's templates; otherwise says how and uses the demo folder
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "memes"


def say(text: str) -> None:
    print(f"make run: {text}", file=sys.stderr, flush=True)


def demo(folder: Path) -> Path:
    if not folder.is_dir():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_images.py"), str(folder)], check=True,
                       stdout=sys.stderr)
    return folder


def downloaded(folder: Path) -> bool:
    return (folder / "index.tsv").is_file() and any(p.suffix != ".tsv" for p in folder.iterdir())


def imgflip(folder: Path, demo_folder: Path) -> Path:
    say(f"downloading imgflip's popular meme templates into {folder} (files already there are not fetched again)")
    # The CLI's summary line goes to stderr too: stdout carries only the folder.
    done = subprocess.run([sys.executable, "-m", "memeindex", "download", "imgflip", str(folder)], stdout=sys.stderr)
    if done.returncode == 0:
        return folder
    if downloaded(folder):
        say(f"the download failed (exit {done.returncode}); indexing the earlier download in {folder}")
        return folder
    say(f"the download failed (exit {done.returncode}: offline?); indexing the demo folder {demo_folder} instead")
    return demo(demo_folder)


def ask(folder: Path, demo_folder: Path) -> Path:
    if downloaded(folder):
        say(f"indexing the imgflip templates downloaded earlier into {folder} (MEMES=imgflip refreshes them)")
        return folder
    if sys.stdin.isatty() and sys.stderr.isatty():
        sys.stderr.write("No ../shared/data/memes beside this checkout. Download imgflip's 100 most popular meme "
                         f"templates (100 files, one every half second) into {folder}? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() in ("y", "yes"):
            return imgflip(folder, demo_folder)
    say(f"indexing the demo folder {demo_folder}; `make run MEMES=imgflip` downloads imgflip's popular templates, "
        "`make run IMAGES=~/memes` indexes your own")
    return demo(demo_folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("memes", choices=("shared", "imgflip", "demo", "ask"))
    parser.add_argument("--imgflip-dir", type=Path, default=Path("indexes/imgflip-memes"))
    parser.add_argument("--demo-dir", type=Path, default=Path("indexes/demo-images"))
    args = parser.parse_args(argv)
    if args.memes == "shared":
        folder = SHARED
    elif args.memes == "imgflip":
        folder = imgflip(args.imgflip_dir, args.demo_dir)
    elif args.memes == "demo":
        folder = demo(args.demo_dir)
    else:
        folder = ask(args.imgflip_dir, args.demo_dir)
    print(folder)


if __name__ == "__main__":
    main()
