"""What bundle a device should run now."""

from __future__ import annotations

from fastapi import APIRouter

from edgeml.central.routes.deps import DeviceOrAdminDep, StateDep, errors
from edgeml.central.services.targets import TargetAnswer
from edgeml.errors import Forbidden, UnknownDevice

__all__ = ["router"]

router = APIRouter(prefix="/v1/targets", tags=["targets"])


@router.get("/{device_id}", response_model=TargetAnswer, responses=errors(401, 403, 404, 503))
def target(device_id: str, state: StateDep, caller: DeviceOrAdminDep) -> TargetAnswer:
    """The bundle the device should run, from the signed channel pointers (its own token, or admin).

    The same choice the agent makes from the pointers when the central node is out of reach.
    """
    if caller is not None and caller.device_id != device_id:
        raise Forbidden("a device may only ask for its own target")
    device = caller or state.store.device(device_id)
    if device is None or not device.active:
        raise UnknownDevice(f"no active device {device_id}")
    # pointers not readable now: TargetsUnavailable, 503 with Retry-After
    return state.targets.answer(device.device_id, device.model, device.profile, device.group)
