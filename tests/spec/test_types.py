"""Durations and names: the small value types of the spec."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from edgeml.spec.types import Duration, Identifier, Slug, parse_duration


class Holder(BaseModel):
    d: Duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        (" 2h ", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        ("1m30s250ms", timedelta(minutes=1, seconds=30, milliseconds=250)),
        ("0.000001s", timedelta(microseconds=1)),
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(hours=3), timedelta(hours=3)),
    ],
)
def test_durations_that_parse(value: Any, expected: timedelta) -> None:
    assert parse_duration(value) == expected
    assert Holder(d=value).d == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is not a duration; write e.g. '30s'"),
        ("x", "'x' is not a duration"),
        ("5 parsecs", "'5 parsecs' is not a duration"),
        ("5m5", "is not a duration"),
        ("m5", "is not a duration"),
        ("1e5s", "is not a duration"),
        ("5", "'5' has no unit; write e.g. '5s' or '5m'"),
        ("-5m", "a duration must be positive, got '-5m'"),
        ("0s", "a duration must be positive"),
        (0, "a duration must be positive, got 0"),
        (-1, "a duration must be positive, got -1"),
        (-0.5, "a duration must be positive"),
        (timedelta(0), "a duration must be positive"),
        (True, "a duration is a number of seconds or a string like '5m', '1h30m'"),
        (False, "a duration is a number of seconds or a string"),
        (None, "a duration is a number of seconds or a string"),
        ([5], "a duration is a number of seconds or a string"),
        (float("nan"), "nan is not a duration"),
        (float("inf"), "inf is not a duration"),
        (1e20, "too long for a duration"),
        ("9999999999999w", "too long for a duration"),
        ("0.0000001s", "shorter than a microsecond"),
    ],
)
def test_durations_that_do_not(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)
    with pytest.raises(ValidationError, match=re.escape(message)):
        Holder(d=value)


DURATIONS = st.timedeltas(min_value=timedelta(microseconds=1))
SCHEMA = TypeAdapter(Duration).json_schema()
STRING_PATTERN = next(s["pattern"] for s in SCHEMA["anyOf"] if s.get("type") == "string")


@given(DURATIONS)
def test_a_duration_serialises_to_a_string_that_parses_back_exactly(value: timedelta) -> None:
    text = Holder(d=value).model_dump(mode="json")["d"]
    assert isinstance(text, str)
    assert parse_duration(text) == value
    assert Holder.model_validate_json(Holder(d=value).model_dump_json()).d == value
    assert re.fullmatch(STRING_PATTERN, text), f"{text!r} does not match the JSON Schema's pattern"


@given(st.integers(1, 10**6), st.sampled_from(["ms", "s", "m", "h", "d", "w"]))
def test_whole_units_round_trip_to_the_same_value(n: int, unit: str) -> None:
    value = parse_duration(f"{n}{unit}")
    assert parse_duration(Holder(d=value).model_dump(mode="json")["d"]) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(weeks=1), "1w"),
        (timedelta(days=3), "3d"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=90), "90s"),
        (timedelta(milliseconds=250), "0.25s"),
        (timedelta(seconds=1234567, milliseconds=500), "1234567.5s"),
        (timedelta(microseconds=1), "0.000001s"),
    ],
)
def test_durations_serialise_readably(value: timedelta, text: str) -> None:
    assert Holder(d=value).model_dump(mode="json")["d"] == text


@pytest.mark.parametrize("good", ["pump-faults", "a", "x86-64-generic", "line_a", "0day"])
def test_slug_accepts(good: str) -> None:
    assert TypeAdapter(Slug).validate_python(good) == good


@pytest.mark.parametrize("bad", ["", "Pump", "-x", "_x", "a b", "a" * 64, "é"])
def test_slug_rejects(bad: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Slug).validate_python(bad)


@pytest.mark.parametrize("good", ["rpm", "_x", "power_kW", "a" * 128])
def test_identifier_accepts(good: str) -> None:
    assert TypeAdapter(Identifier).validate_python(good) == good


@pytest.mark.parametrize("bad", ["", "1x", "a-b", "a.b", "a" * 129])
def test_identifier_rejects(bad: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Identifier).validate_python(bad)
