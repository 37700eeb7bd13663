"""The telemetry intake in front of the application, and the one body limit.

Telemetry is most of what the central node receives, thousands of batches a second from a
fleet. FastAPI's generic path costs about as much CPU as storing a batch: the middleware
chain, route matching, dependencies and answer validation. :class:`TelemetryIntake` answers
``POST /v1/telemetry`` itself, earlier and cheaper, by calling the function the route calls
(:func:`~edgeml.central.services.telemetry.receive_batch`) and answering as the route does
(:func:`~edgeml.central.routes.telemetry.accepted`, or the error through
:func:`~edgeml.central.routes.deps.error_response`). Without it, the route answers the same.

:func:`read_body` is the body limit, for the intake and for every other route
(:class:`BodyLimitMiddleware`): 413 before more than the limit is read, by Content-Length at
once or while a chunked body streams in.
"""

from __future__ import annotations

import time

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeml.central.routes.deps import error_response
from edgeml.central.routes.telemetry import PATH, accepted
from edgeml.central.services.state import CentralState
from edgeml.central.services.telemetry import receive_batch
from edgeml.errors import EdgemlError, TooLarge
from edgeml.observability import track_http_request, track_telemetry_batch

__all__ = ["BodyLimitMiddleware", "TelemetryIntake", "read_body", "replaying"]


class TelemetryIntake:
    """ASGI middleware: every telemetry post, answered here; anything else handed on."""

    def __init__(self, app: ASGIApp, state: CentralState, limit: int) -> None:
        self.app = app
        self.state = state
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = _headers(scope)
        state = self.state
        try:
            body = await read_body(scope, receive, self.limit)
            result = await receive_batch(
                state, headers.get("authorization"), headers.get("content-type"), body
            )
        except EdgemlError as exc:
            response: Response = error_response(exc, state.config.limits.retry_after_s)
        else:
            response = accepted(result)
        await response(scope, receive, send)
        track_http_request(PATH, "POST", response.status_code, time.perf_counter() - start)


def _headers(scope: Scope) -> dict[str, str]:
    """The request's Authorization and Content-Type headers."""
    found = {}
    for name, value in scope["headers"]:
        if name in (b"authorization", b"content-type"):
            found[name.decode()] = value.decode("latin-1")
    return found


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request's body; :class:`~edgeml.errors.TooLarge` once it is over ``limit`` bytes.

    A refused telemetry batch is counted as rejected.
    """
    length = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
    if length is not None and length > limit:
        _refuse(scope, limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            _refuse(scope, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _refuse(scope: Scope, limit: int) -> None:
    if scope["path"] == PATH:
        track_telemetry_batch("rejected")
    raise TooLarge(f"the request body is over the {limit}-byte limit")


class BodyLimitMiddleware:
    """:func:`read_body` in front of every route (GET and HEAD carry no body)."""

    def __init__(self, app: ASGIApp, limit: int, retry_after_s: float) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.limit)
        except TooLarge as exc:
            await error_response(exc, self.retry_after_s)(scope, receive, send)
            return
        await self.app(scope, replaying(body, receive), send)


def replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` for an app downstream of a middleware that already read ``body``."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
