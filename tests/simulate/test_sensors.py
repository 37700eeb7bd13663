from __future__ import annotations

import io
import json

import numpy as np
import pytest

from edgeml.simulate.sensors import (
    FAULTS,
    SENSORS,
    Drift,
    SensorSimulation,
    parse_drift,
    simulate_sensors,
    write_csv,
    write_jsonl,
)


def test_shape_order_and_ids() -> None:
    cols = simulate_sensors(SensorSimulation(machines=3, readings=50, interval_s=5))
    assert set(cols) == {"msg_id", "ts", "machine_id", *SENSORS, "fault", "is_anomaly"}
    assert all(len(v) == 150 for v in cols.values())
    assert len(set(cols["msg_id"])) == 150
    assert list(cols["machine_id"][:3]) == ["pump-000", "pump-001", "pump-002"]
    ts = cols["ts"]
    assert (np.diff(ts.astype(np.int64)) >= 0).all()
    assert ts[3] - ts[0] == np.timedelta64(5000, "ms")


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = simulate_sensors(SensorSimulation(seed=3, readings=200))
    b = simulate_sensors(SensorSimulation(seed=3, readings=200))
    c = simulate_sensors(SensorSimulation(seed=4, readings=200))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["temperature"], c["temperature"])


def test_faults_happen_and_leave_their_signature() -> None:
    cols = simulate_sensors(SensorSimulation(machines=6, readings=6000, seed=1, fault_rate=0.003))
    faults = cols["fault"]
    assert set(faults) == set(FAULTS)
    assert np.array_equal(cols["is_anomaly"], faults != "ok")
    ok = faults == "ok"
    assert cols["vibration"][faults == "bearing_wear"].mean() > cols["vibration"][ok].mean() + 1
    assert cols["temperature"][faults == "overheating"].mean() > cols["temperature"][ok].mean() + 3
    assert cols["pressure"][faults == "pressure_leak"].mean() < cols["pressure"][ok].mean() - 0.5


def test_no_faults_at_rate_zero() -> None:
    cols = simulate_sensors(SensorSimulation(readings=500, fault_rate=0))
    assert set(cols["fault"]) == {"ok"}


@pytest.mark.parametrize("kind", ["offset", "scale", "noise", "stuck"])
def test_drift_hits_only_the_chosen_machine_after_its_start(kind: str) -> None:
    base = SensorSimulation(machines=2, readings=400, seed=9, fault_rate=0)
    drifted = SensorSimulation(
        machines=2,
        readings=400,
        seed=9,
        fault_rate=0,
        drift=(Drift("temperature", kind, 5.0 if kind != "scale" else 1.5, 0.5, ("pump-001",)),),  # type: ignore[arg-type]
    )
    a, b = simulate_sensors(base), simulate_sensors(drifted)
    first, second = a["machine_id"] == "pump-000", a["machine_id"] == "pump-001"
    assert np.array_equal(a["temperature"][first], b["temperature"][first])
    before, after = slice(0, 200), slice(200, 400)
    assert np.array_equal(a["temperature"][second][before], b["temperature"][second][before])
    assert not np.array_equal(a["temperature"][second][after], b["temperature"][second][after])
    if kind == "stuck":
        assert len(set(b["temperature"][second][after])) == 1
    if kind == "offset":
        assert np.allclose(b["temperature"][second][after] - a["temperature"][second][after], 5, atol=1e-3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("temperature:offset:5", Drift("temperature", "offset", 5.0, 0.5)),
        ("vibration:scale:1.2:0.25", Drift("vibration", "scale", 1.2, 0.25)),
        ("rpm:stuck:0:0.1:pump-000,pump-002", Drift("rpm", "stuck", 0.0, 0.1, ("pump-000", "pump-002"))),
    ],
)
def test_parse_drift(text: str, expected: Drift) -> None:
    assert parse_drift(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "temperature",
        "temperature:offset",
        "temperature:tilt:1",
        "temperature:offset:x",
        "humidity:offset:1",
        "temperature:offset:1:1.5",
    ],
)
def test_parse_drift_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"drift|sensor|fraction"):
        parse_drift(text)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SensorSimulation(machines=0)
    with pytest.raises(ValueError, match="interval_s"):
        SensorSimulation(interval_s=0)
    with pytest.raises(ValueError, match="fault_rate"):
        SensorSimulation(fault_rate=1.5)


def test_writers_round_trip() -> None:
    cols = simulate_sensors(SensorSimulation(machines=2, readings=5))
    buf = io.StringIO()
    assert write_csv(cols, buf) == 10
    lines = buf.getvalue().splitlines()
    assert lines[0].split(",") == list(cols)
    assert lines[1].split(",")[1] == "2026-01-05T00:00:00.000Z"
    buf = io.StringIO()
    assert write_jsonl(cols, buf) == 10
    first = json.loads(buf.getvalue().splitlines()[0])
    assert first["machine_id"] == "pump-000"
    assert isinstance(first["temperature"], float)
    assert first["is_anomaly"] in (True, False)
