"""Multi-sensor machine telemetry with labelled fault episodes and injectable drift.

Each machine (a pump) runs a daily load cycle. Its sensors follow the load with
physical coupling and lag: temperature tracks power with thermal inertia, vibration
grows with speed, pressure with load, power with speed x load. Fault episodes start
at random and develop gradually, each with its own signature:

- ``bearing_wear``: vibration climbs, temperature follows a little;
- ``overheating``: temperature climbs, speed is throttled back;
- ``pressure_leak``: pressure falls, speed rises to compensate.

Drift (what a real fleet suffers: recalibration, a new sensor, a stuck reading) is
applied per sensor and machine from a start time on, so a test or the demo can
check that monitoring finds it. Output is columnar numpy, cheap to write anywhere.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "FAULTS",
    "SENSORS",
    "Drift",
    "SensorSimulation",
    "iter_records",
    "parse_drift",
    "simulate_sensors",
    "write_csv",
    "write_jsonl",
]

#: sensor column -> unit
SENSORS: Mapping[str, str] = {
    "temperature": "degC",
    "vibration": "mm/s",
    "pressure": "bar",
    "rpm": "1/min",
    "power_kw": "kW",
}
FAULTS = ("ok", "bearing_wear", "overheating", "pressure_leak")


@dataclass(frozen=True)
class Drift:
    """A change applied to one sensor from ``start`` (a fraction 0..1 of the run) on.

    ``offset`` adds ``amount``; ``scale`` multiplies by ``amount``; ``noise`` adds Gaussian
    noise with standard deviation ``amount``; ``stuck`` freezes the reading at its value
    when the drift starts. ``machines`` limits it to some machines (all when empty).
    """

    sensor: str
    kind: Literal["offset", "scale", "noise", "stuck"]
    amount: float = 0.0
    start: float = 0.5
    machines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.sensor not in SENSORS:
            raise ValueError(f"unknown sensor {self.sensor!r}; choose from {', '.join(SENSORS)}")
        if not 0 <= self.start <= 1:
            raise ValueError("drift start is a fraction of the run, 0..1")


@dataclass(frozen=True)
class SensorSimulation:
    """Parameters of one simulated run."""

    machines: int = 4
    readings: int = 2_000
    interval_s: float = 10.0
    start: datetime = field(default_factory=lambda: datetime(2026, 1, 5, tzinfo=UTC))
    fault_rate: float = 0.002
    seed: int = 0
    drift: Sequence[Drift] = ()
    machine_prefix: str = "pump"
    daily_swing: float = 0.25  # amplitude of the daily load cycle (0..0.35); each pump has its own phase

    def __post_init__(self) -> None:
        if self.machines < 1 or self.readings < 1:
            raise ValueError("machines and readings must be at least 1")
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if not 0 <= self.fault_rate < 1:
            raise ValueError("fault_rate is a probability per reading, 0..1")
        if not 0 <= self.daily_swing <= 0.35:
            raise ValueError("daily_swing is a load amplitude, 0..0.35")

    def machine_ids(self) -> list[str]:
        return [f"{self.machine_prefix}-{i:03d}" for i in range(self.machines)]


Columns = dict[str, npt.NDArray[Any]]


def _fault_track(
    rng: np.random.Generator, n: int, rate: float
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """Fault label index per reading and episode progress 0..1 (severity ramp)."""
    label = np.zeros(n, dtype=np.int64)
    progress = np.zeros(n)
    i = 0
    while i < n:
        gap = int(rng.geometric(rate)) if rate > 0 else n
        i += gap
        if i >= n:
            break
        length = int(rng.integers(30, 180))
        end = min(n, i + length)
        label[i:end] = rng.integers(1, len(FAULTS))
        progress[i:end] = np.linspace(0.1, 1.0, length)[: end - i]
        i = end + int(rng.integers(60, 240))  # repaired, running normally again
    return label, progress


def _machine(rng: np.random.Generator, sim: SensorSimulation) -> Columns:
    n = sim.readings
    t = np.arange(n) * sim.interval_s
    phase = rng.uniform(0, 2 * np.pi)
    load = 0.65 + sim.daily_swing * np.sin(2 * np.pi * t / 86_400 + phase) + 0.05 * rng.standard_normal(n)
    load = np.clip(load, 0.1, 1.0)
    label, progress = _fault_track(rng, n, sim.fault_rate)
    bearing, heat, leak = ((label == k) * progress for k in (1, 2, 3))

    rpm = 1450 + 300 * load + rng.normal(0, 15, n) - 180 * heat + 120 * leak
    power = 0.011 * rpm * load * (1 + 0.15 * bearing) + rng.normal(0, 0.4, n)
    # Thermal inertia: temperature relaxes toward an equilibrium set by power.
    target = 35 + 2.2 * power + 28 * heat + 6 * bearing
    temperature = np.empty(n)
    temperature[0] = target[0]
    alpha = 1 - np.exp(-sim.interval_s / 600)
    for i in range(1, n):
        temperature[i] = temperature[i - 1] + alpha * (target[i] - temperature[i - 1])
    temperature += rng.normal(0, 0.3, n)
    vibration = 1.2 + 0.0012 * rpm + 5.5 * bearing**1.5 + np.abs(rng.normal(0, 0.15, n))
    pressure = 4.0 + 2.5 * load - 2.2 * leak + rng.normal(0, 0.05, n)
    return {
        "temperature": temperature,
        "vibration": vibration,
        "pressure": pressure,
        "rpm": rpm,
        "power_kw": power,
        "fault": label,
    }


def _apply_drift(cols: Columns, drift: Drift, rng: np.random.Generator) -> None:
    values = cols[drift.sensor]
    begin = round(drift.start * len(values))
    if drift.kind == "offset":
        values[begin:] += drift.amount
    elif drift.kind == "scale":
        values[begin:] *= drift.amount
    elif drift.kind == "noise":
        values[begin:] += rng.normal(0, drift.amount, len(values) - begin)
    elif begin < len(values):
        values[begin:] = values[max(begin - 1, 0)]


def simulate_sensors(sim: SensorSimulation) -> Columns:
    """Generate the run as columns sorted by time then machine.

    Columns: ``msg_id`` (unique), ``ts`` (datetime64[ms], UTC), ``machine_id``, every sensor in
    :data:`SENSORS`, ``fault`` (one of :data:`FAULTS`) and ``is_anomaly`` (fault != ok).
    """
    rng = np.random.default_rng(sim.seed)
    ids = sim.machine_ids()
    unknown = {m for d in sim.drift for m in d.machines} - set(ids)
    if unknown:
        raise ValueError(f"drift names unknown machines: {', '.join(sorted(unknown))}")
    per_machine = []
    for machine in ids:
        cols = _machine(np.random.default_rng(rng.integers(2**63)), sim)
        for drift in sim.drift:
            if not drift.machines or machine in drift.machines:
                _apply_drift(cols, drift, rng)
        per_machine.append(cols)

    n, m = sim.readings, len(ids)
    start = np.datetime64(sim.start.astimezone(UTC).replace(tzinfo=None), "ms")
    offsets = (np.arange(n) * sim.interval_s * 1000).astype("timedelta64[ms]")
    # Interleave machines reading by reading: row k is reading k // m of machine k % m.
    out: Columns = {
        "msg_id": np.array([f"{ids[k % m]}-{k // m:08d}" for k in range(n * m)]),
        "ts": np.repeat(start + offsets, m),
        "machine_id": np.tile(np.array(ids), n),
    }
    for name in (*SENSORS, "fault"):
        out[name] = np.stack([c[name] for c in per_machine], axis=1).reshape(-1)
    for name in SENSORS:
        out[name] = np.round(out[name], 3)
    out["fault"] = np.asarray(FAULTS, dtype=object)[out["fault"]].astype(str)
    out["is_anomaly"] = out["fault"] != "ok"
    return out


def iter_records(columns: Columns) -> Iterator[dict[str, Any]]:
    """Rows as JSON-ready dicts (timestamps as ISO 8601 with ``Z``), e.g. for MQTT payloads."""
    names = list(columns)
    n = len(columns[names[0]])
    for i in range(n):
        row: dict[str, Any] = {}
        for name in names:
            value = columns[name][i]
            if isinstance(value, np.datetime64):
                row[name] = np.datetime_as_string(value, unit="ms") + "Z"
            elif isinstance(value, np.generic):
                row[name] = value.item()
            else:
                row[name] = value
        yield row


def parse_drift(text: str) -> Drift:
    """``SENSOR:KIND:AMOUNT[:START[:MACHINE,...]]``, e.g. ``temperature:offset:5:0.5:pump-001``."""
    parts = text.split(":")
    if not 3 <= len(parts) <= 5:
        raise ValueError(f"drift {text!r}: write SENSOR:KIND:AMOUNT[:START[:MACHINE,...]]")
    sensor, kind, amount = parts[:3]
    if kind not in ("offset", "scale", "noise", "stuck"):
        raise ValueError(f"drift {text!r}: kind must be offset, scale, noise or stuck")
    try:
        value = float(amount)
        start = float(parts[3]) if len(parts) > 3 and parts[3] else 0.5
    except ValueError:
        raise ValueError(f"drift {text!r}: AMOUNT and START must be numbers") from None
    machines = tuple(m for m in parts[4].split(",") if m) if len(parts) > 4 else ()
    return Drift(sensor, kind, value, start, machines)  # type: ignore[arg-type]


def write_csv(columns: Columns, out: IO[str]) -> int:
    """Write columns as CSV with a header (timestamps ISO 8601 UTC); return the row count."""
    writer = csv.writer(out, lineterminator="\n")
    names = list(columns)
    writer.writerow(names)
    count = 0
    for row in iter_records(columns):
        writer.writerow([row[n] for n in names])
        count += 1
    return count


def write_jsonl(columns: Columns, out: IO[str]) -> int:
    """Write columns as JSON Lines; return the row count."""
    count = 0
    for row in iter_records(columns):
        out.write(json.dumps(row, separators=(",", ":")) + "\n")
        count += 1
    return count
