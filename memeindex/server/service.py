"""SearchService: one Searcher shared by every request.

The face models are not thread-safe, so every search (and every index reload) runs on one dedicated worker
thread, one at a time; file and thumbnail requests never wait for it. At most `max_pending_searches` searches
are running or queued (each holds its upload in memory); one more is refused at once with ServiceBusy (503). A reload swaps the whole index object,
so a request already holding the old one finishes on it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from ..errors import MemeIndexError, ServiceBusy
from ..generation import shown_path
from ..search import MEME_ID
from ..settings import Settings

log = logging.getLogger(__name__)


class SearchService:
    def __init__(self, index_dir: str | Path | None, settings: Settings, searcher=None,
                 reload_interval: float | None = None):
        self.settings = settings
        self.index_dir = Path(index_dir) if index_dir is not None else Path(self.settings.index_dir)
        self.max_upload_bytes = self.settings.max_upload_bytes
        self.max_k = self.settings.max_k
        self.max_pending = max(1, self.settings.max_pending_searches)
        self.pending = 0  # searches holding a slot; touched on the event loop thread only
        self.refused = 0
        self.reload_interval = self.settings.reload_interval if reload_interval is None else reload_interval
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memeindex-search")
        self._last_check = time.monotonic()
        self._reload_lock = threading.Lock()
        self.searches = 0
        if searcher is None:
            # Built on the worker thread: the models then live on the one thread that uses them.
            try:
                searcher = self._worker.submit(self._open).result()
            except BaseException:
                self._worker.shutdown(wait=False)
                raise
        self.searcher = searcher

    def _open(self):
        from ..search import Searcher

        return Searcher(self.index_dir, self.settings)

    # -- searching (worker thread) -------------------------------------------------------------------
    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._last_check < self.reload_interval:
            return
        self._last_check = now
        try:
            if self.searcher.reload_if_changed():
                log.info("index reloaded: %s", shown_path(str(self.index_dir)))
        except MemeIndexError as exc:  # the index removed, damaged or rebuilt for another model: one line, no trace
            log.warning("index reload failed (%s); still serving the previous index", shown_path(str(exc)))
        except Exception:  # a half-written or broken new index: keep serving the old one
            log.exception("index reload failed; still serving the previous index")

    def _search(self, data: bytes, k: int):
        self._maybe_reload()
        result = self.searcher.search(data, k=k)
        self.searches += 1
        return result

    @contextmanager
    def slot(self):
        """Hold one of the `max_pending` search slots, or raise ServiceBusy at once (never queue past the bound).
        Take it before reading the upload into memory: the bound is what keeps memory flat under a burst."""
        if self.pending >= self.max_pending:
            self.refused += 1
            raise ServiceBusy(f"{self.pending} searches in flight (MEMEINDEX_MAX_PENDING_SEARCHES): retry shortly")
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    async def search(self, data: bytes, k: int):
        """QueryResult for uploaded bytes; raises NotAnImage, ImageTooLarge, NoFace."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._search, data, k)

    async def watch(self) -> None:
        """Background task: pick up a newly published index even while no searches come in."""
        while True:
            await asyncio.sleep(max(self.reload_interval, 1.0))
            await asyncio.get_running_loop().run_in_executor(self._worker, self._maybe_reload)

    # -- files (any thread) ----------------------------------------------------------------------------
    def image_file(self, meme_id: str) -> Path | None:
        """The indexed file of a meme id, or None: unknown ids, non-ids and files not in a folder of the root.

        The same policy as the build's scan (memeindex/scan.py): the folders on the way are real folders of the
        root (folder symlinks are never followed), the file itself may be a symlink, wherever it points: the
        user put it there and the build indexed it."""
        if not isinstance(meme_id, str) or not MEME_ID.match(meme_id):
            return None
        searcher = self.searcher
        try:
            path = Path(searcher.image_file(meme_id))
            root = Path(searcher.root).resolve()
            folder = path.parent.resolve()
        except (KeyError, OSError, ValueError):
            return None
        if not folder.is_relative_to(root) or not path.is_file():
            log.warning("refusing meme %s: %s is not a file under %s", meme_id, shown_path(str(path)),
                        shown_path(str(root)))
            return None
        return path

    def info(self) -> dict:
        """The loaded index's facts for any client: absolute server paths are cut to their last part."""
        try:
            info = dict(self.searcher.info())
        except Exception as exc:  # health must answer even when the index is unwell (the message may hold paths)
            log.warning("index info failed: %s", shown_path(str(exc)))
            return {"error": type(exc).__name__}
        return {k: _public(v) for k, v in info.items()}

    def close(self) -> None:
        close = getattr(self.searcher, "close", None)
        if close:
            self._worker.submit(close).result()  # the models are closed on the thread that made them
        self._worker.shutdown(wait=True)


def _public(value):
    """A fact as a client may see it: a path (or a string naming an absolute path) becomes its last part."""
    if isinstance(value, Path) or (isinstance(value, str) and os.path.isabs(value)):
        return Path(value).name
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_public(v) for v in value]
    return value
