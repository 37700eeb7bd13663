"""A guard in front of the agent's HTTP app: slow or stalled uploads cannot hold the server.

uvicorn bounds the wait between requests on a connection, not the wait for a request's body:
a client that sends headers and part of a body and then stalls would hold its connection (and
the request's task) for as long as it likes, and enough of them hold the device. This ASGI
middleware gives every request body a deadline (``body_timeout_s`` from the request's start):
past it the request is answered 408 and the connection closed. At most ``max_slow_bodies``
requests may be waiting for body bytes at once; one more is answered 503 at once (and
closed). Bodies that have arrived whole never wait, so they never count.

A client that goes away before its body arrived is one line at debug, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import ClientDisconnect

__all__ = ["BodyGuard"]

log = logging.getLogger("edgeml.agent.http")

Scope = dict[str, Any]
Message = dict[str, Any]


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


async def _answer(send: Any, status: int, text: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    headers = [(b"content-type", b"application/json"), (b"connection", b"close"), *extra]
    headers.append((b"content-length", str(len(text)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text, "more_body": False})


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "a client"


class BodyGuard:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: Any, *, body_timeout_s: float, max_slow_bodies: int) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s
        self.max_slow_bodies = max_slow_bodies
        self.waiting = 0  # requests whose body is not whole yet

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        if self.waiting >= self.max_slow_bodies:
            log.warning("refused a request from %s: %d uploads are in progress", _client(scope), self.waiting)
            await _answer(
                send, 503, b'{"error":"too many uploads in progress; retry"}', ((b"retry-after", b"1"),)
            )
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        state = {"whole": False, "timed_out": False, "started": False}
        self.waiting += 1

        def done() -> None:
            if not state["whole"]:
                state["whole"] = True
                self.waiting -= 1

        async def guarded_receive() -> Message:
            if state["whole"]:
                return await receive()  # type: ignore[no-any-return]
            try:
                message: Message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                state["timed_out"] = True
                done()
                return {"type": "http.disconnect"}  # the app stops reading; we answer 408
            if message["type"] != "http.request" or not message.get("more_body", False):
                done()
            return message

        async def guarded_send(message: Message) -> None:
            if state["timed_out"]:
                return  # the app's answer to the disconnect we made up: the 408 goes instead
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except ClientDisconnect:
            if not state["timed_out"]:
                log.debug("%s went away before its request body arrived", _client(scope))
        finally:
            done()
        if state["timed_out"] and not state["started"]:
            log.info(
                "closed a request from %s: its body did not arrive within %g s",
                _client(scope),
                self.body_timeout_s,
            )
            await _answer(send, 408, b'{"error":"the request body did not arrive in time","field":"body"}')
