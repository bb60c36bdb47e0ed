"""`memeindex download` against a loopback HTTP server started by the test (never the network).

The server serves a get_memes answer of imgflip's shape, images made at test time from real photos, and the bad
cases: 404, 429 then 200, a truncated body, HTML instead of an image, a 50 MB body, a server slower than the
timeout, redirects to a link-local address and to file://.
"""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from memeindex import download as dl
from memeindex.atomicfile import STALE_AFTER_S
from memeindex.cli import main
from memeindex.errors import DownloadFailed, SourceUnreachable
from memeindex.models import sha256_file
from memeindex.settings import Settings

# Small waits so the bad cases cost milliseconds; the timeout still leaves a loaded 2-core machine room.
FAST = {"MEMEINDEX_DOWNLOAD_TIMEOUT": "1.5", "MEMEINDEX_DOWNLOAD_INTERVAL": "0", "MEMEINDEX_DOWNLOAD_BACKOFF": "0.01",
        "MEMEINDEX_DOWNLOAD_MAX_WAIT": "0.05", "MEMEINDEX_DOWNLOAD_RETRIES": "1"}
LOOPBACK = "127.0.0.1/32"


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, fmt)
    return buf.getvalue()


class MemeServer:
    """A loopback HTTP server: `routes` maps a path to a function(handler); `hits` counts requests per path."""

    def __init__(self):
        self.routes: dict = {}
        self.hits: Counter = Counter()
        self.user_agents: set = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] += 1
                server.user_agents.add(self.headers.get("User-Agent", ""))
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up on purpose (size cap, timeout)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path


def send(handler, body: bytes, content_type="image/jpeg", status=200, headers=(), length=None):
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    for key, value in headers:
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture(scope="module")
def images():
    import media_fixtures as media
    import matplotlib

    grace_file = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return {"grace": grace_file.read_bytes(),  # the real photo, byte for byte
            "astronaut": _encode(media.astronaut(), "PNG"),
            "mirrored": _encode(media.grace()[:, ::-1], "JPEG"),
            "wall": _encode(np.full((120, 160, 3), 200, np.uint8), "PNG")}


@pytest.fixture
def server(images):
    s = MemeServer()
    busy_seen = Counter()
    release_hang = threading.Event()
    s.release_hang = release_hang

    def busy(h):  # 429 with Retry-After the first time, then the image
        busy_seen["n"] += 1
        if busy_seen["n"] == 1:
            send(h, b"slow down", "text/plain", status=429, headers=[("Retry-After", "1")])
        else:
            send(h, images["mirrored"])

    def truncated(h):  # promises more than it sends, then closes
        body = images["mirrored"]
        send(h, body[: len(body) // 2], length=len(body))

    def huge(h):  # 50 MB of "JPEG" streamed without a length: the cap must stop the client, not the server
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.end_headers()
        chunk = b"\xff\xd8\xff\xe0" + bytes(1024 * 1024 - 4)
        for _ in range(50):
            h.wfile.write(chunk)
            chunk = bytes(1024 * 1024)

    def slow(h):
        time.sleep(5)
        send(h, images["wall"], "image/png")

    def hang(h):  # answers only once the test releases it
        release_hang.wait(20)
        send(h, images["wall"], "image/png")

    def redirect(location):
        return lambda h: send(h, b"", "text/plain", status=302, headers=[("Location", location)])

    s.routes.update({
        "/img/grace.jpg": lambda h: send(h, images["grace"]),
        "/img/astronaut.png": lambda h: send(h, images["astronaut"], "image/png"),
        "/img/wall.png": lambda h: send(h, images["wall"], "image/png"),
        "/img/busy.jpg": busy,
        "/img/truncated.jpg": truncated,
        "/img/error-page.jpg": lambda h: send(h, b"<!DOCTYPE html><html><body>Not found, sorry</body></html>",
                                              "text/html"),
        "/img/huge.jpg": huge,
        "/img/slow.jpg": slow,
        "/img/hang.png": hang,
        "/img/moved.jpg": redirect("/img/grace.jpg"),
        "/img/to-link-local.jpg": redirect("http://169.254.169.254/latest/meta-data"),
        "/img/to-file.jpg": redirect("file:///etc/passwd"),
        "/img/unavailable.jpg": lambda h: send(h, b"down for maintenance", "text/plain", status=503),
        "/img/huge-declared.jpg": lambda h: send(h, b"\xff\xd8\xff\xe0", length=50 * 1024 * 1024),
    })
    memes = [{"id": "181913649", "name": "Drake Hotline Bling", "url": s.url("/img/grace.jpg"), "width": 1200,
              "height": 1200, "box_count": 2},
             {"id": "87743020", "name": "Two Buttons", "url": s.url("/img/astronaut.png"), "width": 600,
              "height": 908, "box_count": 3},
             {"id": "112126428", "name": "Distracted Boyfriend", "url": s.url("/img/wall.png"), "width": 1200,
              "height": 800, "box_count": 3},
             {"id": "131087935", "name": "Running Away Balloon", "url": s.url("/img/missing.jpg"), "width": 761,
              "height": 1024, "box_count": 5}]
    s.routes["/get_memes"] = lambda h: send(h, json.dumps({"success": True, "data": {"memes": memes}}).encode(),
                                            "application/json")
    s.thread.start()
    yield s
    release_hang.set()
    s.httpd.shutdown()
    s.httpd.server_close()


def run(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env={**FAST, **(env or {})})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def index_rows(dest: Path) -> list[dict]:
    with open(dest / dl.INDEX_FILE, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def leftovers(dest: Path) -> list[str]:
    return [p.name for p in dest.iterdir() if ".part-" in p.name]


def write_list(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_urls_fetches_good_refuses_bad_resumes_and_builds(tmp_path, server, images):
    good_lines = ["# good ones",
                  f"{server.url('/img/grace.jpg')}\tGrace Hopper",
                  f"{server.url('/img/astronaut.png')} The Astronaut",
                  server.url("/img/busy.jpg"),
                  server.url("/img/moved.jpg") + "  moved grace"]
    listing = write_list(tmp_path / "memes.txt", [
        *good_lines,
        "",
        "# bad ones",
        server.url("/img/missing.jpg"),
        server.url("/img/truncated.jpg"),
        server.url("/img/error-page.jpg"),
        server.url("/img/huge.jpg"),
        server.url("/img/huge-declared.jpg"),
        server.url("/img/unavailable.jpg"),
        server.url("/img/slow.jpg"),
        server.url("/img/to-link-local.jpg"),
        server.url("/img/to-file.jpg"),
        "ftp://example.org/meme.jpg",
    ])
    dest = tmp_path / "memes"
    first = run("download", "urls", listing, dest, "--allow-private", LOOPBACK, "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    by_url = {f["url"].rsplit("/", 1)[-1]: f for f in report["files"]}
    assert (report["downloaded"], report["skipped"], report["failed"]) == (4, 0, 10)

    good = {"grace.jpg": "001-grace-hopper.jpg", "astronaut.png": "002-the-astronaut.png",
            "busy.jpg": "003-busy.jpg", "moved.jpg": "004-moved-grace.jpg"}
    for url_name, file_name in good.items():
        assert by_url[url_name]["status"] == "downloaded" and by_url[url_name]["file"] == file_name
    assert (dest / "001-grace-hopper.jpg").read_bytes() == images["grace"]
    assert (dest / "002-the-astronaut.png").read_bytes() == images["astronaut"]
    assert (dest / "003-busy.jpg").read_bytes() == images["mirrored"]
    assert server.hits["/img/busy.jpg"] == 2  # 429, then the image after the wait

    reasons = {name: by_url[name]["reason"] for name in by_url if by_url[name]["status"] == "failed"}
    assert "HTTP 404" in reasons["missing.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "HTML" in reasons["error-page.jpg"]
    assert "over the 20,971,520-byte cap (stopped reading)" in reasons["huge.jpg"]  # streamed, cut off
    assert "52,428,800 bytes is over" in reasons["huge-declared.jpg"]  # refused on its Content-Length
    assert "HTTP 503" in reasons["unavailable.jpg"] and "gave up after 2 tries" in reasons["unavailable.jpg"]
    assert server.hits["/img/unavailable.jpg"] == 2  # MEMEINDEX_DOWNLOAD_RETRIES=1: one retry
    assert "no answer" in reasons["slow.jpg"]
    assert "169.254.169.254" in reasons["to-link-local.jpg"]
    assert "not an http(s) URL" in reasons["to-file.jpg"] and "not an http(s) URL" in reasons["meme.jpg"]
    for name in reasons:
        assert f"skipping {by_url[name]['url']}: " in first.stderr  # one line each on stderr
    assert "Traceback" not in first.stderr
    assert all(ua.startswith("memeindex/") for ua in server.user_agents)

    # Nothing half-written: the folder holds the four images and the index, nothing else.
    assert sorted(p.name for p in dest.iterdir()) == sorted([*good.values(), dl.INDEX_FILE])
    rows = index_rows(dest)
    assert [r["file"] for r in rows] == list(good.values())
    for row in rows:
        path = dest / row["file"]
        assert row["sha256"] == sha256_file(path) and int(row["size"]) == path.stat().st_size
    assert rows[0]["name"] == "Grace Hopper" and rows[0]["url"] == server.url("/img/grace.jpg")

    # A second run requests nothing it already has (the good ones only: the bad ones would cost the timeout again).
    listing = write_list(tmp_path / "good.txt", good_lines)
    hits_before = Counter(server.hits)
    again = run("download", "urls", listing, dest, "--allow-private", LOOPBACK)
    assert again.exit_code == 0, again.output
    assert "downloaded=0 skipped=4 failed=0" in again.stdout
    for path in ("/img/grace.jpg", "/img/astronaut.png", "/img/busy.jpg", "/img/moved.jpg"):
        assert server.hits[path] == hits_before[path], path

    # A damaged file is fetched again.
    (dest / "002-the-astronaut.png").write_bytes(b"not the astronaut")
    third = json.loads(run("download", "urls", listing, dest, "--allow-private", LOOPBACK, "--json").stdout)
    assert (third["downloaded"], third["skipped"]) == (1, 3)
    assert (dest / "002-the-astronaut.png").read_bytes() == images["astronaut"]

    # And the folder is ready to index.
    index = tmp_path / "index"
    built = run("build", dest, "--index", index, "--json", "--workers", "1")
    assert built.exit_code == 0, built.output
    summary = json.loads(built.stdout)
    assert (summary["images"], summary["failed"]) == (4, 0)  # index.tsv is not an image: not counted as failed
    assert summary["faces"] >= 4  # Grace twice, mirrored Grace, the astronaut
    hits = json.loads(run("query", dest / "001-grace-hopper.jpg", "--index", index, "--json", "-k", "4").stdout)
    assert hits["matches"][0]["path"] in ("001-grace-hopper.jpg", "004-moved-grace.jpg")


def test_interrupted_download_resumes_without_refetching(tmp_path, server):
    listing = write_list(tmp_path / "list.txt", [server.url(p) for p in
                                                ("/img/grace.jpg", "/img/astronaut.png", "/img/wall.png",
                                                 "/img/hang.png", "/img/busy.jpg")])
    dest = tmp_path / "memes"
    env = {**os.environ, **FAST, "MEMEINDEX_DOWNLOAD_TIMEOUT": "30"}
    cmd = [sys.executable, "-m", "memeindex", "download", "urls", str(listing), str(dest), "--allow-private", LOOPBACK]
    # A job started in the background by a non-interactive shell inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: the child must get the default disposition for Ctrl-C to reach it.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while server.hits["/img/hang.png"] == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert server.hits["/img/hang.png"] == 1, proc.stderr.read() if proc.poll() is not None else "no request"
        assert leftovers(dest)  # the hanging file is being written to a temp file
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert leftovers(dest) == []  # the interrupted file left nothing behind
    assert [r["file"] for r in index_rows(dest)] == ["001-grace.jpg", "002-astronaut.png", "003-wall.png"]

    server.release_hang.set()
    resumed = json.loads(run("download", "urls", listing, dest, "--allow-private", LOOPBACK, "--json").stdout)
    assert (resumed["downloaded"], resumed["skipped"], resumed["failed"]) == (2, 3, 0)
    assert [server.hits[p] for p in ("/img/grace.jpg", "/img/astronaut.png", "/img/wall.png")] == [1, 1, 1]
    assert server.hits["/img/hang.png"] == 2
    assert sorted(p.name for p in dest.iterdir()) == ["001-grace.jpg", "002-astronaut.png", "003-wall.png",
                                                     "004-hang.png", "005-busy.jpg", "index.tsv"]


def test_imgflip_templates(tmp_path, server, images):
    dest = tmp_path / "imgflip"
    env = {"MEMEINDEX_IMGFLIP_API": server.url("/get_memes")}
    result = run("download", "imgflip", dest, "--allow-private", LOOPBACK, "--json", env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["downloaded"], report["failed"]) == (3, 1)
    assert sorted(p.name for p in dest.iterdir()) == ["001-drake-hotline-bling.jpg", "002-two-buttons.png",
                                                     "003-distracted-boyfriend.png", "index.tsv"]
    rows = index_rows(dest)
    assert list(rows[0]) == list(dl.INDEX_COLUMNS)
    assert [(r["rank"], r["name"]) for r in rows] == [("1", "Drake Hotline Bling"), ("2", "Two Buttons"),
                                                      ("3", "Distracted Boyfriend")]
    assert rows[0]["sha256"] == sha256_file(dest / "001-drake-hotline-bling.jpg")
    assert (dest / "001-drake-hotline-bling.jpg").read_bytes() == images["grace"]

    limited = run("download", "imgflip", tmp_path / "top2", "--allow-private", LOOPBACK, "--limit", "2", env=env)
    assert limited.exit_code == 0 and "downloaded=2 skipped=0 failed=0" in limited.stdout


def test_offline_is_one_clear_line_and_a_documented_code(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused, as offline as it gets here
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    dest = tmp_path / "memes"
    api = run("download", "imgflip", dest, "--allow-private", LOOPBACK,
              env={"MEMEINDEX_IMGFLIP_API": closed + "/get_memes"})
    assert api.exit_code == SourceUnreachable.exit_code
    assert api.stderr.startswith("memeindex: error: cannot reach") and len(api.stderr.splitlines()) == 1
    assert not dest.exists()

    listing = write_list(tmp_path / "list.txt", [f"{closed}/{n}.jpg" for n in range(10)])
    urls = run("download", "urls", listing, dest, "--allow-private", LOOPBACK)
    assert urls.exit_code == SourceUnreachable.exit_code and "offline or blocked" in urls.stderr
    assert urls.stderr.count("skipping") == dl._OFFLINE_AFTER - 1  # it stops after the first few, not all ten
    proxied = run("download", "urls", listing, dest, "--allow-private", LOOPBACK,
                  env={"http_proxy": "http://proxy.invalid:3128", "no_proxy": ""})  # behind a proxy: say it is unused
    assert proxied.exit_code == SourceUnreachable.exit_code and "HTTP_PROXY is set" in proxied.stderr
    bypassed = run("download", "urls", listing, dest, "--allow-private", LOOPBACK,
                   env={"http_proxy": "http://proxy.invalid:3128", "no_proxy": "127.0.0.1"})
    assert "PROXY" not in bypassed.stderr


def test_a_dead_host_is_given_up_on_and_the_rest_fetched(tmp_path, server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    urls = [server.url("/img/grace.jpg"), *[f"{dead}/{n}.jpg" for n in range(5)], server.url("/img/wall.png")]
    result = run("download", "urls", write_list(tmp_path / "l.txt", urls), tmp_path / "m", "--allow-private",
                 LOOPBACK, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and (report["downloaded"], report["failed"]) == (2, 5)
    reasons = [f["reason"] for f in report["files"][1:6]]
    assert all("Connection refused" in r for r in reasons[:dl._OFFLINE_AFTER])
    assert all("not tried again" in r for r in reasons[dl._OFFLINE_AFTER:])

    # The API answering does not prove the image host works: a dead image host is "offline", said at once.
    memes = [{"id": str(n), "name": f"m{n}", "url": f"{dead}/{n}.jpg"} for n in range(20)]
    server.routes["/dead_memes"] = lambda h: send(h, json.dumps({"success": True, "data": {"memes": memes}}).encode(),
                                                  "application/json")
    flip = run("download", "imgflip", tmp_path / "f", "--allow-private", LOOPBACK,
               env={"MEMEINDEX_IMGFLIP_API": server.url("/dead_memes")})
    assert flip.exit_code == SourceUnreachable.exit_code and "offline or blocked" in flip.stderr


def test_private_addresses_are_refused_by_default(tmp_path, server):
    listing = write_list(tmp_path / "list.txt", [server.url("/img/grace.jpg"), "http://localhost/x.jpg"])
    result = run("download", "urls", listing, tmp_path / "memes", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == DownloadFailed.exit_code and "nothing usable arrived" in result.stderr
    assert [f["status"] for f in report["files"]] == ["failed", "failed"]
    assert all("private, loopback or link-local" in f["reason"] for f in report["files"])
    assert server.hits["/img/grace.jpg"] == 0  # refused before connecting


def test_imgflip_answers_that_are_not_its_api(tmp_path, server):
    server.routes["/html"] = lambda h: send(h, b"<html>captive portal</html>", "text/html")
    server.routes["/fail"] = lambda h: send(h, b'{"success": false, "error_message": "quota"}', "application/json")
    for path, words in (("/html", "did not answer JSON"), ("/fail", "quota")):
        result = run("download", "imgflip", tmp_path / "m", "--allow-private", LOOPBACK,
                     env={"MEMEINDEX_IMGFLIP_API": server.url(path)})
        assert result.exit_code == DownloadFailed.exit_code and words in result.stderr, result.output


def test_retry_waits():
    assert dl.retry_wait(0, 1.0, backoff=0.5, max_wait=30) == 1.0  # the server's word
    assert dl.retry_wait(0, 3600.0, backoff=0.5, max_wait=30) == 30  # capped
    assert 0.5 <= dl.retry_wait(0, None, backoff=0.5, max_wait=30) <= 0.625
    assert 2.0 <= dl.retry_wait(2, None, backoff=0.5, max_wait=30) <= 2.5  # doubles
    assert dl.parse_retry_after("120") == 120.0
    assert dl.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == pytest.approx(60.0)
    assert dl.parse_retry_after("soon") is None and dl.parse_retry_after(None) is None


def test_url_list_names_and_stale_temp_files(tmp_path):
    listing = write_list(tmp_path / "l.txt", ["  # comment", "https://i.imgflip.com/30b1gx.jpg",
                                              "https://e.org/a/Big%20Smile.png\tBig smile: the sequel",
                                              "https://e.org/x.gif   Überraschung 2"])
    assert [(e.rank, e.name) for e in dl.read_url_list(listing)] == [
        (1, "30b1gx"), (2, "Big smile: the sequel"), (3, "Überraschung 2")]
    assert [dl._slug(e.name) for e in dl.read_url_list(listing)] == ["30b1gx", "big-smile-the-sequel",
                                                                     "überraschung-2"]
    with pytest.raises(Exception, match="holds no URL"):
        dl.read_url_list(write_list(tmp_path / "empty.txt", ["# nothing"]))

    from test_atomicfile import dead_pid

    dest = tmp_path / "d"
    dest.mkdir()
    (dest / f".001-x.part-{dead_pid()}").write_bytes(b"half")  # left by a killed run
    (dest / f".002-y.part-{os.getppid()}").write_bytes(b"live")  # a running process's
    reused = dest / f".003-z.part-{os.getppid()}"  # a running PID, but too old to be its: PIDs are reused
    reused.write_bytes(b"old")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(reused, (old, old))
    dl.download([], dest, Settings.from_env())
    assert leftovers(dest) == [f".002-y.part-{os.getppid()}"]


def test_make_run_downloads_imgflip_and_falls_back_offline(tmp_path, server):
    """scripts/meme_folder.py, which `make run` asks for its folder: the download, an earlier one, else the demo."""
    import socket

    script = Path(__file__).resolve().parents[1] / "scripts" / "meme_folder.py"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/get_memes"
    folders = ["--imgflip-dir", str(tmp_path / "imgflip"), "--demo-dir", str(tmp_path / "demo")]

    def choose(api: str, *extra: str) -> subprocess.CompletedProcess:
        env = {**os.environ, **FAST, "MEMEINDEX_IMGFLIP_API": api, "MEMEINDEX_DOWNLOAD_ALLOW_PRIVATE": LOOPBACK}
        return subprocess.run([sys.executable, str(script), "imgflip", *folders, *extra], env=env,
                              capture_output=True, text=True, timeout=120)

    online = choose(server.url("/get_memes"))
    assert online.stdout.strip() == str(tmp_path / "imgflip"), online.stderr
    assert "downloaded=3 skipped=0 failed=1" in online.stderr
    offline_later = choose(closed)
    assert offline_later.stdout.strip() == str(tmp_path / "imgflip") and "earlier download" in offline_later.stderr
    offline_first = choose(closed, "--imgflip-dir", str(tmp_path / "never"))
    assert offline_first.stdout.strip() == str(tmp_path / "demo"), offline_first.stderr
    assert "offline?" in offline_first.stderr and len(list((tmp_path / "demo").glob("*.jpg"))) >= 3


def test_https_is_verified_against_the_host_name(tmp_path, monkeypatch, images):
    """The connection goes to the checked address, yet TLS still verifies the certificate for the URL's host."""
    import shutil
    import ssl

    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    tls = MemeServer()
    tls.routes["/img/grace.jpg"] = lambda h: send(h, images["grace"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    tls.httpd.socket = context.wrap_socket(tls.httpd.socket, server_side=True)
    tls.thread.start()
    try:
        port = tls.httpd.server_address[1]
        listing = write_list(tmp_path / "l.txt", [f"https://localhost:{port}/img/grace.jpg"])
        allow = "127.0.0.1/32,::1/128"
        untrusted = json.loads(run("download", "urls", listing, tmp_path / "a", "--allow-private", allow,
                                   "--json").stdout)
        assert "TLS failed" in untrusted["files"][0]["reason"]  # a self-signed certificate is not trusted

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now it is
        trusted = json.loads(run("download", "urls", listing, tmp_path / "b", "--allow-private", allow,
                                 "--json").stdout)
        assert trusted["downloaded"] == 1, trusted
        assert (tmp_path / "b" / "001-grace.jpg").read_bytes() == images["grace"]

        wrong_name = write_list(tmp_path / "w.txt", [f"https://127.0.0.1:{port}/img/grace.jpg"])
        mismatch = json.loads(run("download", "urls", wrong_name, tmp_path / "c", "--allow-private", allow,
                                  "--json").stdout)
        assert "TLS failed" in mismatch["files"][0]["reason"]  # the certificate names localhost, not the IP
    finally:
        tls.httpd.shutdown()
        tls.httpd.server_close()


def test_a_resolver_that_never_answers_is_offline_within_the_connect_limit(tmp_path, monkeypatch):
    """A firewalled DNS stalls getaddrinfo for tens of seconds; the download says offline after a few instead."""
    import socket

    release = threading.Event()

    def stalled_getaddrinfo(*args, **kwargs):  # what a resolver behind a firewall does
        release.wait(60)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", stalled_getaddrinfo)
    monkeypatch.setattr(dl, "_CONNECT_TIMEOUT", 0.2)
    try:
        result = run("download", "imgflip", tmp_path / "m", env={"MEMEINDEX_IMGFLIP_API": "https://imgflip.invalid/x"})
    finally:
        release.set()
    assert result.exit_code == SourceUnreachable.exit_code
    assert "no answer from DNS within 0.2 s" in result.stderr


def test_an_oversized_body_is_streamed_not_held(tmp_path, server):
    """50 MB with no Content-Length: the client reads up to the cap in small chunks and never holds the body."""
    import tracemalloc

    settings = Settings.from_env(download_allow_private=LOOPBACK, download_interval=0.0, download_retries=0)
    tracemalloc.start()
    try:
        summary = dl.download([dl.Entry(1, "huge", server.url("/img/huge.jpg"))], tmp_path / "m", settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.failed == 1 and "stopped reading" in summary.files[0].reason
    assert peak < settings.download_max_bytes / 4, f"peak {peak:,} bytes"
    assert list((tmp_path / "m").iterdir()) == []  # the partial file is gone
