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


class _Upload:
    """One request's body on its way in."""

    __slots__ = ("counted", "guard", "outcome", "started", "task", "timer", "whole")

    def __init__(self, guard: BodyGuard, task: asyncio.Task[Any] | None) -> None:
        self.guard = guard
        self.task = task
        self.whole = self.counted = self.started = False
        self.outcome: int | None = None  # 408 or 503 once the guard cut the request short
        self.timer: asyncio.TimerHandle | None = None

    def arrived(self) -> None:
        if not self.whole:
            self.whole = True
            if self.counted:
                self.guard.waiting -= 1
            if self.timer is not None:
                self.timer.cancel()

    def slow(self) -> None:
        """The grace is over and the body is not whole: count it, or cut it (503) over the cap."""
        if self.whole:
            return
        guard = self.guard
        if guard.waiting >= guard.max_slow_bodies:
            self._cut(503)
            return
        guard.waiting += 1
        self.counted = True
        rest = guard.body_timeout_s - guard.grace_s
        self.timer = asyncio.get_running_loop().call_later(rest, self._cut, 408)

    def _cut(self, status: int) -> None:
        if not self.whole and self.task is not None:
            self.outcome = status
            self.task.cancel()


class BodyGuard:
    """ASGI middleware; see the module docstring.

    A request is timed by one timer (no task per read: the hot path stays cheap). A body not
    whole after a short grace counts as a slow upload (over the cap: cut with 503); one not
    whole by the deadline is cut with 408. Cutting cancels the request's task where it waits
    for body bytes. Requests whose bodies arrive within the grace are never counted.
    """

    def __init__(self, app: Any, *, body_timeout_s: float, max_slow_bodies: int) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s
        self.grace_s = min(1.0, body_timeout_s / 4)
        self.max_slow_bodies = max_slow_bodies
        self.waiting = 0  # slow uploads: bodies still not whole after the grace

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        upload = _Upload(self, task)
        upload.timer = asyncio.get_running_loop().call_later(self.grace_s, upload.slow)

        async def guarded_receive() -> Message:
            message: Message = await receive()
            if not upload.whole and (message["type"] != "http.request" or not message.get("more_body")):
                upload.arrived()
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                upload.started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except asyncio.CancelledError:
            if upload.outcome is None or task is None:
                raise
            task.uncancel()  # the guard's own cut, not a shutdown: answered below
        except ClientDisconnect:
            log.debug("%s went away before its request body arrived", _client(scope))
        finally:
            upload.arrived()
        if upload.outcome is None or upload.started:
            return
        if upload.outcome == 503:
            log.warning("refused an upload from %s: %d slow ones in progress", _client(scope), self.waiting)
            await _answer(send, 503, b'{"error":"too many slow uploads in progress; retry"}', _RETRY)
        else:
            log.info(
                "closed a request from %s: its body did not arrive within %g s",
                _client(scope),
                self.body_timeout_s,
            )
            await _answer(send, 408, b'{"error":"the request body did not arrive in time","field":"body"}')


_RETRY = ((b"retry-after", b"1"),)
