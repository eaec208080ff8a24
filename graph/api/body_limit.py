"""Refuse request bodies over `limits.max_body_bytes` before they are read.

A pure ASGI middleware: a declared `Content-Length` over the limit is answered
413 at once, without one byte of the body being pulled through the proxy; a
chunked body is counted as it arrives and refused the moment it passes the
limit. Knows bytes and the error envelope, nothing of the routes.
"""

from __future__ import annotations

import json
from typing import Any

from graph.errors import error_body

Scope = dict[str, Any]
Message = dict[str, Any]


def _too_large_body(limit: int) -> bytes:
    body = error_body(
        413,
        f"Request body exceeds {limit} bytes (limits.max_body_bytes).",
        code="request_too_large",
    )
    return json.dumps(body).encode()


class BodySizeLimit:
    """ASGI middleware answering 413 for bodies over `max_bytes`."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        state = {"received": 0, "over": False, "started": False}

        async def counted_receive() -> Message:
            if state["over"]:
                return {"type": "http.disconnect"}
            message: Message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["over"] = True
                    # The app sees the client gone; its answer is replaced.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                if not state["started"]:
                    state["started"] = True
                    await self._refuse(send)
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
        if state["over"] and not state["started"]:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = _too_large_body(self.max_bytes)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
