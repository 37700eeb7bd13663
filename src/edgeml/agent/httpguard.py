"""A guard in front of the agent's HTTP app: slow or stalled uploads cannot hold the server.

uvicorn bounds the wait between requests on a connection, not the wait for a request's body:
a client that sends headers and part of a body and then stalls would hold its connection (and
the request's task) for as long as it likes, and enough of them hold the device. This ASGI
middleware gives every request body a deadline (``body_timeout_s`` from the request's start):
past it the request is answered 408 and the connection closed. A body still not whole after a
short grace (a quarter of the timeout, at most 1 s) is a slow upload; at most
``max_slow_bodies`` of them are held at once, and one more is answered 503 with
``Retry-After`` (and closed). Bodies that arrive within the grace never count.

A client that goes away before its body arrived is one line at debug, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import ClientDisconnect

__all__ = ["BodyGuard"]

current_task = asyncio.current_task  # a global: one attribute lookup less per request

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
    """ASGI middleware; see the module docstring.

    A request with a body waits in ``uploads`` (its task -> when it began, oldest first) until
    the body is whole; a sweeper task looks at the oldest a few times a second. So a request
    pays a dict insert and delete, not a timer or a task of its own. A body not whole after
    the grace is a slow upload (``slow``; over the cap: cut with 503); one not whole by the
    deadline is cut with 408. Cutting cancels the request's task where it waits for body
    bytes. The agent's routes read the body before they answer, so a cut request has not
    begun its response.
    """

    def __init__(self, app: Any, *, body_timeout_s: float, max_slow_bodies: int) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s
        self.grace_s = min(1.0, body_timeout_s / 4)
        self.max_slow_bodies = max_slow_bodies
        self.uploads: dict[asyncio.Task[Any], float] = {}
        self.slow: set[asyncio.Task[Any]] = set()
        self._cut: dict[asyncio.Task[Any], int] = {}  # task -> 408 or 503
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Slow uploads held now."""
        return len(self.slow)

    def _sweep_once(self, now: float) -> None:
        for task, began in list(self.uploads.items()):
            age = now - began
            if age < self.grace_s:
                return  # the rest are younger
            if task not in self.slow:
                if len(self.slow) >= self.max_slow_bodies:
                    self._cut_short(task, 503)
                    continue
                self.slow.add(task)
            if age >= self.body_timeout_s:
                self._cut_short(task, 408)

    def _cut_short(self, task: asyncio.Task[Any], status: int) -> None:
        del self.uploads[task]
        self.slow.discard(task)
        self._cut[task] = status
        task.cancel()

    async def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await asyncio.sleep(self.grace_s / 4)
            self._sweep_once(loop.time())

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        task = current_task()
        if scope["type"] != "http" or task is None or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        loop = self._loop
        if loop is None:  # the first request: the server's loop, for good
            loop = self._loop = asyncio.get_running_loop()
            self._sweeper = loop.create_task(self._sweep(loop))
        uploads, slow = self.uploads, self.slow
        uploads[task] = loop.time()

        async def guarded_receive() -> Message:
            message: Message = await receive()
            if task in uploads and (message["type"] != "http.request" or not message.get("more_body")):
                del uploads[task]
                slow.discard(task)
            return message

        try:
            await self.app(scope, guarded_receive, send)
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            task.uncancel()  # the guard's own cut, not a shutdown: answered below
        except ClientDisconnect:
            log.debug("%s went away before its request body arrived", _client(scope))
        finally:
            uploads.pop(task, None)
            slow.discard(task)
        status = self._cut.pop(task, None)
        if status == 503:
            log.warning("refused an upload from %s: %d slow ones in progress", _client(scope), len(slow))
            await _answer(send, 503, b'{"error":"too many slow uploads in progress; retry"}', _RETRY)
        elif status == 408:
            log.info(
                "closed a request from %s: its body did not arrive within %g s",
                _client(scope),
                self.body_timeout_s,
            )
            await _answer(send, 408, b'{"error":"the request body did not arrive in time","field":"body"}')


_RETRY = ((b"retry-after", b"1"),)
