"""Get memes to index: imgflip's popular templates, or any list of image URLs, fetched politely and safely.

Polite: a User-Agent naming memeindex, one request at a time and at most one every `download_interval` seconds,
retries with exponential backoff on 429/5xx/timeouts/truncated bodies (Retry-After honoured, capped at
`download_max_wait`). Safe: http(s) only; every host is resolved and refused when any of its addresses is
private, loopback, link-local or otherwise not global (unless `download_allow_private` names its network), and
the connection goes to the address that was checked, so DNS cannot swap it in between; redirects are followed by
hand and checked hop by hop; bodies are streamed under a size cap, recognised by their signature before more than
a chunk is kept, decoded by the one decoder, written to a temp file and renamed into place. Resumable: `index.tsv`
records every file with its size and sha256, and a file that still matches is skipped without a request.
"""
from __future__ import annotations

import csv
import email.utils
import hashlib
import http.client
import ipaddress
import itertools
import json
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

from . import __version__, formats
from .atomicfile import remove_stale_temps, replacing
from .errors import BadUrlList, DownloadFailed, ImageTooLarge, NotAnImage, SourceUnreachable
from .models import sha256_file
from .settings import Settings

log = logging.getLogger(__name__)

USER_AGENT = f"memeindex/{__version__} (meme folder downloader; Python http.client)"
INDEX_FILE = "index.tsv"
INDEX_COLUMNS = ("rank", "file", "name", "url", "sha256", "size")
_PART = ".part-"  # temp files are .<name>.part-<pid>: removed on any failure, and by the next run after a kill
_MAX_REDIRECTS = 5
_CONNECT_TIMEOUT = 5.0  # connecting takes milliseconds when the network works: fail fast when it does not
_OFFLINE_AFTER = 3  # connection failures before any server answered: the network is down, stop saying it per file
_API_MAX_BYTES = 5 * 1024 * 1024
_DEADLINE_TIMEOUTS = 8  # a whole file may take this many `download_timeout`s (a server trickling bytes)
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Entry:
    rank: int  # 1-based position in the source list; the file name starts with it
    name: str
    url: str


@dataclass
class FileResult:
    rank: int
    url: str
    name: str
    status: str  # "downloaded", "skipped" (already present and intact) or "failed"
    file: str = ""  # name inside DEST
    reason: str = ""  # why it failed
    sha256: str = ""
    size: int = 0


@dataclass
class DownloadSummary:
    dest: str
    downloaded: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    files: list[FileResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --- the public API --------------------------------------------------------------------------------------------

def download_imgflip(dest: Path, settings: Settings, limit: int | None = None,
                     progress: bool = False) -> DownloadSummary:
    """imgflip's popular templates (`settings.imgflip_api`) into `dest`; the first `limit` only when given."""
    client = _Client(settings)
    entries = imgflip_entries(settings, client)
    return download(entries[:limit] if limit else entries, dest, settings, progress=progress, client=client)


def download_urls(url_list: Path, dest: Path, settings: Settings, progress: bool = False) -> DownloadSummary:
    """Every image URL listed in `url_list` (one per line, optional name after whitespace) into `dest`."""
    return download(read_url_list(url_list), dest, settings, progress=progress)


def imgflip_entries(settings: Settings, client: _Client | None = None) -> list[Entry]:
    """The templates imgflip's get_memes API lists, most popular first.

    SourceUnreachable when it cannot be reached at all, DownloadFailed when it answers something else.
    """
    client = client or _Client(settings)
    api = settings.imgflip_api
    try:
        body = _retrying(settings, api, lambda: _fetch_bytes(client, api, _API_MAX_BYTES))
    except _NoConnection as exc:
        raise SourceUnreachable(f"cannot reach {api}: {exc} (offline or blocked?){_proxy_note(api)}") from None
    except _Refused as exc:
        raise DownloadFailed(f"{api}: {exc}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise DownloadFailed(f"{api} did not answer JSON (a login or captive portal page?)") from None
    if not isinstance(answer, dict) or answer.get("success") is not True:
        message = answer.get("error_message", "") if isinstance(answer, dict) else ""
        raise DownloadFailed(f"{api} answered no success {message}".rstrip())
    memes = (answer.get("data") or {}).get("memes") if isinstance(answer.get("data"), dict) else None
    if not isinstance(memes, list):
        raise DownloadFailed(f"{api} answered JSON without data.memes")
    entries = []
    for rank, meme in enumerate(memes, 1):
        if not isinstance(meme, dict) or not isinstance(meme.get("url"), str):
            log.warning("skipping imgflip entry %d: no url", rank)
            continue
        entries.append(Entry(rank=rank, name=str(meme.get("name") or meme.get("id") or "meme"), url=meme["url"]))
    return entries


def read_url_list(path: Path) -> list[Entry]:
    """One URL a line, optionally followed by whitespace and a name; blank lines and `#` comments skipped."""
    entries = []
    for line in Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines():  # -sig: an editor's BOM
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        url, _, name = line.partition("\t") if "\t" in line else line.partition(" ")
        url, name = url.strip(), name.strip()
        entries.append(Entry(rank=len(entries) + 1, name=name or _name_from_url(url), url=url))
    if not entries:
        raise BadUrlList(f"{path} holds no URL (one a line, an optional name after a space or a tab)")
    return entries


def read_index(dest: Path) -> dict[str, dict]:
    """The rows of DEST/index.tsv by source URL ({} when there is none or it is unreadable)."""
    path = Path(dest) / INDEX_FILE
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f, delimiter="\t") if all(r.get(c) for c in INDEX_COLUMNS)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return {}
    return {r["url"]: {c: r[c] for c in INDEX_COLUMNS} for r in rows}


def download(entries: list[Entry], dest: Path, settings: Settings, progress: bool = False,
             client: _Client | None = None) -> DownloadSummary:
    """Fetch `entries` into `dest` as `<rank>-<name>.<ext>`, recording each file in `dest/index.tsv`.

    A file already recorded with the same URL, size and sha256 is skipped without a request. A URL that cannot
    give an image is counted as failed with its reason (and logged as `skipping URL: reason`); the run goes on.
    SourceUnreachable when the first connections all fail: the network is down, not the files.
    """
    from tqdm import tqdm

    started = time.monotonic()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(dest)
    client = client or _Client(settings)
    client.answered = False  # the API answering says nothing about the image host
    rows = read_index(dest)
    width = max(3, len(str(max((e.rank for e in entries), default=0))))
    summary = DownloadSummary(dest=str(dest))
    no_connection = 0
    bar = tqdm(total=len(entries), desc="downloading", unit="file", disable=not progress or not entries, leave=False)
    try:
        for entry in entries:
            result = FileResult(rank=entry.rank, url=entry.url, name=entry.name, status="failed")
            row = rows.get(entry.url)
            if row is not None and _intact(dest, row):
                result.status, result.file, result.sha256, result.size = "skipped", row["file"], row["sha256"], \
                    int(row["size"])
            else:
                try:
                    result.file, result.sha256, result.size = _fetch_file(client, entry, dest, width, settings)
                    result.status = "downloaded"
                except _NoConnection as exc:
                    result.reason = str(exc)
                    no_connection += 1
                    if no_connection >= _OFFLINE_AFTER and not client.answered:
                        raise SourceUnreachable(f"the first {no_connection} downloads could not connect "
                                                f"({exc}): offline or blocked?{_proxy_note(entry.url)}") from None
                except _Refused as exc:
                    result.reason = str(exc)
            if result.status == "failed":
                log.warning("skipping %s: %s", entry.url, result.reason)
            else:
                # One row per file: a new file under a name an older row held replaces that row.
                rows = {url: r for url, r in rows.items() if r["file"] != result.file or url == entry.url}
                rows[entry.url] = {"rank": str(entry.rank), "file": result.file, "name": _clean(entry.name),
                                   "url": entry.url, "sha256": result.sha256, "size": str(result.size)}
                if result.status == "downloaded" or row != rows[entry.url]:
                    _write_index(dest, rows)
            setattr(summary, result.status, getattr(summary, result.status) + 1)
            summary.files.append(result)
            bar.update(1)
    finally:
        bar.close()
    summary.seconds = time.monotonic() - started
    return summary


# --- one file ----------------------------------------------------------------------------------------------------

class _Refused(Exception):
    """This URL gives no image (HTTP error, not an image, too big, unsafe address...); the reason says why."""


class _Transient(Exception):
    """Worth another try after a wait (429, 5xx, timeout, truncated body)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def _proxy_note(url: str) -> str:
    """What to add to 'cannot connect' when the environment names a proxy for `url`: this client never uses one
    (each host's own address is checked against private networks, which a proxy would hide)."""
    import urllib.request

    scheme, host = urlsplit(url).scheme.lower(), urlsplit(url).hostname or ""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return ""
    return (f"; {scheme.upper()}_PROXY is set, but memeindex download connects directly, never through a proxy: "
            "fetch the files with a tool that uses it (curl, wget) and `memeindex build` their folder")


class _NoConnection(Exception):
    """Nothing answered: name resolution failed, the connection was refused, unreachable or timed out."""


def _fetch_file(client: _Client, entry: Entry, dest: Path, width: int, settings: Settings) -> tuple[str, str, int]:
    """(file name, sha256, size) of the verified image now at dest/<rank>-<name>.<ext>."""
    stem = f"{entry.rank:0{width}d}-{_slug(entry.name)}"
    tmp = dest / f".{stem}{_PART}{os.getpid()}"

    def attempt():
        with open(tmp, "wb") as out:
            sha, size, ext = _fetch_to(client, entry.url, out, settings)
            out.flush()
            os.fsync(out.fileno())
        return sha, size, ext

    try:
        sha, size, ext = _retrying(settings, entry.url, attempt)
        _check_decodes(tmp, settings)
        final = dest / f"{stem}.{ext}"
        os.replace(tmp, final)
        return final.name, sha, size
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_to(client: _Client, url: str, out, settings: Settings) -> tuple[str, int, str]:
    """Stream the image at `url` into `out`: (sha256, size, extension from its signature)."""
    resp = client.open(url)
    try:
        digest = hashlib.sha256()
        head = b""
        ext = ""
        size = 0
        for chunk in _body_chunks(resp, settings.download_max_bytes, settings.download_timeout):
            if not ext:  # refuse an HTML page as soon as its first bytes arrive
                head += chunk[:formats.HEAD_BYTES - len(head)]
                if len(head) >= formats.HEAD_BYTES:
                    ext = _sniff(head)
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        ext = ext or _sniff(head)  # a body shorter than formats.HEAD_BYTES
        return digest.hexdigest(), size, ext
    finally:
        resp.close()


def _fetch_bytes(client: _Client, url: str, max_bytes: int) -> bytes:
    resp = client.open(url)
    try:
        return b"".join(_body_chunks(resp, max_bytes, client.settings.download_timeout))
    finally:
        resp.close()


def _body_chunks(resp: http.client.HTTPResponse, max_bytes: int, timeout: float):
    """The body in chunks, refused past `max_bytes` (declared or counted) or past the per-file deadline."""
    declared = resp.getheader("Content-Length", "")
    declared = int(declared) if declared.strip().isdigit() else None
    if declared is not None and declared > max_bytes:
        raise _Refused(f"{declared:,} bytes is over the {max_bytes:,}-byte cap")
    deadline = time.monotonic() + _DEADLINE_TIMEOUTS * timeout
    size = 0
    while True:
        try:
            chunk = resp.read(_CHUNK)
        except TimeoutError:
            raise _Transient(f"stalled: nothing for {timeout:g} s after {size:,} bytes") from None
        except http.client.IncompleteRead as exc:
            raise _Transient(f"truncated: {size + len(exc.partial):,} bytes, then the connection closed") from None
        except (http.client.HTTPException, OSError) as exc:
            raise _Transient(f"connection broke after {size:,} bytes ({exc})") from None
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise _Refused(f"over the {max_bytes:,}-byte cap (stopped reading)")
        if time.monotonic() > deadline:
            raise _Refused(f"too slow: {size:,} bytes in {_DEADLINE_TIMEOUTS * timeout:g} s")
        yield chunk
    if declared is not None and size != declared:
        raise _Transient(f"truncated: {size:,} of {declared:,} bytes, then the connection closed")


def _sniff(head: bytes) -> str:
    """The file extension of the image format `head` starts with; _Refused for anything else."""
    ext = formats.sniff(head)
    if ext:
        return ext
    if head.lstrip()[:1] == b"<":
        raise _Refused("an HTML/XML page, not an image")
    if not head:
        raise _Refused("an empty body")
    raise _Refused("not an image (unknown signature)")


def _check_decodes(path: Path, settings: Settings) -> None:
    """The one decoder must read it whole: a truncated or corrupt image behind a good signature is refused."""
    from .images import decode

    try:
        decode(path, max_pixels=settings.max_pixels, hard_max_pixels=settings.hard_max_pixels, max_frames=1)
    except (NotAnImage, ImageTooLarge) as exc:
        raise _Refused(f"not a usable image: {exc}") from None


def _retrying(settings: Settings, what: str, attempt):
    for n in itertools.count():
        try:
            return attempt()
        except _Transient as exc:
            if n >= settings.download_retries:
                raise _Refused(f"{exc} (gave up after {n + 1} tries)") from None
            wait = retry_wait(n, exc.retry_after, settings.download_backoff, settings.download_max_wait)
            log.info("%s: %s; retrying in %.1f s", what, exc, wait)
            time.sleep(wait)


def retry_wait(attempt: int, retry_after: float | None, backoff: float, max_wait: float) -> float:
    """Seconds before retry number `attempt + 1`: the server's Retry-After, else exponential backoff with jitter;
    never more than `max_wait`."""
    wait = retry_after if retry_after is not None else backoff * 2 ** attempt * random.uniform(1.0, 1.25)
    return min(max(wait, 0.0), max_wait)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --- HTTP: checked addresses, redirects by hand, a rate limit ------------------------------------------------

class _Client:
    """One request at a time, paced, to checked addresses only."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.allowed = _allowed_networks(settings.download_allow_private)
        self.answered = False  # a server answered at least once: the network works
        self._failed_connections: dict[str, int] = {}  # by host:port: one that never answers is not tried forever
        self._last_request = float("-inf")

    def open(self, url: str) -> http.client.HTTPResponse:
        """The 200 response for `url` after checked redirects; raises _Refused, _Transient or _NoConnection."""
        timeout = self.settings.download_timeout
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme.lower() not in ("http", "https"):
                raise _Refused(f"not an http(s) URL: {_short(url)}")
            try:
                host, port = parts.hostname, parts.port or (443 if parts.scheme.lower() == "https" else 80)
            except ValueError:
                raise _Refused(f"bad port in {_short(url)}") from None
            if not host:
                raise _Refused(f"no host in {_short(url)}")
            where = f"{host}:{port}"
            failures = self._failed_connections.get(where, 0)
            if failures >= _OFFLINE_AFTER:
                raise _NoConnection(f"{where} did not answer {failures} times: not tried again this run")
            try:
                addresses = self._resolve(host, port)
            except _NoConnection:
                self._failed_connections[where] = failures + 1
                raise
            self._pace()
            conn_class = _PinnedHTTPS if parts.scheme.lower() == "https" else _PinnedHTTP
            conn = conn_class(host, port, addresses, timeout)
            safe = "/%:@!$&'()*+,;=-._~"
            target = quote(parts.path or "/", safe=safe)
            target += f"?{quote(parts.query, safe=safe + '?')}" if parts.query else ""
            try:
                conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "image/*, */*;q=0.5",
                                                     "Accept-Encoding": "identity", "Connection": "close"})
                resp = conn.getresponse()
            except _NoConnection:
                conn.close()
                self._failed_connections[where] = failures + 1
                raise
            except ssl.SSLError as exc:
                conn.close()
                raise _Refused(f"TLS failed with {host}: {exc.reason or exc}") from None
            except TimeoutError:
                conn.close()
                raise _Transient(f"no answer from {host} within {timeout:g} s") from None
            except (http.client.HTTPException, OSError, UnicodeError) as exc:
                conn.close()
                raise _Transient(f"connection to {host} broke ({exc})") from None
            self.answered = True
            self._failed_connections.pop(where, None)
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                resp.close()
                if not location:
                    raise _Refused(f"HTTP {resp.status} without a Location")
                url = urljoin(url, location.strip())
                log.debug("redirected to %s", url)
                continue
            if resp.status == 200:
                return resp
            retry_after = parse_retry_after(resp.getheader("Retry-After"))
            resp.close()
            if resp.status == 429 or resp.status >= 500:
                raise _Transient(f"HTTP {resp.status} {resp.reason}".rstrip(), retry_after)
            raise _Refused(f"HTTP {resp.status} {resp.reason}".rstrip())
        raise _Refused(f"more than {_MAX_REDIRECTS} redirects")

    def _resolve(self, host: str, port: int) -> list[tuple]:
        infos = _lookup(host, port, min(_CONNECT_TIMEOUT, self.settings.download_timeout))
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            if address.version == 6 and address.ipv4_mapped:
                address = address.ipv4_mapped
            if (not address.is_global or address.is_multicast) and not any(address in n for n in self.allowed):
                raise _Refused(f"{host} is a private, loopback or link-local address ({address}); --allow-private "
                               f"{address}/{address.max_prefixlen} (MEMEINDEX_DOWNLOAD_ALLOW_PRIVATE) fetches from it")
        return infos

    def _pace(self) -> None:
        wait = self._last_request + self.settings.download_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()


def _lookup(host: str, port: int, timeout: float) -> list[tuple]:
    """getaddrinfo with a time limit: a resolver behind a firewall would otherwise stall for tens of seconds."""
    found: dict = {}

    def resolve():
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            found["error"] = exc

    worker = threading.Thread(target=resolve, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise _NoConnection(f"cannot resolve {host}: no answer from DNS within {timeout:g} s")
    if "error" in found:
        exc = found["error"]
        raise _NoConnection(f"cannot resolve {host} ({getattr(exc, 'strerror', None) or exc})")
    return found["infos"]


def _allowed_networks(spec: str) -> tuple:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip())
    except ValueError as exc:
        from .errors import BadSetting

        raise BadSetting(f"download_allow_private={spec!r}: {exc}") from None


def _connect(host: str, addresses: list[tuple], timeout: float) -> socket.socket:
    """A socket connected to one of the checked `addresses` (never a fresh lookup of `host`)."""
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in addresses:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(min(_CONNECT_TIMEOUT, timeout))
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    reason = "timed out" if isinstance(last, TimeoutError) else (getattr(last, "strerror", None) or str(last))
    raise _NoConnection(f"cannot connect to {host}: {reason}")


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: list[tuple], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self):
        self.sock = _connect(self.host, self._addresses, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: list[tuple], timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._addresses = addresses

    def connect(self):
        sock = _connect(self.host, self._addresses, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


# --- names and files -----------------------------------------------------------------------------------------------

def _slug(name: str, max_len: int = 60) -> str:
    """A readable file-name part: lower case, letters and digits of any script, dashes between words."""
    text = unicodedata.normalize("NFKC", name).lower()
    text = re.sub(r"[^\w]+|_+", "-", text).strip("-")
    return text[:max_len].rstrip("-") or "image"


def _name_from_url(url: str) -> str:
    parts = urlsplit(url)
    stem = Path(unquote(parts.path)).stem
    return stem or parts.hostname or "image"


def _clean(text: str) -> str:
    return " ".join(text.split())


def _short(url: str, limit: int = 80) -> str:
    return url if len(url) <= limit else url[:limit - 1] + "…"


def _intact(dest: Path, row: dict) -> bool:
    """The recorded file is still there with its recorded size and sha256 (checked without any request)."""
    name = row["file"]
    path = dest / name
    if Path(name).name != name or name.startswith("."):
        return False
    try:
        if not path.is_file() or path.stat().st_size != int(row["size"]):
            return False
    except (OSError, ValueError):
        return False
    return sha256_file(path) == row["sha256"]


def _write_index(dest: Path, rows: dict[str, dict]) -> None:
    with replacing(dest / INDEX_FILE, tmp=dest / f".{INDEX_FILE}{_PART}{os.getpid()}") as tmp, \
            open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(INDEX_COLUMNS)
        for row in sorted(rows.values(), key=lambda r: (int(r["rank"]), r["file"])):
            writer.writerow([row[c] for c in INDEX_COLUMNS])


def _remove_stale_parts(dest: Path) -> None:
    """Temp files a killed run left behind (atomicfile's rule: its process is gone, or the file is so old that
    its PID may belong to another process); a live run's are left alone."""
    for path in remove_stale_temps(dest, marker=_PART):
        log.info("removed %s, left by an interrupted download", path.name)
