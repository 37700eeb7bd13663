"""The fleet: its view (devices, their state, each model version's health) and the gauges
Prometheus scrapes about it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from edgeml.central.drift import DriftReport, ThresholdCache, compute_drift, pool_stored
from edgeml.central.performance import (
    AccuracyEstimate,
    RealizedAccuracy,
    estimate_accuracy,
    realized_accuracy,
)
from edgeml.central.services.state import CentralState
from edgeml.observability import (
    forget_device,
    track_device_lag,
    track_device_model,
    track_device_seen,
    track_device_spool_dropped,
    track_fleet_devices,
    track_telemetry_rows,
)
from edgeml.telemetry.schema import Device, TelemetryBatch

__all__ = [
    "Fleet",
    "FleetDevice",
    "WindowHealth",
    "fleet_view",
    "forget_device_series",
    "model_health",
    "observe_batch",
    "restore_gauges",
    "set_serving",
    "update_fleet_gauges",
    "write_prometheus_sd",
]

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


@dataclass(frozen=True)
class WindowHealth:
    """One model version on one device group over one window (feedback: by when it arrived)."""

    model: str
    version: int
    group: str | None
    start: datetime
    end: datetime
    rows: int
    drift: DriftReport | None  # None: the version's manifest could not be read
    estimated: AccuracyEstimate | None
    realized: RealizedAccuracy | None
    compliance: str | None = None  # the version's compliance mode; None: no manifest


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
                compliance=None if manifest is None else manifest.compliance,
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
    """Devices per state (a device goes offline by time passing: computed on each scrape)."""
    for name, count in fleet_view(state).counts.items():
        track_fleet_devices(name, count)


def set_serving(state: CentralState, device: Device) -> None:
    """The version a device serves, on its gauge; the series of its previous version goes."""
    if device.serving_model is None:
        return
    serving = (device.device_id, device.group or "", device.serving_model, str(device.serving_version))
    previous = state.serving_labels.get(device.device_id)
    if previous == serving:
        return
    state.serving_labels[device.device_id] = serving
    track_device_model(serving, previous)


def forget_device_series(state: CentralState, device: Device) -> None:
    """A decommissioned device leaves the per-device gauges."""
    forget_device(device.device_id, device.group, state.serving_labels.pop(device.device_id, None))


def restore_gauges(state: CentralState) -> None:
    """After a restart: what the store remembers of active devices, back on the gauges."""
    for device in state.store.devices():
        if device.active and device.last_seen is not None:
            track_device_seen(device.device_id, device.group, device.last_seen.timestamp())
            set_serving(state, device)
    update_fleet_gauges(state)


def observe_batch(state: CentralState, batch: TelemetryBatch, device: Device, received: datetime) -> None:
    """Fleet gauges after a new batch; label values are the device's enrolment, never the batch's."""
    track_device_seen(device.device_id, device.group, received.timestamp())
    track_telemetry_rows(device.model, device.group, batch.rows)
    if batch.dropped_before:
        track_device_spool_dropped(device.device_id, device.group, batch.dropped_before)
    now = state.store.device(device.device_id)
    if now is None or now.last_window_end != batch.window_end:
        return  # an older window arriving late: the newest one's lag and version stand
    lag = max(0.0, (datetime.now(UTC) - batch.window_end).total_seconds())
    track_device_lag(device.device_id, device.group, lag)
    set_serving(state, now)
