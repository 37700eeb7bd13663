"""Taking one telemetry batch in: the one set of checks, whichever door the request came by.

:func:`receive_batch` is called by the route (:mod:`edgeml.central.routes.telemetry`) and, for
the common case earlier and cheaper, by the ASGI intake in front of the application
(:mod:`edgeml.central.intake`): the same checks in the same order, the same errors, the same
counts. Its errors are :class:`~edgeml.errors.EdgemlError` s, which one function maps to HTTP
answers (:func:`edgeml.central.routes.deps.error_response`).

The order is FastAPI's, whose generic path this replaced: a body that is not JSON is refused
first, then the token (and the device's rate), then the batch's fields, then a batch of
another device or about what the device was not enrolled for, then a window out of time, then
histograms not on the bins of the version's reference (:mod:`edgeml.central.services.admission`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from email.message import Message
from typing import Any

from pydantic import ValidationError

from edgeml.bundle.manifest import Manifest
from edgeml.central.services.admission import check_bins, check_claims, check_window
from edgeml.central.services.fleet import observe_batch
from edgeml.central.services.state import CentralState
from edgeml.errors import BatchConflict, Forbidden, InvalidRequest, Overloaded, Unauthorized, UserError
from edgeml.observability import track_telemetry_batch
from edgeml.telemetry.db.sealed import NotSealed, refuse_clear_hipaa
from edgeml.telemetry.schema import Device, Ingested, TelemetryBatch

log = logging.getLogger(__name__)

__all__ = ["authenticate_device", "bearer_token", "receive_batch"]


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; Unauthorized without one."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized("this needs a bearer token (Authorization: Bearer <token>)")
    return credentials.strip()


def authenticate_device(state: CentralState, authorization: str | None) -> Device:
    """The active device whose token the header carries; Unauthorized otherwise."""
    device = state.store.authenticate(bearer_token(authorization))
    if device is None:
        raise Unauthorized("unknown or decommissioned device token")
    return device


async def receive_batch(
    state: CentralState, authorization: str | None, content_type: str | None, body: bytes
) -> Ingested:
    """Authenticate, validate, store ``body`` and wait for its commit; every outcome counted.

    Raises Unauthorized (401), Forbidden (403: another device's batch, or a group, model or
    profile it was not enrolled with), InvalidRequest (422, naming each bad field, the
    window's times and the histograms' bins included), Overloaded (429: the writer's queue is
    full, or RateLimited: this device sent more than its rate), BatchConflict (422: a batch
    id reused with another body) or StoreClosed (503).
    """
    try:
        parsed = _parse(body, content_type)
        device = authenticate_device(state, authorization)
        state.limiter.take(device.device_id)
        batch = parsed if isinstance(parsed, TelemetryBatch) else _validated(parsed)
        if batch.device_id != device.device_id:
            raise Forbidden(f"this token belongs to {device.device_id}, not {batch.device_id}")
        check_claims(batch, device)
        check_window(batch, state.config.limits)
        manifest = state.targets.cached_manifest(batch.model, batch.version, batch.profile)
        if manifest is False:  # not read yet: a store read, off the event loop
            manifest = await asyncio.to_thread(
                state.targets.manifest, batch.model, batch.version, batch.profile
            )
        if isinstance(manifest, Manifest):
            refuse_clear_hipaa(state.config.db_path, batch.model, batch.version, manifest.compliance)
            check_bins(batch, manifest)
        result = await state.store.submit_async(batch)
    except (Forbidden, InvalidRequest):
        track_telemetry_batch("rejected")
        raise
    except NotSealed as exc:
        track_telemetry_batch("rejected")
        log.error("%s", exc)
        raise
    except Overloaded:
        track_telemetry_batch("throttled")
        raise
    except BatchConflict:
        track_telemetry_batch("conflict")
        raise
    if result.duplicate:
        track_telemetry_batch("duplicate")
    else:
        track_telemetry_batch("accepted")
        observe_batch(state, batch, device, result.ack.received_at)
    return result


#: an empty body, refused as FastAPI refuses a missing one (after the token)
_MISSING = object()


def _parse(body: bytes, content_type: str | None) -> TelemetryBatch | Any:
    """The batch, when the body is one; else what to validate for the errors (see :func:`_validated`).

    Valid batches, nearly all of them, are parsed and validated in one pass by pydantic's JSON
    parser. Anything else is looked at again the way FastAPI reads a body: as JSON when the
    content type says so (not JSON then is refused at once), else as bytes.
    """
    if not body:
        return _MISSING
    if not _is_json(content_type):
        return body
    try:
        return TelemetryBatch.model_validate_json(body)
    except ValidationError:
        pass
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        error: dict[str, Any] = {"loc": ["body", exc.pos], "msg": "JSON decode error", "type": "json_invalid"}
        raise InvalidRequest([error]) from exc
    except ValueError as exc:  # not even text (UnicodeDecodeError)
        raise UserError("There was an error parsing the body") from exc


def _validated(data: Any) -> TelemetryBatch:
    if data is _MISSING:
        raise InvalidRequest([{"loc": ["body"], "msg": "Field required", "type": "missing"}])
    try:
        return TelemetryBatch.model_validate(data, from_attributes=True)
    except ValidationError as exc:
        errors: list[dict[str, Any]] = [
            {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        raise InvalidRequest(errors) from exc


def _is_json(content_type: str | None) -> bool:
    """As FastAPI decides whether to read a body as JSON (strictly: a type must say so)."""
    if not content_type:
        return False
    if content_type.partition(";")[0].strip().lower() == "application/json":
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
