"""Telemetry intake: idempotent on (device, batch id), acknowledged only once committed.

The route documents the contract in the OpenAPI and answers through
:func:`~edgeml.central.services.telemetry.receive_batch`; the intake in front of the
application (:class:`edgeml.central.intake.TelemetryIntake`) calls the same function earlier,
so the route answers only when the intake is left out.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response, Security

from edgeml.central.routes.deps import StateDep, device_scheme, errors
from edgeml.central.services.telemetry import receive_batch
from edgeml.telemetry.schema import Ingested, TelemetryAck, TelemetryBatch

__all__ = ["PATH", "REPLAYED", "accepted", "openapi_with_batch", "router"]

PATH = "/v1/telemetry"
#: set on the answer to a batch that was already stored (the answer is the stored one)
REPLAYED = "Idempotent-Replayed"


router = APIRouter(tags=["telemetry"])

#: the body is read by :func:`receive_batch`, not by FastAPI: the OpenAPI names it here
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TelemetryBatch"}}},
    }
}


@router.post(
    PATH,
    response_model=TelemetryAck,
    dependencies=[Security(device_scheme)],
    openapi_extra=_BODY,
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
async def post_telemetry(request: Request, state: StateDep) -> Response:
    """Ingest one batch (device token). The answer comes once the batch is committed to disk."""
    headers = request.headers
    body = await request.body()
    return accepted(
        await receive_batch(state, headers.get("authorization"), headers.get("content-type"), body)
    )


def accepted(result: Ingested) -> Response:
    """The answer to a stored batch (a repeat: the stored answer, marked as replayed)."""
    headers = {REPLAYED: "true"} if result.duplicate else None
    return Response(result.ack.model_dump_json(), 200, headers, media_type="application/json")


def openapi_with_batch(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI, with the :class:`TelemetryBatch` schema the route's body names."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        found = TelemetryBatch.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(found.pop("$defs", {}))
        components[TelemetryBatch.__name__] = found
    return app.openapi_schema or {}
