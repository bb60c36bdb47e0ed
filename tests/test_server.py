"""The HTTP service against a real index built at test time: search, file routes, limits, hot reload."""
from __future__ import annotations

import http.client
import io
import logging
import re
import shutil
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import media_fixtures as media  # noqa: E402
from memeindex.server import create_app  # noqa: E402
from memeindex.settings import Settings  # noqa: E402

ID = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(scope="module")
def index(media_index):
    return media_index


@pytest.fixture(scope="module")
def client(index):
    with TestClient(create_app(index[1], Settings.from_env())) as c:
        yield c


def search(client, data: bytes, **fields):
    return client.post("/api/search", files={"image": ("face.jpg", data, "image/jpeg")},
                       data={k: str(v) for k, v in fields.items()})


def test_search_returns_top_k_with_boxes(client, index):
    r = search(client, media.jpeg(media.grace()))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["matches"]) == 3
    top = body["matches"][0]
    # The photo and its close-up crop are one template: either may come first, the other is its variant.
    assert top["path"] in ("grace-hopper.jpg", "grace-close-up.jpg")
    assert [v["path"] for v in top["variants"]] == [{"grace-hopper.jpg": "grace-close-up.jpg",
                                                      "grace-close-up.jpg": "grace-hopper.jpg"}[top["path"]]]
    assert top["variants_total"] == 1 and body["matches"][2]["variants_total"] == 0
    assert top["name"] == top["path"][:-4].replace("-", " ")
    assert top["distance"] < 0.15 and 0.9 < top["score"] <= 1.0 and not top["weak"]
    assert [m["path"] for m in body["matches"]][1] == "grace_mirrored.png"  # Grace's pictures before the astronaut
    assert body["matches"][2]["score"] < 0.5 and body["matches"][2]["weak"]
    for m in body["matches"]:
        assert ID.match(m["id"]) and not m["path"].startswith("/") and len(m["box"]) == 4
        assert m["distance"] >= 0 and m["image_url"] == f"/api/memes/{m['id']}"
        assert 0 <= m["score"] <= 1 and all(0 <= t["strength"] <= 1 for t in m["traits"])
    x0, y0, x1, y1 = body["query"]["box"]
    assert 120 < x0 < x1 < 420 and 100 < y0 < y1 < 400  # grace's face, in the upload's own pixels
    assert body["model_id"]
    assert [m["path"] for m in search(client, media.jpeg(media.grace()), k=5).json()["matches"]][:1] == [top["path"]]
    assert len(search(client, media.jpeg(media.grace()), k=5).json()["matches"]) == 5


@pytest.mark.parametrize("k", ["0", "-1", "abc", "2.5", "999"])
def test_bad_k_is_400(client, k):
    r = search(client, media.jpeg(media.grace()), k=k)
    assert r.status_code == 400 and "k" in r.json()["detail"]


def test_bad_uploads_get_clear_4xx(client):
    r = search(client, b"this is not a picture at all")
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    r = search(client, media.jpeg(media.grace())[:400])  # truncated JPEG
    assert r.status_code == 415
    r = search(client, media.jpeg(np.full((200, 300, 3), 180, np.uint8)))
    assert r.status_code == 422 and "no face" in r.json()["detail"]
    r = search(client, b"")
    assert r.status_code == 400
    r = client.post("/api/search", data={"k": "3"})
    assert r.status_code == 400 and "image" in r.json()["detail"]
    r = client.post("/api/search", content=b'{"image": 1}', headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.post("/api/search", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"})
    assert 400 <= r.status_code < 500
    assert client.get("/api/search").status_code == 405


def test_a_video_upload_is_refused_with_what_to_do_instead(client, tmp_path):
    clip = media.write_mp4(tmp_path / "clip.mp4", [(media.grace(), 0.5)]).read_bytes()
    r = search(client, clip)
    assert r.status_code == 415 and "video" in r.json()["detail"] and "memeindex query" in r.json()["detail"]


def test_upload_cap(index, monkeypatch):
    monkeypatch.setenv("MEMEINDEX_MAX_UPLOAD_BYTES", "100000")
    app = create_app(index[1], Settings.from_env(), searcher=_NoSearch())
    with TestClient(app) as c:
        r = search(c, b"\xff" * 150_000)
        assert r.status_code == 413 and "100,000" in r.json()["detail"]
        r = search(c, b"\xff" * 100_001)  # under cap + multipart slack: caught after the read
        assert r.status_code == 413

        def chunks():  # no Content-Length: the bytes themselves are counted
            for _ in range(40):
                yield b"\0" * 65536
        r = c.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413
        r = c.post("/api/search", content=b"x", headers={"content-length": "nope", "content-type": "text/plain"})
        assert r.status_code == 400


class _NoSearch:
    root = "/nonexistent"

    def search(self, *a, **k):
        raise AssertionError("an oversize upload must not reach the searcher")

    def image_file(self, meme_id):
        raise KeyError(meme_id)

    def info(self):
        return {}


def test_meme_files_by_id_only(client, index):
    root = index[0]
    matches = search(client, media.jpeg(media.astronaut()), k=3).json()["matches"]
    meme = matches[0]
    r = client.get(meme["image_url"])
    assert r.status_code == 200 and r.content == (root / meme["path"]).read_bytes()
    assert r.headers["content-type"].startswith("image/") and r.headers["x-content-type-options"] == "nosniff"
    r = client.get(f"/api/memes/{meme['id']}/thumb?size=64")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) <= 64
    assert client.get(f"/api/memes/{meme['id']}/thumb").content == client.get(meme["thumb_url"]).content
    for size in ("0", "5000", "x"):
        assert client.get(f"/api/memes/{meme['id']}/thumb?size={size}").status_code == 400


TRAVERSALS = [
    "/api/memes/0000000000000000", "/api/memes/grace-hopper.jpg", "/api/memes/GRACE", "/api/memes/%2e%2e",
    "/api/memes/..%2f..%2f..%2fetc%2fpasswd", "/api/memes/%2fetc%2fpasswd", "/api/memes/..%5c..%5cwin.ini",
    "/api/memes/2A930F977837ADEF", "/api/memes/2a930f977837adef%00", "/api/memes/../../etc/passwd",
    "/api/memes/%2e%2e%2f%2e%2e%2fetc%2fpasswd/thumb", "/api/memes/..%2fmemes%2fgrace-hopper.jpg/thumb",
    "/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fapp.py",
    "/static/%2e%2e/app.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/../../../../etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_refused(client, path):
    r = client.get(path)
    assert r.status_code in (400, 404, 405), (path, r.status_code)
    assert b"root:" not in r.content and b"import" not in r.content


def test_traversal_raw_socket(index):
    """The same attempts as raw request lines (no client-side normalisation of '..') to a live server."""
    with media.LiveServer(create_app(index[1], Settings.from_env(), searcher=_NoSearch())) as server:
        for path in TRAVERSALS + ["/api/memes/../../../../etc/passwd", "/static/../../../../../../etc/passwd",
                                  "/static/../service.py", "/static/../__init__.py"]:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.putrequest("GET", path, skip_accept_encoding=True)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status in (400, 404, 405), (path, resp.status)
            assert b"root:" not in body and b"import" not in body


def test_page_static_health_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text and client.get(asset).status_code == 200
    assert "getUserMedia" in client.get("/static/app.js").text
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["index"]["count"] == 6
    assert "/api/search" in client.get("/openapi.json").json()["paths"]  # the schema; no /docs (test_surface)


def test_hot_reload_keeps_serving(index, tmp_path):
    from memeindex.indexer import build

    root = tmp_path / "memes"
    shutil.copytree(index[0], root)
    (root / "astronaut-mirrored.png").unlink()
    (root / "astronaut_portrait.jpg").unlink()
    build(root, tmp_path / "index", workers=1)
    with TestClient(create_app(tmp_path / "index", Settings.from_env(), reload_interval=0)) as c:
        query = media.jpeg(media.astronaut()[:, ::-1])
        before = search(c, query, k=3).json()["matches"]
        assert "astronaut-mirrored.png" not in [m["path"] for m in before]
        statuses, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                statuses.append(search(c, query, k=3).status_code)
        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            Image.fromarray(np.ascontiguousarray(media.astronaut()[:, ::-1])).save(root / "new-meme.png")
            build(root, tmp_path / "index", workers=1)
        finally:
            stop.set()
            thread.join()
        assert statuses and set(statuses) == {200}
        after = search(c, query, k=3).json()["matches"]
        assert after[0]["path"] == "new-meme.png" and after[0]["distance"] < 0.05
        assert c.get(after[0]["image_url"]).status_code == 200
        assert c.get("/health").json()["index"]["count"] == 5
        (root / "new-meme.png").unlink()  # another nightly build; no searches: the watcher picks it up
        time.sleep(1.1)  # generation folders are named by the second (indexdir.new_generation)
        build(root, tmp_path / "index", workers=1)
        deadline = time.monotonic() + 10
        while c.get("/health").json()["index"]["count"] != 4:
            assert time.monotonic() < deadline, "the new index was not picked up"
            time.sleep(0.2)
        assert c.get(after[0]["image_url"]).status_code == 404


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb in a few bytes."""
    import struct
    import zlib

    out = io.BytesIO()
    Image.new("L", (1, 1)).save(out, "PNG")
    data = bytearray(out.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


ODD = {
    "1x1": _encoded(Image.new("RGB", (1, 1)), "PNG"),
    "sliver": _encoded(Image.new("RGB", (4000, 3)), "PNG"),
    "grey": _encoded(Image.fromarray(media.grace()).convert("L"), "JPEG"),
    "rgba": _encoded(Image.fromarray(media.grace()).convert("RGBA"), "PNG"),
    "cmyk": _encoded(Image.fromarray(media.grace()).convert("CMYK"), "JPEG"),
    "gif": _encoded(Image.fromarray(media.grace()).convert("P"), "GIF"),
    "16bit": _encoded(Image.fromarray((np.asarray(Image.fromarray(media.grace()).convert("L"), np.uint16) * 257)),
                      "PNG"),
}


@pytest.mark.parametrize("kind", sorted(ODD))
def test_odd_images_never_500(client, kind):
    r = search(client, ODD[kind])
    assert r.status_code in (200, 422), (kind, r.status_code, r.text)
    if kind in ("grey", "rgba", "cmyk"):
        assert r.status_code == 200 and r.json()["matches"][0]["path"] in ("grace-hopper.jpg", "grace-close-up.jpg")


def test_pixel_bomb_is_413(client):
    r = search(client, _png_claiming(60000, 60000))
    assert r.status_code == 413 and "too large" in r.json()["detail"]


def test_an_index_removed_under_the_server_is_served_on_with_one_log_line(index, tmp_path, caplog):
    shutil.copytree(index[1], tmp_path / "index")
    with TestClient(create_app(tmp_path / "index", Settings.from_env(), reload_interval=0)) as c:
        query = media.jpeg(media.grace())
        before = search(c, query, k=1).json()["matches"]
        (tmp_path / "index" / "CURRENT").unlink()  # someone removed the index (rm -rf, a cleanup script)
        with caplog.at_level(logging.WARNING, logger="memeindex.server.service"):
            after = search(c, query, k=1)
        assert after.status_code == 200 and after.json()["matches"] == before  # the loaded generation serves on
    (record,) = [r for r in caplog.records if "reload failed" in r.getMessage()]
    assert "no index at" in record.getMessage() and record.exc_info is None  # the reason, not a traceback
