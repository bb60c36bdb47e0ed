"""Upload cap as plain ASGI middleware: a body over the cap is refused with 413 before it is parsed or stored.

The declared Content-Length is checked first; the bytes actually received are counted too (chunked uploads,
lying headers), and the request is cut off as soon as they pass the cap.
"""
from __future__ import annotations

import json

from starlette.exceptions import HTTPException

MULTIPART_SLACK = 64 * 1024  # room for the multipart boundary and part headers around the file


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on as a 413 instead of calling it a bad body."""

    def __init__(self, detail: str):
        super().__init__(status_code=413, detail=detail)


class UploadLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = self.max_bytes + MULTIPART_SLACK
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                return await _reply(send, 400, "bad Content-Length header")
            if too_big:
                return await _reply(send, 413, self._message())
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
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
                await _reply(send, 413, self._message())

    def _message(self) -> str:
        return f"upload too large: the limit is {self.max_bytes:,} bytes"


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
