"""Telemetry intake: idempotent on (device, batch id), acknowledged only once committed.

The route here is FastAPI's generic path: it gives every error answer and documents the
contract in the OpenAPI. Valid batches from their own device take a fast path in front of
it, :class:`edgeml.central.intake.TelemetryIntake`, which shares :func:`ingest`.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import JSONResponse

from edgeml.central.routes.deps import DeviceDep, StateDep, errors
from edgeml.central.services.fleet import observe_batch
from edgeml.central.services.state import CentralState
from edgeml.errors import BatchConflict, Overloaded
from edgeml.observability import (
    TELEMETRY_BATCHES,
)
from edgeml.telemetry.schema import Device, Ingested, TelemetryAck, TelemetryBatch

__all__ = ["PATH", "REPLAYED", "ingest", "router"]

PATH = "/v1/telemetry"
#: set on the answer to a batch that was already stored (the answer is the stored one)
REPLAYED = "Idempotent-Replayed"


router = APIRouter(tags=["telemetry"])


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
    result = await ingest(state, batch, device)
    if isinstance(result, Response):
        return result
    if result.duplicate:
        response.headers[REPLAYED] = "true"
    return result.ack


async def ingest(state: CentralState, batch: TelemetryBatch, device: Device) -> Ingested | JSONResponse:
    """Submit ``batch`` and wait for its commit.

    The result, or the answer to a full queue (429) or to a reused batch id (422).
    """
    try:
        answer = state.store.submit_async(batch)
    except Overloaded as exc:
        TELEMETRY_BATCHES.labels("throttled").inc()
        retry = {"Retry-After": str(state.config.limits.retry_after_s)}
        return JSONResponse({"detail": f"busy: {exc}"}, 429, headers=retry)
    try:
        result = await answer
    except BatchConflict as exc:
        TELEMETRY_BATCHES.labels("conflict").inc()
        return JSONResponse(
            {"detail": [{"loc": ["body", "batch_id"], "msg": str(exc), "type": "batch_id_reused"}]}, 422
        )
    if result.duplicate:
        TELEMETRY_BATCHES.labels("duplicate").inc()
    else:
        TELEMETRY_BATCHES.labels("accepted").inc()
        observe_batch(state, batch, device, result.ack.received_at)
    return result
