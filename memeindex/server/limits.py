"""Upload cap as plain ASGI middleware: a body over the cap is refused with 413 before it is parsed or stored.

The declared Content-Length is checked first; the bytes actually received are counted too (chunked uploads,
lying headers), and parsing stops as soon as they pass the cap. The rest of the body is then read and thrown
away (up to DRAIN_BYTES, DRAIN_SECONDS) before the 413 goes out: closing a socket with unread bytes in it makes
the kernel send a reset, and a client that sent no `Expect: 100-continue` would see "connection reset" instead
of the message. A body past the drain bound still gets the 413, then the connection is closed.
"""
from __future__ import annotations

import asyncio
import json
import time

from starlette.exceptions import HTTPException

MULTIPART_SLACK = 64 * 1024  # room for the multipart boundary and part headers around the file
DRAIN_BYTES = 256 * 1024 * 1024  # how much of a refused body is read and discarded (loopback: ~0.2 s per 100 MB)
DRAIN_SECONDS = 30.0  # a slow sender gets its 413 after this, and a closed connection


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on as a 413 instead of calling it a bad body."""

    def __init__(self, detail: str):
        super().__init__(status_code=413, detail=detail)


class BusyGate:
    """Refuse a search with 503 + Retry-After before its body is parsed when the service is already full.

    The service's slot (taken by the search route) is the authority; this only spares a full server the work of
    parsing a multipart upload it would refuse anyway. The body is drained (bounded), as for a 413.
    """

    def __init__(self, app, service, paths: frozenset[str] = frozenset({"/api/search"})):
        self.app = app
        self.service = service
        self.paths = paths

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") in self.paths
                and self.service.pending >= self.service.max_pending):
            from ..errors import ServiceBusy

            self.service.refused += 1
            headers = dict(scope.get("headers") or [])
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await _drain(receive)
            return await _reply(send, 503, f"{self.service.pending} searches in flight: retry shortly",
                                [(b"retry-after", str(ServiceBusy.retry_after).encode())])
        return await self.app(scope, receive, send)


class UploadLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = self.max_bytes + MULTIPART_SLACK
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                return await _reply(send, 400, "bad Content-Length header")
            if too_big:
                # A client that asked `Expect: 100-continue` sends nothing until told: answer it at once.
                if headers.get(b"expect", b"").lower() != b"100-continue":
                    await _drain(receive)
                return await _reply(send, 413, self._message())
        received = 0
        started = complete = False

        async def counting_receive():
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise BodyTooLarge(self._message())
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                if not complete:
                    await _drain(receive)
                await _reply(send, 413, self._message())

    def _message(self) -> str:
        return f"upload too large: the limit is {self.max_bytes:,} bytes"


async def _drain(receive) -> None:
    """Read and discard the rest of a request body, bounded in bytes and time."""
    drained, deadline = 0, time.monotonic() + DRAIN_SECONDS
    while drained < DRAIN_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), left)
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":  # http.disconnect
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _reply(send, status: int, detail: str, extra_headers=()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra_headers]})
    await send({"type": "http.response.body", "body": body})
