"""Schema enforcement: every row is typed per the schema or quarantined with its reason, never lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml.errors import UserError
from edgeml.ingest.coerce import QUARANTINE_SCHEMA, Coerced, arrow_schema, coerce_batch
from edgeml.spec.models import Schema

CATEGORIES = ["ok", "bearing_wear", "overheating", "pressure_leak"]


def schema_of(**columns: dict[str, Any]) -> Schema:
    return Schema.model_validate({"columns": columns})


def one_column(kind: str, cells: list[Any], **extra: Any) -> Coerced:
    schema = schema_of(x={"type": kind, **extra})
    return coerce_batch(pd.DataFrame({"x": cells}), schema, source="plant")


def clean_values(result: Coerced, column: str = "x") -> list[Any]:
    return list(result.clean.column(column).to_pylist())


def reasons(result: Coerced) -> list[str]:
    return [str(r) for r in result.quarantine.column("reason").to_pylist()]


# ------------------------------------------------------------------------- type by type


def test_floats_parse_with_surrounding_spaces_and_exponents() -> None:
    result = one_column("float", ["1.5", " 2 ", "-3e2", "0", "abc", "1,5"])
    assert clean_values(result) == [1.5, 2.0, -300.0, 0.0]
    assert result.clean.schema.field("x").type == pa.float64()
    assert reasons(result) == ["x: not a number (abc)", "x: not a number (1,5)"]
    assert result.problems == {"x: not a number": 2}


def test_ints_accept_whole_numbers_and_quarantine_fractions() -> None:
    result = one_column("int", ["1", "2.0", "-7", " 42 ", "2.5", "seven"])
    assert clean_values(result) == [1, 2, -7, 42]
    assert result.clean.schema.field("x").type == pa.int64()
    assert reasons(result) == ["x: not an integer (2.5)", "x: not an integer (seven)"]


@pytest.mark.parametrize("value", ["inf", "-inf", "1e30", "9.3e18", "-9.3e18"])
def test_ints_quarantine_infinite_and_out_of_range_values(value: str) -> None:
    # These once raised (OverflowError / invalid cast) instead of quarantining the row.
    result = one_column("int", ["5", value])
    assert clean_values(result) == [5]
    assert reasons(result) == [f"x: not an integer ({value})"]


def test_ints_from_a_float_column_keep_whole_values() -> None:
    result = one_column("int", [1.0, 2.5, None, 3.0], nullable=True)
    assert clean_values(result) == [1, None, 3]
    assert reasons(result) == ["x: not an integer (2.5)"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("true", True),
        ("True", True),
        ("T", True),
        ("yes", True),
        ("Y", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("F", False),
        ("no", False),
        ("N", False),
        ("0", False),
        ("OFF", False),
    ],
)
def test_bool_words(word: str, expected: bool) -> None:
    result = one_column("bool", [word])
    assert clean_values(result) == [expected]
    assert result.quarantine.num_rows == 0


def test_bool_rejects_other_words_and_keeps_native_bools() -> None:
    result = one_column("bool", ["maybe", "2", "yes"])
    assert clean_values(result) == [True]
    assert reasons(result) == ["x: not true/false (maybe)", "x: not true/false (2)"]
    native = one_column("bool", [True, False])
    assert clean_values(native) == [True, False]
    assert native.clean.schema.field("x").type == pa.bool_()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05T10:00:00Z", datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("2026-01-05T10:00:00.250Z", datetime(2026, 1, 5, 10, 0, 0, 250_000, tzinfo=UTC)),
        ("2026-01-05T12:00:00+02:00", datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("2026-01-05T05:30:00-04:30", datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("2026-01-05 10:00:00", datetime(2026, 1, 5, 10, tzinfo=UTC)),  # naive: taken as UTC
        ("2026-01-05", datetime(2026, 1, 5, tzinfo=UTC)),
    ],
)
def test_iso_8601_timestamps_become_utc(text: str, expected: datetime) -> None:
    result = one_column("timestamp", [text])
    assert result.quarantine.num_rows == 0, reasons(result)
    assert clean_values(result) == [expected]
    assert result.clean.schema.field("x").type == pa.timestamp("ms", tz="UTC")


def test_timestamps_with_different_offsets_in_one_column() -> None:
    result = one_column("timestamp", ["2026-01-05T10:00:00Z", "2026-01-05T11:00:00+01:00"])
    assert clean_values(result) == [datetime(2026, 1, 5, 10, tzinfo=UTC)] * 2


@pytest.mark.parametrize("text", ["05/01/2026", "2026-13-01T00:00:00Z", "yesterday", "2026-01-05T25:00:00"])
def test_non_iso_timestamps_are_quarantined(text: str) -> None:
    result = one_column("timestamp", ["2026-01-05T10:00:00Z", text])
    assert result.clean.num_rows == 1
    assert reasons(result) == [f"x: not an ISO 8601 timestamp ({text})"]


def test_numeric_timestamps_are_unix_epoch_seconds() -> None:
    ints = one_column("timestamp", [1_767_571_200, 1_767_571_260])
    assert clean_values(ints) == [datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 5, 0, 1, tzinfo=UTC)]
    floats = one_column("timestamp", [1_767_571_200.5])
    assert clean_values(floats) == [datetime(2026, 1, 5, 0, 0, 0, 500_000, tzinfo=UTC)]


def test_native_datetimes_pass_through_as_utc() -> None:
    naive = pd.to_datetime(["2026-01-05T10:00:00"])
    result = one_column("timestamp", list(naive))
    assert clean_values(result) == [datetime(2026, 1, 5, 10, tzinfo=UTC)]


def test_category_values_are_enforced() -> None:
    result = one_column("category", ["ok", "overheating", "broken", "OK"], values=CATEGORIES)
    assert clean_values(result) == ["ok", "overheating"]
    allowed = ", ".join(CATEGORIES)
    assert reasons(result) == [f"x: not one of {allowed} (broken)", f"x: not one of {allowed} (OK)"]


def test_category_without_values_and_strings_accept_anything() -> None:
    assert clean_values(one_column("category", ["a", "b"])) == ["a", "b"]
    assert clean_values(one_column("string", ["a", 7, 2.5])) == ["a", "7", "2.5"]
    assert clean_values(one_column("text", ["a long text, with commas"])) == ["a long text, with commas"]


# ---------------------------------------------------------------------- nulls and columns


@pytest.mark.parametrize("kind", ["float", "int", "bool", "timestamp", "string", "category"])
def test_blank_cells_are_null(kind: str) -> None:
    result = one_column(kind, ["", "   ", None])
    assert result.quarantine.num_rows == 0
    assert clean_values(result) == [None, None, None]


def test_nulls_in_a_required_column_are_quarantined_with_the_reason() -> None:
    schema = schema_of(id={"type": "string", "nullable": False}, v={"type": "float", "nullable": False})
    frame = pd.DataFrame({"id": ["a", "", "c", None], "v": ["1", "2", "", "x"]})
    result = coerce_batch(frame, schema, source="plant")
    assert result.clean.column("id").to_pylist() == ["a"]
    assert reasons(result) == ["id: missing", "v: missing", "id: missing; v: not a number (x)"]
    assert result.problems == {
        "id: missing (column is required)": 2,
        "v: missing (column is required)": 1,
        "v: not a number": 1,
    }


def test_a_missing_required_column_is_a_user_error_naming_source_and_columns() -> None:
    schema = schema_of(ts={"type": "timestamp", "nullable": False}, v={"type": "float"})
    with pytest.raises(UserError) as info:
        coerce_batch(pd.DataFrame({"time": ["x"], "value": ["1"]}), schema, source="historian")
    message = str(info.value)
    assert "'historian'" in message
    assert "'ts'" in message
    assert "time, value" in message
    assert "nullable" in (info.value.hint or "")


def test_a_missing_nullable_column_is_filled_with_nulls() -> None:
    schema = schema_of(id={"type": "string", "nullable": False}, v={"type": "float"}, t={"type": "timestamp"})
    result = coerce_batch(pd.DataFrame({"id": ["a", "b"]}), schema, source="plant")
    assert result.quarantine.num_rows == 0
    assert result.clean.column("v").to_pylist() == [None, None]
    assert result.clean.column("t").to_pylist() == [None, None]
    assert result.clean.schema == arrow_schema(schema)


def test_extra_columns_are_ignored_and_reported() -> None:
    schema = schema_of(id={"type": "string"})
    result = coerce_batch(pd.DataFrame({"id": ["a"], "operator": ["x"], "note": ["y"]}), schema, source="p")
    assert result.ignored_columns == ("operator", "note")
    assert result.clean.column_names == ["id"]


def test_clean_rows_follow_the_schema_order_and_types() -> None:
    schema = schema_of(a={"type": "int"}, b={"type": "string"}, c={"type": "bool"})
    frame = pd.DataFrame({"c": ["yes"], "b": ["x"], "a": ["3"]})
    result = coerce_batch(pa.Table.from_pandas(frame), schema, source="p")  # an Arrow table works too
    assert result.clean.schema == arrow_schema(schema)
    assert result.clean.to_pylist() == [{"a": 3, "b": "x", "c": True}]
    assert result.quarantine.schema == QUARANTINE_SCHEMA


def test_quarantine_rows_carry_the_raw_row_as_json_and_a_precise_reason() -> None:
    schema = schema_of(
        id={"type": "string", "nullable": False},
        temperature={"type": "float"},
        fault={"type": "category", "values": CATEGORIES},
    )
    frame = pd.DataFrame(
        {"id": ["a", "b"], "temperature": ["21.5", "hot"], "fault": ["ok", "smoke"], "extra": ["e1", "e2"]}
    )
    result = coerce_batch(frame, schema, source="plant")
    assert result.clean.num_rows == 1
    row = result.quarantine.to_pylist()[0]
    assert row["source"] == "plant"
    assert json.loads(row["row"]) == {"id": "b", "temperature": "hot", "fault": "smoke", "extra": "e2"}
    assert row["reason"] == (
        f"temperature: not a number (hot); fault: not one of {', '.join(CATEGORIES)} (smoke)"
    )


def test_values_outside_min_max_are_quarantined_with_the_range() -> None:
    result = one_column("float", ["-40", "21.5", "150", "999", "-41", None, "hot"], min=-40, max=150)
    assert clean_values(result) == [-40.0, 21.5, 150.0, None]
    assert reasons(result) == [
        "x: outside [-40, 150] (999)",
        "x: outside [-40, 150] (-41)",
        "x: not a number (hot)",
    ]
    assert result.problems == {"x: outside [-40, 150]": 2, "x: not a number": 1}


def test_a_one_sided_range_and_an_int_column() -> None:
    result = one_column("int", ["0", "3", "-1", "2.5"], min=0)
    assert clean_values(result) == [0, 3]
    assert reasons(result) == ["x: outside [0, ∞] (-1)", "x: not an integer (2.5)"]
    result = one_column("float", ["1e9", "inf", "5"], max=1000)
    assert clean_values(result) == [5.0]
    assert result.problems == {"x: outside [-∞, 1000]": 2}


def test_the_arrow_path_quarantines_out_of_range_values_too() -> None:
    schema = schema_of(x={"type": "float", "min": 0, "max": 10}, y={"type": "int", "max": 5})
    table = pa.table({"x": pa.array([1.0, 12.0, 3.0]), "y": pa.array([1, 2, 9])})
    result = coerce_batch(table, schema, source="plant")
    assert result.clean.to_pylist() == [{"x": 1.0, "y": 1}]
    assert reasons(result) == ["x: outside [0, 10] (12.0)", "y: outside [-∞, 5] (9)"]


def test_a_long_bad_value_is_shortened_in_the_reason_but_kept_in_the_row() -> None:
    value = "z" * 500
    result = one_column("float", [value])
    assert reasons(result) == [f"x: not a number ({'z' * 60})"]
    assert json.loads(result.quarantine.column("row")[0].as_py()) == {"x": value}


def test_an_empty_batch_gives_empty_typed_tables() -> None:
    schema = schema_of(a={"type": "int", "nullable": False}, t={"type": "timestamp"})
    result = coerce_batch(pd.DataFrame({"a": pd.Series([], dtype=object)}), schema, source="p")
    assert result.clean.num_rows == 0
    assert result.clean.schema == arrow_schema(schema)
    assert result.quarantine.num_rows == 0


# ------------------------------------------------------------------------------- property

FUZZ_SCHEMA = schema_of(
    row_id={"type": "string", "nullable": False},
    f={"type": "float"},
    i={"type": "int"},
    b={"type": "bool"},
    t={"type": "timestamp", "nullable": False},
    c={"type": "category", "values": ["a", "b"]},
    s={"type": "string", "nullable": False},
    x={"type": "text"},
)
# Arbitrary text (valid Unicode: readers hand over decoded strings), blanks, and near-misses.
CELL = st.one_of(
    st.none(),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=16),
    st.sampled_from(
        [
            "",
            " ",
            "1",
            "-2",
            "2.5",
            "1e30",
            "inf",
            "-inf",
            "nan",
            "NaN",
            "true",
            "No",
            "on",
            "2026-01-05T10:00:00Z",
            "2026-01-05 10:00:00+02:00",
            "2026-02-30",
            "a",
            "b",
            "A",
        ]
    ),
)
ROW = st.fixed_dictionaries({name: CELL for name in FUZZ_SCHEMA.columns if name != "row_id"})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ROW, max_size=12))
def test_every_row_lands_in_exactly_one_table(rows: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(
        [{"row_id": f"r{n}", **row} for n, row in enumerate(rows)], columns=list(FUZZ_SCHEMA.columns)
    )
    result = coerce_batch(frame, FUZZ_SCHEMA, source="fuzz")
    assert result.clean.num_rows + result.quarantine.num_rows == len(frame)
    clean_ids = result.clean.column("row_id").to_pylist()
    quarantined = [json.loads(r) for r in result.quarantine.column("row").to_pylist()]
    quarantined_ids = [r["row_id"] for r in quarantined]
    assert sorted(clean_ids + quarantined_ids) == sorted(frame["row_id"])
    assert all(result.quarantine.column("reason").to_pylist())
    assert sum(result.problems.values()) >= result.quarantine.num_rows
    assert result.clean.schema == arrow_schema(FUZZ_SCHEMA)
