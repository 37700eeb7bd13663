"""Ground-truth labels by prediction id, for realized accuracy."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from edgeml.central.routes.deps import DeviceOrAdminDep, StateDep, errors
from edgeml.errors import Forbidden
from edgeml.telemetry.schema import FeedbackItem

__all__ = ["FeedbackAccepted", "FeedbackRequest", "router"]

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[FeedbackItem] = Field(min_length=1, max_length=10_000)


class FeedbackAccepted(BaseModel):
    accepted: int = Field(description="labels stored; a later label for the same prediction id wins")


@router.post("", response_model=FeedbackAccepted, responses=errors(401, 403, 413, 503))
def post_feedback(body: FeedbackRequest, state: StateDep, caller: DeviceOrAdminDep) -> FeedbackAccepted:
    """Store labels (a device token, or admin). A device's labels are about its own predictions."""
    items = body.labels
    if caller is not None:
        if any(i.device_id not in (None, caller.device_id) for i in items):
            raise Forbidden("a device may only send labels for its own predictions")
        items = [i.model_copy(update={"device_id": caller.device_id}) for i in items]
    return FeedbackAccepted(
        accepted=state.store.add_feedback(items, source="admin" if caller is None else caller.device_id)
    )
