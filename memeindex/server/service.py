"""SearchService: one Searcher shared by every request.

The face models are not thread-safe, so every search (and every index reload) runs on one dedicated worker
thread, one at a time; file and thumbnail requests never wait for it. A reload swaps the whole index object,
so a request already holding the old one finishes on it.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..search import MEME_ID
from ..settings import Settings

log = logging.getLogger(__name__)





class SearchService:
    def __init__(self, index_dir: str | Path | None, settings: Settings | None = None, searcher=None,
                 reload_interval: float | None = None):
        self.settings = settings or Settings.from_env()
        self.index_dir = Path(index_dir) if index_dir is not None else Path(self.settings.index_dir)
        self.max_upload_bytes = self.settings.max_upload_bytes
        self.max_k = self.settings.max_k
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
                log.info("index reloaded: %s", self.index_dir)
        except Exception:  # a half-written or broken new index: keep serving the old one
            log.exception("index reload failed; still serving the previous index")

    def _search(self, data: bytes, k: int):
        self._maybe_reload()
        result = self.searcher.search(data, k=k)
        self.searches += 1
        return result

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
        """The indexed file of a meme id, or None: unknown ids, non-ids and files outside the root."""
        if not isinstance(meme_id, str) or not MEME_ID.match(meme_id):
            return None
        searcher = self.searcher
        try:
            path = Path(searcher.image_file(meme_id)).resolve()
            root = Path(searcher.root).resolve()
        except (KeyError, OSError, ValueError):
            return None
        if not path.is_relative_to(root) or not path.is_file():
            log.warning("refusing meme %s: %s is not a file under %s", meme_id, path, root)
            return None
        return path

    def info(self) -> dict:
        try:
            info = dict(self.searcher.info())
        except Exception as exc:  # health must answer even when the index is unwell
            info = {"error": str(exc)}
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in info.items()}

    def close(self) -> None:
        close = getattr(self.searcher, "close", None)
        if close:
            self._worker.submit(close).result()  # the models are closed on the thread that made them
        self._worker.shutdown(wait=True)
