"""Ground truth: labels by prediction id, the devices' prediction logs they join, and landing them.

``POST /v1/feedback`` is idempotent: a (prediction id, label) pair stored before is counted as a
duplicate, not stored again; a later, different label for the same id wins. A label whose
prediction no device has reported yet is stored and counted as ``unknown``: it joins when the
prediction arrives. ``POST /v1/predictions`` takes a device's prediction log
(:mod:`edgeml.agent.predlog`). ``POST /v1/feedback/land`` lands the labelled rows that arrived
since the last landing in the lake, as dataset ``<model>.labels``.

With tracing on, a batch of labels is a ``central.feedback`` span linked to the agent request
spans that made the predictions (their traceparents came with the prediction log).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from edgeml.central.routes.deps import AdminDep, DeviceDep, DeviceOrAdminDep, StateDep, errors
from edgeml.errors import Forbidden, UserError
from edgeml.observability import TRACING, linked_span
from edgeml.telemetry.schema import FeedbackItem, LabelsStored, PredictionLogBatch

__all__ = ["FeedbackAccepted", "FeedbackRequest", "LandRequest", "Landed", "PredictionsAccepted", "router"]

router = APIRouter(tags=["feedback"])

#: labels of one request whose predictions' spans the feedback span links to
MAX_LINKS = 128


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[FeedbackItem] = Field(min_length=1, max_length=10_000)


#: the answer to a batch of labels
FeedbackAccepted = LabelsStored


class PredictionsAccepted(BaseModel):
    received: int = Field(description="logged predictions in the batch")
    stored: int = Field(description="of those, new (an id stored before keeps its first row)")


class LandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128, description="the model whose labelled rows to land")


class Landed(BaseModel):
    dataset: str
    rows: int = Field(description="labelled rows landed now (0: nothing new)")
    snapshot: str | None = Field(description="the dataset's snapshot after landing; none if it has none")


@router.post("/v1/feedback", response_model=FeedbackAccepted, responses=errors(401, 403, 413, 503))
def post_feedback(body: FeedbackRequest, state: StateDep, caller: DeviceOrAdminDep) -> LabelsStored:
    """Store labels (a device token, or admin). A device's labels are about its own predictions."""
    items = body.labels
    if caller is not None:
        if any(i.device_id not in (None, caller.device_id) for i in items):
            raise Forbidden("a device may only send labels for its own predictions")
        items = [i.model_copy(update={"device_id": caller.device_id}) for i in items]
    source = "admin" if caller is None else caller.device_id
    if TRACING.provider is None:
        return state.store.add_labels(items, source=source)
    # the label's span links to the request span that predicted (known once the device's log came)
    traces = state.store.prediction_traces([i.prediction_id for i in items[:MAX_LINKS]])
    with linked_span("central.feedback", traces.values(), labels=len(items), linked=len(traces)):
        return state.store.add_labels(items, source=source)


@router.post("/v1/predictions", response_model=PredictionsAccepted, responses=errors(401, 403, 413, 503))
def post_predictions(body: PredictionLogBatch, state: StateDep, device: DeviceDep) -> PredictionsAccepted:
    """A device's logged predictions (device token), for labels to be joined with."""
    if body.device_id != device.device_id:
        raise Forbidden(f"this token belongs to device {device.device_id!r}, not {body.device_id!r}")
    return PredictionsAccepted(received=len(body.predictions), stored=state.store.add_predictions(body))


@router.post("/v1/feedback/land", response_model=Landed, responses=errors(400, 401, 403, 503))
def land(body: LandRequest, state: StateDep, _: AdminDep) -> Landed:
    """Land the labelled rows of a model that arrived since the last landing (admin)."""
    from edgeml.central.services.labels import land_labels

    if state.targets.store is None:
        raise UserError("central.yaml names no store: there is no lake to land labels in")
    result = land_labels(state.targets.store, state.store, body.model)
    return Landed(dataset=result.dataset, rows=result.rows, snapshot=result.snapshot)
