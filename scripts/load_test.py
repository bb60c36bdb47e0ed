"""Bounded loopback load test of `memeindex serve`: many clients searching at once, for a fixed time.

Starts the real server (a subprocess on 127.0.0.1, so its memory is its own), lets CLIENTS threads post face
photos to /api/search as fast as they can for SECONDS, and prints: throughput, p50/p95 latency of answered
searches, how fast a 503 comes back, the share of 503s (the bound on searches in flight at work), any other 5xx
(must be 0), and the server's resident memory: after warm-up, at its peak, and at the end (flat = bounded).

Usage: python scripts/load_test.py [--index DIR] [--clients 32] [--seconds 20] [--upload-mb 0]
Without --index it builds a small index of the demo images (scripts/demo_images.py) in a temp folder.
--upload-mb N pads each upload to about N MB (a big photo), to show memory stays flat under big bodies too.
"""
from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def query_photo(upload_mb: float) -> bytes:
    import matplotlib

    grace = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    if upload_mb <= 0:
        out = io.BytesIO()
        grace.save(out, "JPEG", quality=90)
        return out.getvalue()
    # A big photo: the face in a large noisy frame, JPEG at high quality, grown until about upload_mb.
    side = 1024
    while True:
        rng = np.random.default_rng(0)
        canvas = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
        canvas.paste(grace, (side // 2 - grace.width // 2, side // 2 - grace.height // 2))
        out = io.BytesIO()
        canvas.save(out, "JPEG", quality=95)
        if len(out.getvalue()) >= upload_mb * 1024 * 1024 or side > 8000:
            return out.getvalue()
        side = int(side * 1.25)


def demo_index(work: Path) -> Path:
    images, index = work / "images", work / "index"
    subprocess.run([sys.executable, str(HERE / "demo_images.py"), str(images)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "memeindex", "build", str(images), "--index", str(index), "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    return index


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--upload-mb", type=float, default=0.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="memeindex-load-") as tmp:
        index = args.index or demo_index(Path(tmp))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "memeindex", "serve", "--index", str(index),
                                   "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            return run(server, url, args)
        finally:
            server.terminate()
            server.wait(timeout=30)


def run(server: subprocess.Popen, url: str, args) -> int:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            print("the server did not start:", server.stderr.read().decode()[-2000:], file=sys.stderr)
            return 1
        time.sleep(0.2)
    photo = query_photo(args.upload_mb)
    files = {"image": ("face.jpg", photo, "image/jpeg")}
    with httpx.Client(timeout=60) as c:  # warm-up: the first searches load lazy parts
        for _ in range(5):
            c.post(f"{url}/api/search", files=files).raise_for_status()
    rss = {"warm": rss_mb(server.pid), "peak": 0.0}
    ok_latency, busy_latency, other, errors = [], [], {}, []
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds

    def client():
        with httpx.Client(timeout=60) as c:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    r = c.post(f"{url}/api/search", files=files)
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(type(exc).__name__)
                    continue
                took = time.perf_counter() - started
                with lock:
                    if r.status_code == 200:
                        ok_latency.append(took)
                    elif r.status_code == 503:
                        busy_latency.append(took)
                        assert r.headers.get("retry-after"), "a 503 without Retry-After"
                    else:
                        other[r.status_code] = other.get(r.status_code, 0) + 1
                if r.status_code == 503:
                    time.sleep(float(r.headers.get("retry-after", 1)) * 0.1)  # an impatient client

    def sample():
        while time.monotonic() < stop_at + 1:
            rss["peak"] = max(rss["peak"], rss_mb(server.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    sampler.join()
    rss["end"] = rss_mb(server.pid)

    total = len(ok_latency) + len(busy_latency) + sum(other.values()) + len(errors)
    five_xx = {code: n for code, n in other.items() if code >= 500}

    def pct(values, q):
        return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) >= 2 else float("nan")
    print(f"load: {args.clients} clients x {args.seconds:.0f} s on {url}, upload {len(photo) / 1e6:.2f} MB")
    print(f"  requests {total}: 200 x {len(ok_latency)}, 503 x {len(busy_latency)}, other {other or 0}, "
          f"client errors {len(errors)}")
    print(f"  throughput {len(ok_latency) / elapsed:.1f} searches/s answered "
          f"({total / elapsed:.1f} requests/s in all)")
    print(f"  latency of answered searches: p50 {pct(ok_latency, 50):.0f} ms, p95 {pct(ok_latency, 95):.0f} ms")
    print(f"  latency of 503s: p50 {pct(busy_latency, 50):.1f} ms, p95 {pct(busy_latency, 95):.1f} ms")
    print(f"  share of 503: {len(busy_latency) / max(total, 1):.1%}; other 5xx: {sum(five_xx.values())}")
    print(f"  server RSS: {rss['warm']:.0f} MB after warm-up, peak {rss['peak']:.0f} MB, "
          f"{rss['end']:.0f} MB at the end (+{rss['peak'] - rss['warm']:.0f} MB under load)")
    return 1 if five_xx or errors else 0


if __name__ == "__main__":
    sys.exit(main())
