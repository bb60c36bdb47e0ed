"""Test media made at test time (never committed): a small meme folder and index, a .y4m camera feed, an mp4.

Built once per test process from photos every machine with the test extra has: matplotlib's grace_hopper.jpg
and scikit-image's astronaut.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

_lock = threading.Lock()
_cache: dict = {}


def grace() -> np.ndarray:
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., :3])


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """A photo as the JPEG bytes a client would upload."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def fit(rgb: np.ndarray, width: int, height: int, fill: int = 40) -> np.ndarray:
    """`rgb` scaled to fit width x height, centred on a plain background."""
    from PIL import Image

    img = Image.fromarray(rgb)
    img.thumbnail((width, height), Image.LANCZOS)
    canvas = Image.new("RGB", (width, height), (fill, fill, fill))
    canvas.paste(img, ((width - img.width) // 2, (height - img.height) // 2))
    return np.asarray(canvas)


def write_memes(root: Path) -> Path:
    """Six memes with faces (two people, flips, crops) and one blank picture without a face."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    g, a = grace(), astronaut()
    pictures = {
        "grace-hopper.jpg": g,
        "grace_mirrored.png": g[:, ::-1],
        "grace-close-up.jpg": g[80:420, 90:440],
        "astronaut.jpg": a,
        "astronaut-mirrored.png": a[:, ::-1],
        "astronaut_portrait.jpg": a[0:320, 100:380],
        "blank-wall.png": np.full((300, 400, 3), 200, np.uint8),
    }
    for name, rgb in pictures.items():
        Image.fromarray(np.ascontiguousarray(rgb)).save(root / name)
    return root


def built_index(base: Path) -> tuple[Path, Path]:
    """(image root, index dir) of a real index built from write_memes(); built once per process."""
    with _lock:
        if "index" not in _cache:
            from memeindex.indexer import build

            root = write_memes(base / "memes")
            index_dir = base / "index"
            build(root, index_dir, workers=1)
            _cache["index"] = (root, index_dir)
        return _cache["index"]


def write_y4m(path: Path, rgb: np.ndarray, width: int = 640, height: int = 480, frames: int = 2) -> Path:
    """A YUV4MPEG2 (C420jpeg) file showing `rgb`: Chromium's fake camera loops it."""
    import cv2

    frame = fit(rgb, width, height)
    yuv = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)  # planar: Y (h rows), then U and V (h/4 rows each)
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n")
            f.write(yuv.tobytes())
    return path


def write_mp4(path: Path, parts: list[tuple[np.ndarray, float]], fps: int = 10, size=(480, 360)) -> Path:
    """An mp4 (mp4v) showing each picture for its seconds, in order."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    try:
        for rgb, seconds in parts:
            bgr = cv2.cvtColor(fit(rgb, *size), cv2.COLOR_RGB2BGR)
            for _ in range(round(seconds * fps)):
                writer.write(bgr)
    finally:
        writer.release()
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A uvicorn server for `app` on 127.0.0.1 in a background thread (context manager); `.url` is its base."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
