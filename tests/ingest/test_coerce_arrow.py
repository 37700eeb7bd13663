"""The Arrow fast path of coerce_batch gives exactly what the pandas path gives."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from edgeml.ingest.coerce import coerce_batch
from edgeml.simulate.sensors import SensorSimulation, simulate_sensors, write_csv
from edgeml.spec import parse_spec

SPEC = """
name: fast
sources: [{name: f, kind: file, path: x.csv}]
schema:
  timestamp: ts
  columns:
    msg_id: {type: string, nullable: false}
    ts: {type: timestamp}
    machine_id: {type: string}
    temperature: {type: float}
    vibration: {type: float}
    pressure: {type: float}
    rpm: {type: float}
    power_kw: {type: float}
    fault: {type: category, values: [ok, bearing_wear, overheating, pressure_leak]}
    is_anomaly: {type: bool}
target: fault
task: classification
search: {families: [logistic], trials: 1}
features: {exclude: [msg_id]}
"""


def _strings(text: str, schema_names: list[str]) -> pa.Table:
    types = {name: pa.string() for name in schema_names}
    return pacsv.read_csv(
        io.BytesIO(text.encode()),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True),
    )


@pytest.fixture
def csv_text() -> str:
    out = io.StringIO()
    write_csv(simulate_sensors(SensorSimulation(machines=3, readings=200, seed=5)), out)
    return out.getvalue()


def test_clean_batch_same_result_both_paths(csv_text: str) -> None:
    spec = parse_spec(SPEC)
    table = _strings(csv_text, list(spec.schema_.columns))
    fast = coerce_batch(table, spec.schema_, source="f")
    slow = coerce_batch(table.to_pandas(), spec.schema_, source="f")
    assert fast.quarantine.num_rows == slow.quarantine.num_rows == 0
    assert fast.clean.schema == slow.clean.schema
    assert fast.clean.equals(slow.clean)


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("temperature", "ERR", "temperature: not a number"),
        ("temperature", " 21.5", None),  # Arrow refuses the space; pandas reads it: not a problem
        ("fault", "leaking", "fault: not one of"),
        ("msg_id", "", "msg_id: missing"),
        ("is_anomaly", "maybe", "is_anomaly: not true/false"),
        ("ts", "yesterday", "ts: not an ISO 8601 timestamp"),
    ],
)
def test_a_doubtful_cell_sends_the_batch_to_the_explaining_path(
    csv_text: str, column: str, value: str, problem: str | None
) -> None:
    spec = parse_spec(SPEC)
    lines = csv_text.splitlines()
    header = lines[0].split(",")
    cells = lines[5].split(",")
    cells[header.index(column)] = value
    lines[5] = ",".join(cells)
    table = _strings("\n".join(lines) + "\n", list(spec.schema_.columns))
    result = coerce_batch(table, spec.schema_, source="f")
    assert result.clean.num_rows + result.quarantine.num_rows == table.num_rows
    if problem is None:
        assert result.quarantine.num_rows == 0
    else:
        assert result.quarantine.num_rows == 1
        assert problem in result.quarantine["reason"][0].as_py()


@pytest.mark.parametrize("scale", [1, 1000])
def test_epoch_numbers_in_seconds_or_milliseconds(scale: int) -> None:
    import pandas as pd

    spec = parse_spec(SPEC)
    frame = pd.DataFrame({"msg_id": ["a", "b"], "ts": [1_767_225_600 * scale, 1_767_229_200 * scale]})
    result = coerce_batch(frame, spec.schema_, source="f")
    assert result.quarantine.num_rows == 0
    assert [str(t) for t in result.clean["ts"].to_pylist()] == [
        "2026-01-01 00:00:00+00:00",
        "2026-01-01 01:00:00+00:00",
    ]


def test_epoch_seconds_in_a_typed_arrow_column() -> None:
    spec = parse_spec(SPEC)
    table = pa.table({"msg_id": ["a"], "ts": pa.array([1_767_225_600], pa.int64())})
    result = coerce_batch(table, spec.schema_, source="f")
    assert str(result.clean["ts"][0].as_py()) == "2026-01-01 00:00:00+00:00"
