"""The web service: `memeindex serve` (FastAPI + uvicorn, the `[server]` extra).

Importing this package is cheap; fastapi, uvicorn and the models load only when an app is created.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import CannotListen
from ..settings import Settings

log = logging.getLogger(__name__)


def create_app(index_dir: str | Path | None, settings: Settings, *, searcher=None,
               reload_interval: float | None = None):
    """The FastAPI app serving one index. Loads the index and the models once (raises IndexMissing & co).

    `searcher` injects a ready Searcher-like object (tests); `reload_interval` is how often (seconds) a search
    checks whether a nightly build swapped in a new index (default 2, MEMEINDEX_RELOAD_INTERVAL).
    """
    from .app import build_app

    return build_app(index_dir, settings, searcher=searcher, reload_interval=reload_interval)


def serve(index_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          settings: Settings | None = None, *, certfile: str | Path | None = None,
          keyfile: str | Path | None = None) -> None:
    """Run the service until interrupted.

    Browsers allow the camera only on localhost or over HTTPS: to use a phone on the same network, serve with
    `--host 0.0.0.0` plus a certificate (certfile/keyfile, or MEMEINDEX_SSL_CERTFILE / MEMEINDEX_SSL_KEYFILE).
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit("memeindex serve needs the server extra: pip install 'memeindex[server]'") from exc
    settings = settings or Settings.from_env()
    certfile = certfile or settings.ssl_certfile or None
    keyfile = keyfile or settings.ssl_keyfile or None
    _check_listen(host, port)  # before the models load, and not uvicorn's exit status 3 (a missing model's code)
    app = create_app(index_dir, settings)
    scheme = "https" if certfile else "http"
    from ..generation import shown_path

    log.info("serving %s on %s://%s:%d/", shown_path(str(app.state.service.index_dir)), scheme, host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False,
                    ssl_certfile=str(certfile) if certfile else None, ssl_keyfile=str(keyfile) if keyfile else None)
    except SystemExit as exc:  # uvicorn exits 3 when it cannot start (the port taken since the check, say)
        if exc.code:
            raise CannotListen(f"the service could not start on {host}:{port} (its log says why above)") from None
        raise


def _check_listen(host: str, port: int) -> None:
    """CannotListen unless a socket binds host:port as uvicorn's will (its family rule, SO_REUSEADDR); then closed."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except (OSError, OverflowError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CannotListen(f"cannot listen on {host}:{port}: {why}") from None
