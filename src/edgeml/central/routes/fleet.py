"""The fleet: JSON, the web page, and the fleet gauges Prometheus scrapes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from pydantic import AwareDatetime, BaseModel, Field

from edgeml.audit import AuditEntry, AuditLog
from edgeml.central.drift import ThresholdCache, compute_drift, pool_stored
from edgeml.central.monitor import GroupStatus
from edgeml.central.page import WindowHealth, render_fleet_page
from edgeml.central.performance import estimate_accuracy, realized_accuracy
from edgeml.central.routes.deps import CentralState, FleetReaderDep, StateDep, errors
from edgeml.errors import StoreError
from edgeml.observability import DEVICE_LAST_SEEN, DEVICE_MODEL, FLEET_DEVICES, TELEMETRY_LAG
from edgeml.telemetry.schema import Device

__all__ = [
    "Fleet",
    "FleetDevice",
    "fleet_view",
    "forget_device_series",
    "model_health",
    "restore_gauges",
    "router",
    "set_serving",
    "update_fleet_gauges",
    "write_prometheus_sd",
]

router = APIRouter(tags=["fleet"])
log = logging.getLogger("edgeml.central")

State = Literal["online", "offline", "decommissioned"]
STATES: tuple[State, ...] = ("online", "offline", "decommissioned")


class FleetDevice(BaseModel):
    device_id: str
    group: str | None
    profile: str
    model: str
    serving_model: str | None = Field(description="model its newest telemetry is about")
    serving_version: int | None
    state: State = Field(description="online: telemetry within offline_after_s")
    last_seen: AwareDatetime | None
    seconds_since_seen: float | None
    spool_dropped: int = Field(description="telemetry batches it reported dropping (spool full)")
    registered_at: AwareDatetime
    decommissioned_at: AwareDatetime | None


class Fleet(BaseModel):
    generated_at: AwareDatetime
    offline_after_s: float
    counts: dict[str, int] = Field(description="devices per state")
    devices: list[FleetDevice]


def _state_of(device: Device, now: datetime, offline_after_s: float) -> State:
    if not device.active:
        return "decommissioned"
    if device.last_seen is not None and (now - device.last_seen).total_seconds() <= offline_after_s:
        return "online"
    return "offline"


def fleet_view(state: CentralState) -> Fleet:
    now = datetime.now(UTC)
    limit = state.config.offline_after_s
    devices = [
        FleetDevice(
            device_id=d.device_id,
            group=d.group,
            profile=d.profile,
            model=d.model,
            serving_model=d.serving_model,
            serving_version=d.serving_version,
            state=_state_of(d, now, limit),
            last_seen=d.last_seen,
            seconds_since_seen=None if d.last_seen is None else round((now - d.last_seen).total_seconds(), 3),
            spool_dropped=d.dropped_total,
            registered_at=d.registered_at,
            decommissioned_at=d.decommissioned_at,
        )
        for d in state.store.devices()
    ]
    counts = {s: sum(1 for d in devices if d.state == s) for s in STATES}
    return Fleet(generated_at=now, offline_after_s=limit, counts=counts, devices=devices)


@router.get("/v1/fleet", response_model=Fleet, responses=errors(401))
def fleet(state: StateDep, _: FleetReaderDep) -> Fleet:
    """Every device: model version, group, last seen, spool drops, online or offline."""
    return fleet_view(state)


@router.get(
    "/",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The fleet page"}, **errors(401)},
)
def page(
    state: StateDep,
    _: FleetReaderDep,
    hours: int = Query(24, ge=1, le=24 * 90, description="how far back the charts go"),
) -> HTMLResponse:
    """The fleet web page: devices, and rows predicted over time per device group."""
    view = fleet_view(state)
    span = timedelta(hours=hours)
    since = view.generated_at - span
    rows = state.store.rows_over_time(since, span / 48)
    gate = state.monitor.gate if state.monitor is not None else None
    return HTMLResponse(
        render_fleet_page(
            view,
            rows,
            span,
            model_health(state, since, span / 24),
            canaries=gate.latest if gate is not None else None,
            gate_actions=gate.actions if gate is not None else None,
            audit=_latest_changes(state),
            nannyml=_latest_round(state),
        )
    )


def _latest_round(state: CentralState) -> list[GroupStatus] | None:
    """The watch's latest round (empty before its first), or None when the watch is off."""
    if state.monitor is None:
        return None
    history = list(state.monitor.history)
    return history[-1][1] if history else []


#: audit entries the page shows
AUDIT_ON_PAGE = 15


def _latest_changes(state: CentralState) -> list[AuditEntry] | None:
    store = state.targets.store
    if store is None:
        return None
    try:
        return AuditLog(store).latest(AUDIT_ON_PAGE)
    except StoreError as exc:  # the page still shows the fleet when the store is unreachable
        log.warning("audit trail not readable for the fleet page: %s", exc)
        return []


#: bootstrap thresholds survive between page loads (they depend on the reference only)
_THRESHOLDS = ThresholdCache()


def model_health(state: CentralState, since: datetime, window: timedelta) -> list[WindowHealth]:
    """Per model version, device group and window since ``since``: drift, estimated and realized accuracy."""
    profiles = state.store.profiles(since=since)
    labels = [r for r in state.store.feedback(since=since) if r.predicted is not None]
    out = []
    for pooled in pool_stored(state.store, window, since=since):  # summed by the database
        manifest = state.targets.manifest(
            pooled.model, pooled.version, profiles[pooled.model, pooled.version]
        )
        pairs = [
            (r.predicted, r.label)
            for r in labels
            if (r.model, r.version, r.group) == (pooled.model, pooled.version, pooled.group)
            and pooled.start < r.received_at <= pooled.end
        ]
        out.append(
            WindowHealth(
                model=pooled.model,
                version=pooled.version,
                group=pooled.group,
                start=pooled.start,
                end=pooled.end,
                rows=pooled.rows,
                drift=None if manifest is None else compute_drift(pooled, manifest, cache=_THRESHOLDS),
                estimated=None if manifest is None else estimate_accuracy(pooled, manifest),
                realized=realized_accuracy(pairs),
            )
        )
    return out


# --- gauges ----------------------------------------------------------------------------------


def write_prometheus_sd(state: CentralState) -> None:
    """The agents' scrape targets for Prometheus, when ``prometheus_sd.file`` is set."""
    sd = state.config.prometheus_sd
    if sd.file is None:
        return
    from edgeml.ops.prometheus_sd import write_sd_file

    try:
        write_sd_file(state.store.devices(), sd.file, port=sd.agent_port)
    except OSError as exc:  # registration succeeded; scraping catches up at the next change
        log.error("cannot write the Prometheus targets file %s: %s", sd.file, exc)


def update_fleet_gauges(state: CentralState) -> None:
    """FLEET_DEVICES per state (a device goes offline by time passing: computed on each scrape)."""
    for name, count in fleet_view(state).counts.items():
        FLEET_DEVICES.labels(name).set(count)


def set_serving(state: CentralState, device: Device) -> None:
    """DEVICE_MODEL for the version a device serves; the series of its previous version goes."""
    if device.serving_model is None:
        return
    labels = (device.device_id, device.group or "", device.serving_model, str(device.serving_version))
    previous = state.serving_labels.get(device.device_id)
    if previous == labels:
        return
    if previous is not None:
        DEVICE_MODEL.remove(*previous)
    state.serving_labels[device.device_id] = labels
    DEVICE_MODEL.labels(*labels).set(1)


def forget_device_series(state: CentralState, device: Device) -> None:
    """A decommissioned device leaves the per-device gauges."""
    labels = (device.device_id, device.group or "")
    for gauge in (DEVICE_LAST_SEEN, TELEMETRY_LAG):
        gauge.remove(*labels)  # a series never set: nothing happens
    previous = state.serving_labels.pop(device.device_id, None)
    if previous is not None:
        DEVICE_MODEL.remove(*previous)


def restore_gauges(state: CentralState) -> None:
    """After a restart: what the store remembers of active devices, back on the gauges."""
    for device in state.store.devices():
        if device.active and device.last_seen is not None:
            DEVICE_LAST_SEEN.labels(device.device_id, device.group or "").set(device.last_seen.timestamp())
            set_serving(state, device)
    update_fleet_gauges(state)
