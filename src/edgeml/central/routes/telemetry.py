"""Telemetry intake: idempotent on (device, batch id), acknowledged only once committed.

A well-formed batch from its own device takes a fast path (:class:`_IngestRoute`); FastAPI's
generic path is kept for everything else, so every error answer is the one it gives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError

from edgeml.agent.telemetry import TelemetryBatch
from edgeml.central.db import BatchConflict, Device, Ingested, Overloaded, TelemetryAck
from edgeml.central.routes.deps import CentralState, DeviceDep, StateDep, _device_scheme, errors
from edgeml.central.routes.fleet import set_serving
from edgeml.observability import (
    DEVICE_LAST_SEEN,
    DEVICE_SPOOL_DROPPED,
    TELEMETRY_BATCHES,
    TELEMETRY_LAG,
    TELEMETRY_ROWS,
)

__all__ = ["PATH", "router"]

PATH = "/v1/telemetry"
#: set on the answer to a batch that was already stored (the answer is the stored one)
REPLAYED = "Idempotent-Replayed"


class _IngestRoute(APIRoute):
    """FastAPI's route plus a fast path for the common case: a valid batch, posted as JSON by its device.

    FastAPI's generic path decodes the body with the standard library's ``json`` (slow on ~10 kB
    of numbers), validates the resulting dict, runs the sync auth dependencies in the thread
    pool and validates the answer again: about a millisecond of CPU per batch. The fast path
    validates the raw bytes with pydantic-core, authenticates with the same scheme and store
    lookup as :data:`DeviceDep`, and answers the same bytes. Anything else (another content
    type, an invalid body, no or a bad token, a token of another device) goes the generic
    way; the fast path has no side effect before it decides.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        generic = super().get_route_handler()

        async def handler(request: Request) -> Response:
            fast = await _fast_path(request)
            return fast if fast is not None else await generic(request)

        return handler


router = APIRouter(tags=["telemetry"], route_class=_IngestRoute)


@router.post(
    PATH,
    response_model=TelemetryAck,
    responses={
        **errors(401, 403, 413, 429, 503),
        200: {
            "description": "Stored (or stored before: then the same answer, with Idempotent-Replayed: true)"
        },
        422: {
            "description": "Not a valid batch (each error names its field), or a batch id this device "
            "already used with a different body"
        },
    },
)
async def post_telemetry(
    batch: TelemetryBatch, response: Response, state: StateDep, device: DeviceDep
) -> Response | TelemetryAck:
    """Ingest one batch (device token). The answer comes once the batch is committed to disk."""
    if batch.device_id != device.device_id:
        TELEMETRY_BATCHES.labels("rejected").inc()
        raise HTTPException(403, f"this token belongs to {device.device_id}, not {batch.device_id}")
    result = await _ingest(state, batch, device)
    if isinstance(result, Response):
        return result
    if result.duplicate:
        response.headers[REPLAYED] = "true"
    return result.ack


async def _fast_path(request: Request) -> Response | None:
    """The answer to a valid batch from its own device, or None: FastAPI's path decides."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    credentials = await _device_scheme(request)
    if credentials is None or not credentials.credentials:
        return None
    state: CentralState = request.app.state.central
    device = state.store.authenticate(credentials.credentials)
    if device is None:
        return None
    try:
        batch = TelemetryBatch.model_validate_json(await request.body())
    except ValidationError:
        return None
    if batch.device_id != device.device_id:
        return None
    result = await _ingest(state, batch, device)
    if isinstance(result, Response):
        return result
    # the bytes FastAPI's path answers: the response model's JSON
    answer = Response(result.ack.model_dump_json(), media_type="application/json")
    if result.duplicate:
        answer.headers[REPLAYED] = "true"
    return answer


async def _ingest(state: CentralState, batch: TelemetryBatch, device: Device) -> Ingested | Response:
    """Submit ``batch`` and wait for its commit; the result, or the answer to a reused batch id."""
    retry = {"Retry-After": str(state.config.limits.retry_after_s)}
    try:
        future = state.store.submit(batch)
    except Overloaded as exc:
        TELEMETRY_BATCHES.labels("throttled").inc()
        raise HTTPException(429, f"busy: {exc}", headers=retry) from exc
    try:
        result = await asyncio.wrap_future(future)
    except BatchConflict as exc:
        TELEMETRY_BATCHES.labels("conflict").inc()
        return JSONResponse(
            {"detail": [{"loc": ["body", "batch_id"], "msg": str(exc), "type": "batch_id_reused"}]}, 422
        )
    if result.duplicate:
        TELEMETRY_BATCHES.labels("duplicate").inc()
    else:
        TELEMETRY_BATCHES.labels("accepted").inc()
        _observe(state, batch, device, result.ack.received_at)
    return result


def _observe(state: CentralState, batch: TelemetryBatch, device: Device, received: datetime) -> None:
    """Fleet gauges after a new batch."""
    group = device.group or ""
    labels = (device.device_id, group)
    DEVICE_LAST_SEEN.labels(*labels).set(received.timestamp())
    TELEMETRY_ROWS.labels(batch.model, batch.group or group).inc(batch.rows)
    if batch.dropped_before:
        DEVICE_SPOOL_DROPPED.labels(*labels).inc(batch.dropped_before)
    now = state.store.device(device.device_id)
    if now is None or now.last_window_end != batch.window_end:
        return  # an older window arriving late: the newest one's lag and version stand
    TELEMETRY_LAG.labels(*labels).set(max(0.0, (datetime.now(UTC) - batch.window_end).total_seconds()))
    set_serving(state, now)
