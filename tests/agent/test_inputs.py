"""Request parsing against a manifest's input schema: JSON records and OIP v2 tensors."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml.agent.inputs import Batch, InputError, Schema
from edgeml.bundle.manifest import InputField

FIELDS = [
    InputField(name="temp", kind="numeric", dtype="float64", nullable=False, min=-50, max=150, unit="C"),
    InputField(name="vib", kind="numeric", dtype="float32"),
    InputField(name="machine", kind="categorical", dtype="string", values=["m1", "m2"]),
    InputField(name="note", kind="text", dtype="string", nullable=False),
    InputField(name="ts", kind="time", dtype="float64", nullable=False),
]
ROW: dict[str, Any] = {"temp": 20.5, "vib": 1, "machine": "m1", "note": "hello", "ts": 1_700_000_000}


@pytest.fixture
def schema() -> Schema:
    return Schema(FIELDS, max_rows=4)


def row(**changes: Any) -> dict[str, Any]:
    out = {**ROW, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def tensor(
    name: str, data: list[Any], datatype: str = "FP64", shape: list[int] | None = None
) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data), 1], "data": data}


def v2_request(rows: int = 1, **replace: Any) -> dict[str, Any]:
    tensors = {
        "temp": tensor("temp", [20.5] * rows),
        "vib": tensor("vib", [1.0] * rows, "FP32"),
        "machine": tensor("machine", ["m2"] * rows, "BYTES"),
        "note": tensor("note", ["x"] * rows, "BYTES"),
        "ts": tensor("ts", ["2024-01-01T00:00:00Z"] * rows, "BYTES"),
    }
    tensors.update(replace)
    return {"inputs": [t for t in tensors.values() if t is not None]}


# --- JSON records -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [ROW, [ROW, ROW], {"records": [ROW, ROW, ROW]}], ids=["one-object", "bare-list", "records"]
)
def test_the_three_record_shapes_give_columns_and_typed_feeds(schema: Schema, body: Any) -> None:
    batch = schema.parse_records(body)
    rows = (
        1
        if isinstance(body, dict) and "records" not in body
        else len(body if isinstance(body, list) else body["records"])
    )
    assert batch.rows == rows
    if rows == 1:  # the one-row fast path: each column is a one-item tuple of the value
        assert batch.columns["temp"] == (20.5,)
        assert batch.columns["vib"] == (1.0,)
        assert type(batch.columns["vib"][0]) is float  # sent as the integer 1
    else:
        assert batch.columns["temp"].dtype == np.float64
        assert batch.columns["temp"].shape == (rows,)
    assert batch.feeds["temp"].shape == (rows, 1)
    assert batch.feeds["temp"].dtype == np.float64
    assert batch.feeds["vib"].dtype == np.float32  # the graph's element type
    assert batch.feeds["machine"].dtype == object
    assert batch.feeds["machine"][0, 0] == "m1"
    assert batch.feeds["ts"][0, 0] == 1_700_000_000.0


def test_missing_nullable_values_are_nan_or_none_and_strings_feed_empty(schema: Schema) -> None:
    batch = schema.parse_records({"records": [row(vib=..., machine=None), row(vib=None, machine="m2")]})
    assert np.isnan(batch.columns["vib"]).all()
    assert list(batch.columns["machine"]) == [None, "m2"]  # observers see the missing value
    assert batch.feeds["machine"].ravel().tolist() == ["", "m2"]  # the graph gets "" for it


def test_nan_is_missing_where_nullable(schema: Schema) -> None:
    assert np.isnan(schema.parse_records(row(vib=math.nan)).columns["vib"][0])


@pytest.mark.parametrize(
    ("stamp", "epoch"),
    [
        ("2024-01-01T00:00:00Z", 1_704_067_200.0),
        ("2024-01-01T00:00:00", 1_704_067_200.0),  # no zone: UTC, as in training
        ("2024-01-01T01:00:00+01:00", 1_704_067_200.0),
        ("2024-01-01", 1_704_067_200.0),
        (1_704_067_200, 1_704_067_200.0),
        (1_704_067_200.5, 1_704_067_200.5),
    ],
)
def test_time_takes_epoch_seconds_or_iso_8601(schema: Schema, stamp: Any, epoch: float) -> None:
    assert schema.parse_records(row(ts=stamp)).columns["ts"][0] == epoch


BAD_RECORDS = [
    ("unknown input", row(pressure=1.0), "pressure", "unknown input"),
    ("missing required", row(temp=...), "temp", "required"),
    ("null where required", row(note=None), "note", "required"),
    ("NaN where required", row(temp=math.nan), "temp", "required"),
    ("string for a number", row(temp="20"), "temp", "expected a number"),
    ("boolean for a number", row(vib=True), "vib", "got a boolean"),
    ("list for a number", row(vib=[1.0]), "vib", "got a list"),
    ("number for a string", row(note=3), "note", "expected a string"),
    ("object for a string", row(note={"a": 1}), "note", "got an object"),
    ("infinity", row(vib=math.inf), "vib", "not a finite number"),
    ("huge integer", row(temp=10**400), "temp", "not a finite number"),
    ("beyond float32", row(vib=1e300), "vib", "float32"),
    ("above max", row(temp=150.5), "temp", "above the maximum 150"),
    ("below min", row(temp=-51), "temp", "below the minimum -50"),
    ("unknown category", row(machine="m9"), "machine", "not one of the categories"),
    ("bad time", row(ts="yesterday"), "ts", "ISO-8601"),
    ("no such month", row(ts="2024-13-01"), "ts", "ISO-8601"),
    ("boolean time", row(ts=False), "ts", "epoch seconds"),
    ("too many rows", {"records": [ROW] * 5}, "records", "more than this server takes per request (4)"),
    ("no rows", {"records": []}, "records", "no rows"),
    ("records not a list", {"records": ROW}, "records", "list"),
    ("key beside records", {"records": [ROW], "id": 1}, "id", "unknown key"),
    ("record not an object", {"records": [ROW, 3]}, "records[1]", "JSON object"),
    ("not an object", "hello", "body", "JSON object"),
]


@pytest.mark.parametrize(
    ("body", "field", "message"), [b[1:] for b in BAD_RECORDS], ids=[b[0] for b in BAD_RECORDS]
)
def test_bad_records_name_the_field(schema: Schema, body: Any, field: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        schema.parse_records(body)
    assert caught.value.field == field
    assert message in caught.value.detail
    assert caught.value.status == 422


def test_an_input_named_records_is_an_input_not_the_batch_key() -> None:
    schema = Schema([InputField(name="records", kind="numeric", dtype="float64")])
    assert list(schema.parse_records({"records": 2.0}).columns["records"]) == [2.0]
    with pytest.raises(InputError, match="expected a number"):
        schema.parse_records({"records": [{"records": 2.0}]})


# --- the one-row fast path -----------------------------------------------------------------

EDGES = [
    math.nan,
    math.inf,
    -math.inf,
    -50.0,
    -50.000001,
    150.0,
    150.5,
    3.4028234663852886e38,  # float32 max: refused, as the general path refuses it
    3.4028234663852884e38,  # just below: taken
    -3.4028234663852886e38,
    1e300,
    10**400,
    -(10**400),
    0,
    -0.0,
    True,
    None,
    "1",
]
VALID_RECORDS = st.fixed_dictionaries(
    {
        "temp": st.floats(-50, 150) | st.integers(-50, 150),
        "vib": st.floats(-3e38, 3e38) | st.integers(-(10**20), 10**20),
        "machine": st.sampled_from(["m1", "m2"]),
        "note": st.text(max_size=5),
        "ts": st.floats(-1e12, 1e12) | st.integers(0, 2**40),
    }
)
ODD_VALUES = st.sampled_from(EDGES) | st.floats() | st.integers() | st.text(max_size=3) | st.none()


@st.composite
def _near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record with up to two values changed to odd ones and maybe one left out."""
    record: dict[str, Any] = draw(VALID_RECORDS)
    changed = draw(st.dictionaries(st.sampled_from([*ROW, "other"]), ODD_VALUES, max_size=2))
    dropped = draw(st.sets(st.sampled_from(list(ROW)), max_size=1))
    return {k: v for k, v in {**record, **changed}.items() if k not in dropped}


EDGE_RECORDS = _near_valid()


def _outcome(parse: Any, body: Any) -> tuple[str, Any]:
    """("ok", rows, columns and feeds as plain lists) or ("refused", the error) of one parse."""
    try:
        batch = parse(body)
    except InputError as exc:
        return "refused", (exc.field, exc.detail, exc.status)
    columns = {name: [None if _nan(v) else v for v in list(c)] for name, c in batch.columns.items()}
    feeds = {
        name: (f.dtype.str, f.shape, [None if _nan(v) else v for v in f.ravel().tolist()])
        for name, f in batch.feeds.items()
    }
    Schema.release(batch)
    return "ok", (batch.rows, columns, feeds)


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


DATATYPES = {
    "temp": ["FP64", "FP32", "INT64", "BYTES"],
    "vib": ["FP32", "FP64", "INT32"],
    "machine": ["BYTES", "FP64"],
    "note": ["BYTES"],
    "ts": ["BYTES", "FP64", "INT64"],
}


@st.composite
def _one_row_v2(draw: st.DrawFn) -> dict[str, Any]:
    """A near-valid record as a one-row OIP v2 request: JSON data, or binary data (as decoded)."""
    from edgeml.agent.oip import from_bytes

    record = draw(EDGE_RECORDS)
    tensors = []
    for name, value in record.items():
        kinds = DATATYPES.get(name, ["FP64"])
        kind = draw(st.sampled_from(kinds))
        data: Any = [value]
        if kind == "FP64" and type(value) is float and draw(st.booleans()):
            data = from_bytes(name, "FP64", np.float64(value).tobytes())  # as a binary tensor arrives
        elif draw(st.integers(0, 9)) == 0:
            data = [[value]]  # nested as rows
        shape = draw(st.sampled_from([[1, 1], [1], [1, 1], [2, 1], [1, 2], [1.0, 1], [True], "1"]))
        if draw(st.integers(0, 19)) == 0:
            kind = draw(st.sampled_from([["FP64"], {"t": 1}, None]))
        tensors.append({"name": name, "datatype": kind, "shape": shape, "data": data})
    body: dict[str, Any] = {"inputs": tensors}
    if draw(st.booleans()):
        body["id"] = draw(st.sampled_from(["r1", 7, None]))
    if draw(st.booleans()):
        body["outputs"] = draw(st.sampled_from([[{"name": "y"}], [{"nom": "y"}], "y"]))
    return body


def _v2_outcome(parse: Any, body: Any) -> tuple[str, Any]:
    outcome = _outcome(parse, copy.deepcopy(body))
    if outcome[0] == "refused":
        return outcome
    batch = parse(copy.deepcopy(body))
    Schema.release(batch)
    return outcome[0], (outcome[1], batch.request_id, batch.outputs)


@settings(max_examples=500, deadline=None)
@given(body=_one_row_v2())
def test_the_v2_one_row_shortcut_takes_and_refuses_exactly_what_the_general_path_does(body: Any) -> None:
    schema = Schema(FIELDS, max_rows=4)
    assert _v2_outcome(schema.parse_v2, body) == _v2_outcome(schema._parse_v2, body)


def test_one_row_feeds_are_recycled_only_once_released(schema: Schema) -> None:
    first = schema.parse_records(ROW)
    second = schema.parse_records(row(temp=30.0))
    assert first.feeds is not second.feeds  # not released yet: each batch has its own buffers
    assert first.feeds["temp"][0, 0] == 20.5
    Schema.release(first)
    Schema.release(first)  # a second release does nothing
    third = schema.parse_records(row(temp=40.0, note="again"))
    fourth = schema.parse_records(row(temp=50.0))
    assert third.feeds is first.feeds  # the buffers were reused ...
    assert fourth.feeds is not third.feeds  # ... by one batch only
    assert third.feeds["temp"][0, 0] == 40.0
    assert third.feeds["note"][0, 0] == "again"
    assert second.feeds["temp"][0, 0] == 30.0
    assert third.columns["temp"] == (40.0,)
    assert first.columns["temp"] == (20.5,)  # columns are never reused: observers keep them


def test_releasing_a_batch_of_the_general_path_does_nothing(schema: Schema) -> None:
    batch = schema.parse_records([ROW, ROW])
    Schema.release(batch)
    assert batch.feeds["temp"].ravel().tolist() == [20.5, 20.5]
    assert schema.parse_records([ROW, ROW]).feeds is not batch.feeds


# --- Open Inference Protocol v2 -------------------------------------------------------------


def test_v2_tensors_become_columns(schema: Schema) -> None:
    body = v2_request(2, vib=tensor("vib", [[1.5], [2.5]], "FP32"), temp=tensor("temp", [1, 2], "INT64", [2]))
    body["id"] = "req-1"
    body["outputs"] = [{"name": "label"}]
    batch = schema.parse_v2(body)
    assert batch.rows == 2
    assert batch.columns["vib"].tolist() == [1.5, 2.5]  # nested rows are taken as [N, 1]
    assert batch.columns["temp"].tolist() == [1.0, 2.0]
    assert batch.columns["ts"].tolist() == [1_704_067_200.0] * 2
    assert batch.request_id == "req-1"
    assert batch.outputs == ("label",)


def test_v2_nullable_inputs_may_be_left_out(schema: Schema) -> None:
    batch = schema.parse_v2(v2_request(3, vib=None, machine=None))
    assert np.isnan(batch.columns["vib"]).all()
    assert batch.feeds["machine"].ravel().tolist() == ["", "", ""]


BAD_V2 = [
    ("unknown input", v2_request(pressure=tensor("pressure", [1.0])), "pressure", "unknown input"),
    ("missing required", v2_request(temp=None), "temp", "missing required input"),
    ("BYTES for a number", v2_request(temp=tensor("temp", ["1"], "BYTES")), "temp", "datatype 'BYTES'"),
    ("FP64 for a string", v2_request(note=tensor("note", [1.0], "FP64")), "note", "datatype 'FP64'"),
    ("BOOL for a number", v2_request(vib=tensor("vib", [True], "BOOL")), "vib", "datatype 'BOOL'"),
    ("unknown datatype", v2_request(vib=tensor("vib", [1.0], "FLOAT")), "vib", "datatype 'FLOAT'"),
    ("shape [N, 2]", v2_request(temp=tensor("temp", [1.0, 2.0], shape=[1, 2])), "temp", "expected [N, 1]"),
    ("shape of 3 dims", v2_request(temp=tensor("temp", [1.0], shape=[1, 1, 1])), "temp", "expected [N, 1]"),
    ("negative shape", v2_request(temp=tensor("temp", [1.0], shape=[-1, 1])), "temp", "expected [N, 1]"),
    ("shape not a list", v2_request(temp={**tensor("temp", [1.0]), "shape": "1"}), "temp", "expected [N, 1]"),
    ("data and shape differ", v2_request(temp=tensor("temp", [1.0], shape=[2, 1])), "temp", "says 2 values"),
    (
        "rows differ",
        v2_request(note=tensor("note", ["x", "y"], "BYTES")),
        "note",
        "has 2 rows, but temp has 1",
    ),
    (
        "nested wrongly",
        v2_request(temp=tensor("temp", [[1.0, 2.0]], shape=[1, 1])),
        "temp",
        "one value per row",
    ),
    (
        "data not a list",
        v2_request(temp={**tensor("temp", [1.0]), "data": 1.0}),
        "temp",
        "data must be a list",
    ),
    ("string value for FP64", v2_request(temp=tensor("temp", ["1"])), "temp", "expected a number"),
    ("above max", v2_request(temp=tensor("temp", [151.0])), "temp", "above the maximum"),
    ("null where required", v2_request(note=tensor("note", [None], "BYTES")), "note", "required"),
    ("unknown category", v2_request(machine=tensor("machine", ["m3"], "BYTES")), "machine", "categories"),
    ("too many rows", v2_request(5), "temp", "more than this server takes"),
    ("zero rows", v2_request(0), "temp", "no rows"),
    ("tensor key", v2_request(temp={**tensor("temp", [1.0]), "dims": 1}), "temp", "unknown key 'dims'"),
    ("tensor not an object", {"inputs": [1]}, "inputs[0]", "JSON object"),
    ("tensor without name", {"inputs": [{"data": [1]}]}, "inputs[0].name", "string"),
    ("inputs empty", {"inputs": []}, "inputs", "non-empty"),
    ("inputs missing", {"id": "x"}, "inputs", "non-empty"),
    ("top-level key", {**v2_request(), "extra": 1}, "extra", "unknown key"),
    ("id not a string", {**v2_request(), "id": 3}, "id", "string"),
    ("outputs not a list", {**v2_request(), "outputs": "label"}, "outputs", "list"),
    ("output without name", {**v2_request(), "outputs": [{}]}, "outputs[0]", "name"),
    ("body a list", [v2_request()], "body", "JSON object"),
]


@pytest.mark.parametrize(("body", "field", "message"), [b[1:] for b in BAD_V2], ids=[b[0] for b in BAD_V2])
def test_bad_v2_requests_name_the_field(schema: Schema, body: Any, field: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        schema.parse_v2(body)
    assert caught.value.field == field
    assert message in caught.value.detail
    assert caught.value.status == 422


def test_a_tensor_given_twice_is_refused(schema: Schema) -> None:
    body = v2_request()
    body["inputs"].append(tensor("temp", [1.0]))
    with pytest.raises(InputError, match="given twice") as caught:
        schema.parse_v2(body)
    assert caught.value.field == "temp"


# --- property tests -----------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: Python's json module writes them
    | st.text(max_size=12)
    | st.sampled_from([*ROW, "records", "inputs", "2024-01-01T00:00:00Z", "m1"]),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.sampled_from([*ROW, "records", "inputs", "name", "shape", "datatype", "data", "id", "outputs"])
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)
FIELD_VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
RECORDS = st.dictionaries(st.sampled_from([*ROW, "other"]), FIELD_VALUES, max_size=6)
TENSORS = st.builds(
    lambda name, datatype, shape, data: {"name": name, "datatype": datatype, "shape": shape, "data": data},
    st.sampled_from([*ROW, "other"]),
    st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL", "FP8"]),
    st.lists(st.integers(-1, 6), min_size=0, max_size=3),
    st.lists(FIELD_VALUES, max_size=6) | st.lists(st.lists(FIELD_VALUES, max_size=2), max_size=6),
)


def _parses_or_refuses(parse: Any, body: Any) -> None:
    try:
        batch = parse(body)
    except InputError as exc:
        refused = exc
    else:
        refused = None
    if refused is not None:
        assert refused.status == 422
        assert isinstance(refused.field, str)
        return
    assert isinstance(batch, Batch)
    assert 1 <= batch.rows <= 4
    for name, feed in batch.feeds.items():
        assert feed.shape == (batch.rows, 1), name
        if feed.dtype != object:
            assert np.isfinite(feed[~np.isnan(feed)]).all()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=JSON_VALUES)
def test_any_json_is_a_batch_or_an_input_error(body: Any) -> None:
    schema = Schema(FIELDS, max_rows=4)
    _parses_or_refuses(schema.parse_records, body)
    _parses_or_refuses(schema.parse_v2, body)


@settings(max_examples=300, deadline=None)
@given(records=st.lists(RECORDS, max_size=5), tensors=st.lists(TENSORS, max_size=6))
def test_near_miss_requests_are_a_batch_or_an_input_error(
    records: list[dict[str, Any]], tensors: list[dict[str, Any]]
) -> None:
    schema = Schema(FIELDS, max_rows=4)
    _parses_or_refuses(schema.parse_records, {"records": records})
    _parses_or_refuses(schema.parse_v2, {"inputs": tensors})


# --- bulk column checks against the value-by-value path -------------------------------------

#: mostly plain columns (so the bulk checks take many), with the values that must send them back
COLUMN_VALUES = st.sampled_from(["m1", "m2", 20.5, 1, -50, 150]) | FIELD_VALUES | st.just(10**400)


def _checked(check: Any, *args: Any) -> tuple[str, Any]:
    try:
        result = check(*args)
    except InputError as exc:
        return "refused", (exc.field, exc.detail)
    if isinstance(result, np.ndarray | list) and not isinstance(result, bool):
        return "taken", np.asarray(result, dtype=np.float64).tobytes()  # NaN equal to NaN
    return "taken", result


@settings(max_examples=400, deadline=None)
@given(
    spec=st.sampled_from(FIELDS),
    nullable=st.booleans(),
    value=COLUMN_VALUES,
    odd=st.lists(st.tuples(st.integers(0, 40), COLUMN_VALUES), max_size=3),
    rows=st.integers(0, 40),
)
def test_bulk_column_checks_take_and_refuse_as_the_value_by_value_checks(
    spec: InputField, nullable: bool, value: Any, odd: list[tuple[int, Any]], rows: int
) -> None:
    from edgeml.agent import inputs

    field = inputs._Field.of(spec.model_copy(update={"nullable": nullable}))
    values = [value] * rows  # a column repeats a few values; a few others put in
    for at, other in odd:
        if at < rows:
            values[at] = other
    if field.numeric:
        bulk = _checked(inputs._numbers, field, values)
        assert bulk == _checked(inputs._each_number, field, values)
        array = np.array([v for v in values if type(v) is float], dtype=np.float64)
        assert _checked(inputs._numbers, field, array) == _checked(inputs._each_number, field, array.tolist())
    else:
        assert _checked(inputs._strings, field, values) == _checked(inputs._each_string, field, values)
