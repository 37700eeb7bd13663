"""Each expectation kind on good data and on bad data: verdict, count, detail, examples, mask."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter

from edgeml.spec.models import Expectation, Schema
from edgeml.validate.expectations import CHECKS, PART_COLUMN, Outcome, evaluate, expectation_name

SCHEMA = Schema.model_validate(
    {
        "columns": {
            "ts": {"type": "timestamp"},
            "machine": {"type": "string"},
            "temp": {"type": "float"},
            "code": {"type": "string"},
            "count": {"type": "int"},
            "other_ts": {"type": "timestamp"},
        },
        "timestamp": "ts",
        "entity": "machine",
    }
)
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ROW_LEVEL = {"not_null", "unique", "between", "in_set", "regex", "monotonic_timestamp"}
DATASET_LEVEL = {"row_count", "freshness", "max_missing_fraction"}


def expectation(**fields: Any) -> Any:
    return TypeAdapter(Expectation).validate_python(fields)


def run(frame: pd.DataFrame, schema: Schema = SCHEMA, now: datetime = NOW, **fields: Any) -> Outcome:
    (outcome,) = evaluate(frame, [expectation(**fields)], schema, now)
    return outcome


def ts(*texts: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(texts), utc=True))


def frame(**columns: Any) -> pd.DataFrame:
    return pd.DataFrame(columns)


def mask_of(outcome: Outcome) -> list[bool]:
    assert outcome.rows is not None
    assert outcome.rows.dtype == bool
    return outcome.rows.tolist()


def test_every_kind_of_the_spec_has_a_check() -> None:
    kinds = {m.model_fields["kind"].annotation.__args__[0] for m in Expectation.__args__[0].__args__}
    assert kinds == set(CHECKS) == ROW_LEVEL | DATASET_LEVEL


# ------------------------------------------------------------------------------ row_count


def test_row_count_passes_within_bounds() -> None:
    outcome = run(frame(temp=[1.0, 2.0, 3.0]), kind="row_count", min=3, max=3)
    assert outcome.passed
    assert outcome.rows is None
    assert outcome.detail == "3 rows, expected 3..3"


@pytest.mark.parametrize(("bounds", "expected"), [({"min": 4}, "4..∞"), ({"max": 2}, "0..2")])
def test_row_count_fails_outside_bounds(bounds: dict[str, int], expected: str) -> None:
    outcome = run(frame(temp=[1.0, 2.0, 3.0]), kind="row_count", **bounds)
    assert not outcome.passed
    assert outcome.rows is None
    assert outcome.failing == 0
    assert outcome.detail == f"3 rows, expected {expected}"
    assert outcome.name == "row_count"
    assert outcome.column is None


def test_row_count_of_an_empty_dataset() -> None:
    assert not run(frame(temp=[]), kind="row_count", min=1).passed
    assert run(frame(temp=[]), kind="row_count", max=0).passed


# ------------------------------------------------------------------------------- not_null


def test_not_null_passes_without_missing_values() -> None:
    outcome = run(frame(temp=[1.0, 2.0]), kind="not_null", column="temp")
    assert outcome.passed
    assert mask_of(outcome) == [False, False]
    assert outcome.failing == 0


def test_not_null_flags_exactly_the_missing_rows() -> None:
    data = frame(temp=[1.0, None, 3.0, np.nan], code=["a", None, "c", "d"])
    outcome = run(data, kind="not_null", column="temp")
    assert not outcome.passed
    assert mask_of(outcome) == [False, True, False, True]
    assert outcome.failing == 2
    assert outcome.detail == "2 missing"
    assert outcome.name == "not_null(temp)"
    assert outcome.column == "temp"
    string_outcome = run(data, kind="not_null", column="code")
    assert mask_of(string_outcome) == [False, True, False, False]


# --------------------------------------------------------------------------------- unique


def test_unique_passes_when_the_key_is_unique() -> None:
    data = frame(machine=["a", "a", "b"], ts=ts("2024-01-01", "2024-01-02", "2024-01-01"))
    outcome = run(data, kind="unique", columns=["machine", "ts"])
    assert outcome.passed
    assert mask_of(outcome) == [False, False, False]


def test_unique_flags_repeats_but_keeps_the_first() -> None:
    data = frame(machine=["a", "a", "b", "a", "b"], code=["x", "y", "x", "x", "x"])
    outcome = run(data, kind="unique", columns=["machine", "code"])
    assert not outcome.passed
    assert mask_of(outcome) == [False, False, False, True, True]
    assert outcome.failing == 2
    assert outcome.detail == "2 duplicate rows"
    assert outcome.examples == [{"machine": "a", "code": "x"}, {"machine": "b", "code": "x"}]
    assert outcome.name == "unique(machine,code)"
    assert outcome.column == "machine,code"
    # one column alone is not unique in a different way
    assert run(data, kind="unique", columns=["machine"]).failing == 3


# -------------------------------------------------------------------------------- between


def test_between_passes_inclusive_of_its_bounds_and_ignores_missing() -> None:
    outcome = run(frame(temp=[0.0, 5.0, 10.0, None]), kind="between", column="temp", min=0, max=10)
    assert outcome.passed
    assert mask_of(outcome) == [False, False, False, False]


def test_between_flags_values_outside_either_bound() -> None:
    data = frame(temp=[-0.5, 5.0, 10.5, None, 3.0, 99.0])
    outcome = run(data, kind="between", column="temp", min=0, max=10)
    assert not outcome.passed
    assert mask_of(outcome) == [True, False, True, False, False, True]
    assert outcome.failing == 3
    assert outcome.detail == "3 outside [0.0, 10.0]"
    assert outcome.examples == [-0.5, 10.5, 99.0]


def test_between_with_one_bound_only() -> None:
    data = frame(temp=[-1.0, 1e9])
    assert mask_of(run(data, kind="between", column="temp", min=0)) == [True, False]
    assert mask_of(run(data, kind="between", column="temp", max=0)) == [False, True]


def test_between_examples_are_at_most_five() -> None:
    outcome = run(frame(temp=[float(v) for v in range(100, 110)]), kind="between", column="temp", max=1)
    assert outcome.failing == 10
    assert outcome.examples == [100.0, 101.0, 102.0, 103.0, 104.0]


# --------------------------------------------------------------------------------- in_set


def test_in_set_passes_for_allowed_values_and_missing_ones() -> None:
    outcome = run(frame(code=["ok", "fault", None]), kind="in_set", column="code", values=["ok", "fault"])
    assert outcome.passed
    assert mask_of(outcome) == [False, False, False]


def test_in_set_flags_values_outside_the_set() -> None:
    data = frame(code=pd.array(["ok", "OK", "fault", None, "broken"], dtype="string"))
    outcome = run(data, kind="in_set", column="code", values=["ok", "fault"])
    assert not outcome.passed
    assert mask_of(outcome) == [False, True, False, False, True]
    assert outcome.failing == 2
    assert outcome.detail == "2 not in the set"
    assert outcome.examples == ["OK", "broken"]
    assert outcome.name == "in_set(code)"


def test_in_set_of_numbers_accepts_numbers_and_their_text() -> None:
    numbers = frame(count=pd.array([1, 2, 3, None], dtype="Int64"))
    outcome = run(numbers, kind="in_set", column="count", values=[1, 2])
    assert mask_of(outcome) == [False, False, True, False]
    assert outcome.examples == [3]
    text = frame(code=["1", "2", "3"])
    assert mask_of(run(text, kind="in_set", column="code", values=[1, 2])) == [False, False, True]


# ---------------------------------------------------------------------------------- regex


def test_regex_passes_on_full_matches_and_missing_values() -> None:
    outcome = run(frame(code=["AB1", "ZZ9", None]), kind="regex", column="code", pattern=r"[A-Z]{2}\d")
    assert outcome.passed
    assert mask_of(outcome) == [False, False, False]


def test_regex_must_match_in_full() -> None:
    data = frame(code=pd.array(["AB1", "AB12", "xAB1", None, "ab1"], dtype="string"))
    outcome = run(data, kind="regex", column="code", pattern=r"[A-Z]{2}\d")
    assert not outcome.passed
    assert mask_of(outcome) == [False, True, True, False, True]
    assert outcome.failing == 3
    assert outcome.detail == "3 do not match '[A-Z]{2}\\\\d'"
    assert outcome.examples == ["AB12", "xAB1", "ab1"]


def test_regex_checks_numbers_by_their_text() -> None:
    outcome = run(frame(count=[12, 123, 7]), kind="regex", column="count", pattern=r"\d\d")
    assert mask_of(outcome) == [False, True, True]


# -------------------------------------------------------------------- monotonic_timestamp


def test_monotonic_passes_per_entity_even_when_entities_interleave() -> None:
    data = frame(
        machine=["a", "b", "a", "b", "a"],
        ts=ts(
            "2024-01-01T00:00", "2023-06-01T00:00", "2024-01-01T00:01", "2023-06-01T00:01", "2024-01-01T00:02"
        ),
    )
    for strict in (False, True):
        outcome = run(data, kind="monotonic_timestamp", strict=strict)
        assert outcome.passed, strict
        assert mask_of(outcome) == [False] * 5


def test_monotonic_non_strict_allows_equal_timestamps_but_not_going_back() -> None:
    data = frame(
        machine=["a", "a", "b", "a", "b", "a"],
        ts=ts(
            "2024-01-01T00:00",
            "2024-01-01T00:00",
            "2024-01-01T00:05",
            "2023-12-31T23:59",
            "2024-01-01T00:05",
            "2024-01-01T00:01",
        ),
    )
    outcome = run(data, kind="monotonic_timestamp", strict=False)
    assert not outcome.passed
    # row 3 goes back; row 5 is after row 3 (its predecessor in a), so it is fine
    assert mask_of(outcome) == [False, False, False, True, False, False]
    assert outcome.failing == 1
    assert outcome.detail == "1 rows before the previous reading"
    assert outcome.examples == [pd.Timestamp("2023-12-31T23:59", tz="UTC")]
    assert outcome.name == "monotonic_timestamp"
    assert outcome.column == "ts"  # the schema's timestamp, named even though the spec omits it


def test_monotonic_strict_also_refuses_equal_timestamps() -> None:
    data = frame(
        machine=["a", "a", "b", "a", "b", "a"],
        ts=ts(
            "2024-01-01T00:00",
            "2024-01-01T00:00",
            "2024-01-01T00:05",
            "2023-12-31T23:59",
            "2024-01-01T00:05",
            "2024-01-01T00:01",
        ),
    )
    outcome = run(data, kind="monotonic_timestamp", strict=True)
    assert mask_of(outcome) == [False, True, False, True, True, False]
    assert outcome.failing == 3
    assert outcome.detail == "3 rows not after the previous reading"


def test_monotonic_without_an_entity_compares_all_rows() -> None:
    schema = SCHEMA.model_copy(update={"entity": None})
    data = frame(machine=["a", "b", "a"], ts=ts("2024-01-01T00:02", "2024-01-01T00:01", "2024-01-01T00:03"))
    assert mask_of(run(data, schema, kind="monotonic_timestamp")) == [False, True, False]
    assert run(data, kind="monotonic_timestamp").passed  # per entity, the same rows are in order


def test_monotonic_on_a_named_column() -> None:
    data = frame(
        machine=["a", "a"], ts=ts("2024-01-01", "2024-01-02"), other_ts=ts("2024-01-02", "2024-01-01")
    )
    outcome = run(data, kind="monotonic_timestamp", column="other_ts")
    assert mask_of(outcome) == [False, True]
    assert outcome.name == "monotonic_timestamp(other_ts)"
    assert outcome.column == "other_ts"


def test_monotonic_order_is_only_known_within_a_part() -> None:
    """Parts of a snapshot have no order between them: the first row of a part has no predecessor."""
    data = frame(
        machine=["a", "a", "a", "a"],
        ts=ts("2024-01-02", "2024-01-03", "2024-01-01", "2024-01-02"),
    )
    # as one part, row 2 goes back in time
    assert mask_of(run(data, kind="monotonic_timestamp")) == [False, False, True, False]
    # as two parts, each in order on its own, nothing does
    data[PART_COLUMN] = [0, 0, 1, 1]
    assert run(data, kind="monotonic_timestamp").passed
    # within a part, going back is still caught
    data[PART_COLUMN] = [0, 1, 1, 1]
    assert mask_of(run(data, kind="monotonic_timestamp")) == [False, False, True, False]


# ------------------------------------------------------------------------------ freshness


def test_freshness_passes_when_the_newest_row_is_recent_enough() -> None:
    data = frame(ts=ts("2024-03-01T09:00Z", "2024-03-01T11:00Z", "2024-02-01T00:00Z"))
    outcome = run(data, kind="freshness", max_age="1h")
    assert outcome.passed
    assert outcome.rows is None
    assert outcome.detail == "newest row is 1:00:00 old (allowed 1:00:00)"  # the bound is inclusive
    assert outcome.examples == ["2024-03-01 11:00:00+00:00"]
    assert outcome.column == "ts"


def test_freshness_fails_when_the_newest_row_is_too_old() -> None:
    data = frame(ts=ts("2024-03-01T09:00Z", "2024-02-28T00:00Z"))
    outcome = run(data, kind="freshness", max_age="2h59m")
    assert not outcome.passed
    assert outcome.rows is None
    assert outcome.failing == 0
    assert outcome.detail == "newest row is 3:00:00 old (allowed 2:59:00)"
    assert outcome.examples == ["2024-03-01 09:00:00+00:00"]
    # the same data is fresh to an earlier clock
    assert run(data, now=datetime(2024, 3, 1, 10, 0, tzinfo=UTC), kind="freshness", max_age="2h59m").passed


def test_freshness_without_timestamps_fails() -> None:
    data = frame(ts=pd.Series(pd.to_datetime([None, None], utc=True)))
    outcome = run(data, kind="freshness", max_age="7d")
    assert not outcome.passed
    assert outcome.detail == "no timestamps at all"


# ------------------------------------------------------------------- max_missing_fraction


def test_max_missing_fraction_passes_at_the_bound() -> None:
    outcome = run(frame(temp=[1.0, None, 3.0, 4.0]), kind="max_missing_fraction", column="temp", max=0.25)
    assert outcome.passed
    assert outcome.rows is None
    assert outcome.detail == "25.00% missing (allowed 25.00%)"


def test_max_missing_fraction_fails_above_the_bound() -> None:
    outcome = run(frame(temp=[1.0, None, None, 4.0]), kind="max_missing_fraction", column="temp", max=0.25)
    assert not outcome.passed
    assert outcome.rows is None
    assert outcome.detail == "50.00% missing (allowed 25.00%)"
    assert outcome.name == "max_missing_fraction(temp)"


def test_max_missing_fraction_of_an_empty_dataset_is_zero() -> None:
    assert run(frame(temp=[]), kind="max_missing_fraction", column="temp", max=0).passed


# -------------------------------------------------------------------------------- evaluate


def test_evaluate_runs_every_expectation_and_keeps_names_severity_and_order() -> None:
    data = frame(
        ts=ts("2024-03-01T11:00Z", "2024-03-01T10:00Z"),
        machine=["a", "a"],
        temp=[None, 200.0],
        code=["x", "y"],
    )
    exps = [
        expectation(kind="not_null", column="temp", severity="warn"),
        expectation(kind="between", column="temp", max=100, name="temp sane"),
        expectation(kind="row_count", min=1),
        expectation(kind="monotonic_timestamp"),
    ]
    outcomes = evaluate(data, exps, SCHEMA, NOW)
    assert [o.name for o in outcomes] == ["not_null(temp)", "temp sane", "row_count", "monotonic_timestamp"]
    assert [o.severity for o in outcomes] == ["warn", "error", "error", "error"]
    assert [o.passed for o in outcomes] == [False, False, True, False]
    assert [o.failing for o in outcomes] == [1, 1, 0, 1]
    assert [expectation_name(e) for e in exps] == [o.name for o in outcomes]
    doc = outcomes[1].to_json()
    assert doc == {
        "name": "temp sane",
        "kind": "between",
        "column": "temp",
        "severity": "error",
        "passed": False,
        "failing": 1,
        "detail": "1 outside [None, 100.0]",
        "examples": ["200.0"],
    }


@pytest.mark.parametrize("kind", sorted(ROW_LEVEL))
def test_row_level_checks_return_a_mask_of_every_row(kind: str) -> None:
    fields: dict[str, Any] = {
        "not_null": {"column": "temp"},
        "unique": {"columns": ["temp"]},
        "between": {"column": "temp", "min": 0},
        "in_set": {"column": "code", "values": ["x"]},
        "regex": {"column": "code", "pattern": "x"},
        "monotonic_timestamp": {},
    }[kind]
    data = frame(
        ts=ts("2024-01-01", "2024-01-02", "2024-01-03"),
        machine=["a"] * 3,
        temp=[1.0, 2.0, 3.0],
        code=["x", "x", "x"],
    )
    outcome = run(data, kind=kind, **fields)
    assert outcome.passed
    assert mask_of(outcome) == [False, False, False]


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "row_count", "min": 1},
        {"kind": "freshness", "max_age": "1d"},
        {"kind": "max_missing_fraction", "column": "temp", "max": 0.5},
    ],
    ids=["row_count", "freshness", "max_missing_fraction"],
)
def test_dataset_level_checks_return_no_mask(fields: dict[str, Any]) -> None:
    data = frame(ts=ts("2024-03-01T11:00Z"), temp=[1.0])
    outcome = run(data, **fields)
    assert outcome.passed
    assert outcome.rows is None
    assert outcome.to_json()["failing"] == 0
