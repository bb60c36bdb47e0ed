"""Make a small demo meme folder from public-domain photos every machine has (no download, nothing committed).

Usage: python scripts/demo_images.py OUT_DIR
"""
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageOps
from skimage import data


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    grace = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    astronaut = Image.fromarray(data.astronaut())
    pictures = {
        "grace-hopper.jpg": grace,
        "grace-hopper-mirrored.jpg": ImageOps.mirror(grace),
        "astronaut.jpg": astronaut,
        "astronaut-close-up.jpg": astronaut.crop((140, 30, 320, 230)),
        "coffee-no-face.jpg": Image.fromarray(data.coffee()),
        "two-people.jpg": _side_by_side(grace, astronaut),
    }
    for name, img in pictures.items():
        img.save(out / name, quality=92)
    print(f"wrote {len(pictures)} demo images to {out}")


def _side_by_side(a: Image.Image, b: Image.Image) -> Image.Image:
    h = 512
    a, b = a.resize((round(a.width * h / a.height), h)), b.resize((round(b.width * h / b.height), h))
    canvas = Image.new("RGB", (a.width + b.width, h), (255, 255, 255))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, 0))
    return canvas


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path("indexes/demo-images"),
                        help="folder to write the pictures into (default: indexes/demo-images)")
    main(parser.parse_args().out_dir)
