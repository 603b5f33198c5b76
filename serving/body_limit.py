"""A request body limit as a plain ASGI middleware: 413 with a JSON body, chunked or not."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def body_too_large_detail(limit: int) -> str:
    return f"request body over {limit} bytes (STREAMFLOW_MAX_BODY_BYTES)"


class BodyLimitMiddleware:
    """Refuses a body over `max_bytes`: a declared Content-Length at once, before any of the body
    is read; a chunked body (no Content-Length) as soon as the bytes received pass the limit.

    Starlette's RequestBodyLimitMiddleware (FastAPI's `max_body_size`) does the same but
    answers a declared oversize body in plain text, whatever the app's handlers say.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._refusal = json.dumps({"detail": body_too_large_detail(max_bytes)}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                # uvicorn has refused a Content-Length that is not a number, and never passes on
                # more body than it declares: within the limit, nothing is left to count.
                if int(value) > self.max_bytes:
                    await self._refuse(send)
                else:
                    await self.app(scope, receive, send)
                return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body read, which FastAPI passes on to its
                    # HTTPException handler: a JSON `detail`, as for every other error.
                    raise HTTPException(413, body_too_large_detail(self.max_bytes))
            return message

        await self.app(scope, receive_within_limit, send)

    async def _refuse(self, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._refusal)).encode()),
            # The unread body is still on the wire: the connection cannot serve another request.
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": self._refusal})
