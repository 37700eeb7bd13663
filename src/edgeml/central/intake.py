"""The fast path of telemetry intake: a valid JSON batch, posted by its own device.

Telemetry is most of what the central node receives, thousands of batches a second from a
fleet. FastAPI's generic path costs about as much CPU as storing a batch: the middleware
chain, route matching, the auth dependency and answer validation. :class:`TelemetryIntake`
sits in front of the application and answers the common case itself, with the same token
check, validation, store and answer as the route in :mod:`edgeml.central.routes.telemetry`.

Anything else (another content type, no Content-Length, an oversized or invalid body, no or a
bad token, a token of another device) goes on to the application with the body replayed,
so every error answer is the one the route gives and the OpenAPI documents. The fast path
has no side effect before it decides.
"""

from __future__ import annotations

import time

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeml.central.routes.telemetry import PATH, REPLAYED, ingest
from edgeml.central.services.state import CentralState
from edgeml.observability import HTTP_REQUEST_SECONDS
from edgeml.telemetry.schema import TelemetryBatch

__all__ = ["TelemetryIntake", "replaying"]

_JSON = b"application/json"
_REPLAYED = REPLAYED.lower().encode()


class TelemetryIntake:
    """ASGI middleware: ingest a valid batch from its own device; hand anything else on."""

    def __init__(self, app: ASGIApp, state: CentralState, limit: int) -> None:
        self.app = app
        self.state = state
        self.limit = limit
        self._ok = HTTP_REQUEST_SECONDS.labels(PATH, "POST", "200")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        token, length = _token_and_length(scope)
        if token is None or length is None or length > self.limit:
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        status = await self._answer(scope, body, token, send)
        if status is None:
            await self.app(scope, replaying(body, receive), send)
            return
        timer = self._ok if status == 200 else HTTP_REQUEST_SECONDS.labels(PATH, "POST", str(status))
        timer.observe(time.perf_counter() - start)

    async def _answer(self, scope: Scope, body: bytes, token: str, send: Send) -> int | None:
        """The status answered to a valid batch from the token's device; None: the route decides."""
        state = self.state
        device = state.store.authenticate(token)
        if device is None:
            return None
        try:
            batch = TelemetryBatch.model_validate_json(body)
        except ValidationError:
            return None
        if batch.device_id != device.device_id:
            return None
        result = await ingest(state, batch, device)
        if isinstance(result, Response):  # 429 or a reused batch id: submitted, so answered here
            await result(scope, _nothing_more, send)
            return result.status_code
        payload = result.ack.model_dump_json().encode()
        headers = [(b"content-type", _JSON), (b"content-length", str(len(payload)).encode())]
        if result.duplicate:
            headers.append((_REPLAYED, b"true"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return 200


async def _nothing_more() -> Message:
    return {"type": "http.disconnect"}


def _token_and_length(scope: Scope) -> tuple[str | None, int | None]:
    """The bearer token of a JSON request with a Content-Length, and that length (else None)."""
    token = length = None
    json = False
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                token = credentials.strip()
        elif name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"content-type":
            json = value.partition(b";")[0].strip().lower() == _JSON
    return (token, length) if json else (None, None)


async def _read(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


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
