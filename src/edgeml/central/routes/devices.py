"""Device registration, listing and decommissioning."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from edgeml.central.routes.deps import AdminDep, RegistrarDep, StateDep, errors
from edgeml.central.services.fleet import (
    forget_device_series,
    set_serving,
    update_fleet_gauges,
    write_prometheus_sd,
)
from edgeml.errors import InvalidRequest
from edgeml.observability import track_device_seen
from edgeml.spec.types import Slug
from edgeml.telemetry.schema import Device

__all__ = ["EnrolmentChange", "RegisterRequest", "Registered", "router"]

router = APIRouter(prefix="/v1/devices", tags=["devices"])


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: Slug | None = Field(None, description="the name in the device's agent.yaml; none: one is made")
    group: Slug | None = Field(None, description="device group rollouts can target")
    profile: Slug = Field(description="firmware profile the device runs")
    model: Slug = Field(description="registered model the device serves")


class Registered(BaseModel):
    device: Device
    token: str = Field(description="the device's bearer token: shown this once, stored only as a hash")


@router.post("", status_code=201, response_model=Registered, responses=errors(401, 409, 413))
def register(body: RegisterRequest, state: StateDep, _: RegistrarDep) -> Registered:
    """Register a device (bootstrap or admin token); the answer holds its token, shown once."""
    device, token = state.store.register_device(  # an id taken: DeviceExists, 409
        device_id=body.device_id, group=body.group, profile=body.profile, model=body.model
    )
    update_fleet_gauges(state)
    write_prometheus_sd(state)
    _audit(
        state, "device.register", device.device_id, after={"group": device.group, "profile": device.profile}
    )
    return Registered(device=device, token=token)


class EnrolmentChange(BaseModel):
    """What an admin changes of a device's enrolment; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    group: Slug | None = Field(None, description="device group (null: none)")
    profile: Slug | None = Field(None, description="firmware profile")
    model: Slug | None = Field(None, description="registered model")


@router.patch("/{device_id}", response_model=Device, responses=errors(401, 404))
def reassign(device_id: str, body: EnrolmentChange, state: StateDep, _: AdminDep) -> Device:
    """Change a device's group, model or profile (admin, audited): its telemetry must then claim these."""
    changes = body.model_dump(include=body.model_fields_set)
    for name in ("profile", "model"):
        if name in changes and changes[name] is None:
            raise InvalidRequest([{"loc": ["body", name], "msg": "may not be null", "type": "missing"}])
    before, after = state.store.reassign(device_id, changes)  # an unknown id: UnknownDevice, 404
    forget_device_series(state, before)  # its series carried the old group
    if after.active and after.last_seen is not None:
        track_device_seen(after.device_id, after.group, after.last_seen.timestamp())
        set_serving(state, after)
    update_fleet_gauges(state)
    write_prometheus_sd(state)
    fields = list(changes)
    _audit(
        state,
        "device.reassign",
        device_id,
        before={k: getattr(before, k) for k in fields},
        after={k: getattr(after, k) for k in fields},
    )
    return after


@router.get("", response_model=list[Device], responses=errors(401))
def list_devices(state: StateDep, _: AdminDep) -> list[Device]:
    """Every device ever registered, decommissioned ones included (admin)."""
    return state.store.devices()


@router.post("/{device_id}/decommission", response_model=Device, responses=errors(401, 404))
def decommission(device_id: str, state: StateDep, _: AdminDep) -> Device:
    """Retire a device (admin): its token stops working at once. Repeating it changes nothing."""
    device = state.store.decommission(device_id)  # an unknown id: UnknownDevice, 404
    state.limiter.forget(device.device_id)
    forget_device_series(state, device)
    update_fleet_gauges(state)
    write_prometheus_sd(state)
    _audit(state, "device.decommission", device.device_id, before={"group": device.group})
    return device


def _audit(state: StateDep, action: str, subject: str, **change: object) -> None:
    """Record the change on the store's audit trail, when the central node has a store."""
    from edgeml.audit import AuditLog

    if state.targets.store is not None:
        AuditLog(state.targets.store).append("central", action, subject, **change)  # type: ignore[arg-type]
