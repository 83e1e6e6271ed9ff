"""Request-body size limit, enforced before the application reads a byte of the body.

Does: `BodySizeLimit` is a pure ASGI middleware. A request whose declared ``Content-Length`` exceeds the
limit is answered 413 at once, without reading its body; a body without a declared length (chunked) is read
by the middleware up to the limit and answered 413 as soon as it goes over, so at most `max_bytes` of any
request is ever held in memory. A body within the limit is handed on to the app unchanged.

Does not: limit responses, headers or the number of requests (that is the reverse proxy's job), or apply
to WebSocket / lifespan traffic.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Refuse request bodies larger than `max_bytes` with 413 (bilingual message) before the app sees them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        declared = _int(headers.get(b"content-length"))
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        if not declared and b"transfer-encoding" not in headers:  # no body: nothing to hold back
            await self.app(scope, receive, send)
            return
        # read (at most max_bytes of) the body here, then replay it to the app
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the client went away
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        buffered: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            return buffered.pop() if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        detail = (
            f"请求体过大（上限 {self.max_bytes} 字节） request body too large (limit {self.max_bytes} bytes)"
        )
        body = json.dumps({"detail": detail}, ensure_ascii=False).encode("utf-8")
        start: dict[str, Any] = {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _int(value: bytes | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
