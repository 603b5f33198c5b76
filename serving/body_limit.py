"""A request body limit as a plain ASGI middleware: 413 with a JSON body, chunked or not."""

from __future__ import annotations

import asyncio
import json
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Lingering close, as nginx does it (its lingering_time and lingering_timeout): after a 413 the
# rest of the body is read and discarded for up to this long, each read waiting at most the
# timeout, so that a client sending its whole body before reading gets the answer instead of a
# reset. Closing a socket with unread data makes the kernel answer with RST, which can discard
# the 413 before the client reads it.
LINGER_SECONDS = 30.0
LINGER_READ_TIMEOUT_SECONDS = 5.0


async def linger(receive: Receive) -> None:
    """Read and discard what is left of the request body, within nginx's default bounds."""
    deadline = time.monotonic() + LINGER_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(receive(), min(left, LINGER_READ_TIMEOUT_SECONDS))
        except TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


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
                    await self._refuse(receive, send)
                else:
                    await self.app(scope, receive, send)
                return
        received = 0
        refused = False

        async def receive_within_limit() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # The rest of the body, if any, is drained once the answer is out.
                    refused = message.get("more_body", False)
                    # Raised inside the route's body read, which FastAPI passes on to its
                    # HTTPException handler: a JSON `detail`, as for every other error.
                    raise HTTPException(413, body_too_large_detail(self.max_bytes))
            return message

        async def send_then_linger(message: Message) -> None:
            if not refused:
                await send(message)
            elif message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                await send({**message, "headers": headers})
            else:
                await self._finish_lingering(message, receive, send)

        await self.app(scope, receive_within_limit, send_then_linger)

    async def _refuse(self, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._refusal)).encode()),
            # The unread body is still on the wire: the connection cannot serve another request.
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await self._finish_lingering(
            {"type": "http.response.body", "body": self._refusal}, receive, send
        )

    @staticmethod
    async def _finish_lingering(last: Message, receive: Receive, send: Send) -> None:
        """Send the answer's last body message, but end the response (which closes the
        connection) only once the rest of the request body is read: the client has the whole
        answer (its Content-Length) while its body drains."""
        if last.get("more_body", False):
            await send(last)
            return
        await send({**last, "more_body": True})
        await linger(receive)
        await send({"type": "http.response.body", "body": b""})
