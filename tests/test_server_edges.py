"""The service's edges against a real uvicorn on 127.0.0.1: HEAD, /health without server paths, a 50 MB upload
without `Expect: 100-continue` gets its 413, and a bounded number of searches in flight (503 + Retry-After)."""
from __future__ import annotations

import io
import json
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")
from PIL import Image  # noqa: E402

import media_fixtures as media  # noqa: E402
from memeindex.server import create_app  # noqa: E402
from memeindex.settings import Settings  # noqa: E402

FIFTY_MB = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def index(media_index):
    return media_index


@pytest.fixture(scope="module")
def server(index):
    app = create_app(index[1], Settings.from_env())
    with media.LiveServer(app) as live:
        live.app = app
        yield live


def test_head_is_200_on_the_page_health_and_meme_routes(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        meme = c.post("/api/search", files={"image": ("f.jpg", media.jpeg(media.grace()), "image/jpeg")}).json()
        meme_id = meme["matches"][0]["id"]
        for path in ("/", "/health", f"/api/memes/{meme_id}", f"/api/memes/{meme_id}/thumb?size=64",
                     "/static/app.js"):
            got, head = c.get(path), c.head(path)
            assert head.status_code == 200, (path, head.status_code)
            assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
        assert c.head("/api/memes/0000000000000000").status_code == 404


def test_health_shows_no_server_paths(server, index):
    root, index_dir = (str(p.resolve()) for p in index)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get("/health")
    assert r.status_code == 200
    text = r.text
    assert root not in text and index_dir not in text and str(index[1]) not in text

    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value
    assert not [s for s in strings(r.json()) if s.startswith("/")]
    assert r.json()["index"]["count"] > 0  # the facts are still there


def _raw_post(url: str, head: bytes, body_chunks, timeout: float = 60) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head)
        for chunk in body_chunks:
            s.sendall(chunk)
        reply = b""
        while True:
            part = s.recv(65536)
            if not part:
                return reply
            reply += part


def test_50_mb_upload_without_expect_gets_the_413_message(server):
    chunk = b"\0" * (1024 * 1024)
    boundary = "x" * 16
    pre = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
           "Content-Type: image/jpeg\r\n\r\n").encode()
    post = f"\r\n--{boundary}--\r\n".encode()
    length = len(pre) + FIFTY_MB + len(post)
    head = (f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    reply = _raw_post(server.url, head, [pre, *([chunk] * 50), post])  # a reset raises ConnectionResetError
    status, _, body = reply.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413"), status
    assert "upload too large" in json.loads(body)["detail"]

    def chunks():  # no Content-Length at all: the counted bytes decide
        yield pre
        for _ in range(50):
            yield chunk
        yield post
    with httpx.Client(timeout=60) as c:
        r = c.post(f"{server.url}/api/search", content=chunks(),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "upload too large" in r.json()["detail"]
    with httpx.Client(timeout=10) as c:  # the server is fine afterwards
        assert c.get(f"{server.url}/health").status_code == 200


def test_searches_beyond_the_bound_get_503_at_once(index, monkeypatch):
    monkeypatch.setenv("MEMEINDEX_MAX_PENDING_SEARCHES", "2")
    app = create_app(index[1], Settings.from_env())
    service = app.state.service
    release = threading.Event()
    files = {"image": ("f.jpg", media.jpeg(media.grace()), "image/jpeg")}
    answers = []
    with media.LiveServer(app) as live:
        service._worker.submit(release.wait, 60)  # the model thread is busy: searches queue behind it

        def one():
            with httpx.Client(timeout=90) as c:
                answers.append(c.post(f"{live.url}/api/search", files=files))
        queued = [threading.Thread(target=one) for _ in range(2)]
        for t in queued:
            t.start()
        deadline = time.monotonic() + 30
        while service.pending < 2:
            assert time.monotonic() < deadline, "the two searches never reached the queue"
            time.sleep(0.02)
        with httpx.Client(base_url=live.url, timeout=90) as c:
            started = time.monotonic()
            busy = c.post("/api/search", files=files)
            waited = time.monotonic() - started
            health = c.get("/health").json()
        # A big upload to a full server: refused before its multipart body is parsed, and drained, not reset.
        boundary = "y" * 16
        pre = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
               "Content-Type: image/jpeg\r\n\r\n").encode()
        body = pre + b"\0" * (9 * 1024 * 1024) + f"\r\n--{boundary}--\r\n".encode()
        head = (f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
        raw = _raw_post(live.url, head, [body])
        release.set()
        for t in queued:
            t.join(90)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "retry" in busy.json()["detail"]
    assert waited < 10  # answered without waiting for the queue (which is blocked for 60 s)
    assert health["pending"] == 2 and health["max_pending"] == 2 and health["refused"] == 1
    status, _, rest = raw.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in status.lower() and b"retry" in rest
    assert sorted(r.status_code for r in answers) == [200, 200]  # the queued ones are served once it moves


def test_heic_upload_and_100_megapixel_upload(server):
    pillow_heif = pytest.importorskip("pillow_heif")
    heic = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(media.grace())).save(heic, quality=90)
    huge = io.BytesIO()
    Image.new("L", (10_000, 10_000), 128).save(huge, "JPEG", quality=80)  # 100 MP in about 1 MB
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/api/search", files={"image": ("me.heic", heic.getvalue(), "image/heic")})
        assert r.status_code == 200, r.text
        assert r.json()["matches"][0]["path"].startswith("grace")
        r = c.post("/api/search", files={"image": ("huge.jpg", huge.getvalue(), "image/jpeg")})
        assert r.status_code == 422 and "no face" in r.json()["detail"]  # decoded (shrunk), not refused as a bomb


def test_serve_on_a_taken_port_is_one_error_line_before_the_models_load(tmp_path):
    from click.testing import CliRunner

    from memeindex.cli import main
    from memeindex.errors import CannotListen

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--index", str(tmp_path / "none"), "--port", str(port)])
    assert result.exit_code == CannotListen.exit_code, result.output  # not uvicorn's 3 (a missing model's code)
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.output
    too_big = CliRunner().invoke(main, ["serve", "--index", str(tmp_path), "--port", "99999"])
    assert too_big.exit_code == 2 and "--port" in too_big.stderr
