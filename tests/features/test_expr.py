"""Row-feature expressions: a closed language, parsed without eval, evaluated with numpy."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeml.features.expr import FUNCTIONS, TIME_FUNCTIONS, ExpressionError, parse_expression

# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("source", "columns", "time_columns"),
    [
        ("rpm", {"rpm"}, set()),
        ("2.5", set(), set()),
        ("-rpm", {"rpm"}, set()),
        ("+rpm", {"rpm"}, set()),
        ("power_kw / maximum(rpm, 1) * 1000", {"power_kw", "rpm"}, set()),
        ("a + b - c * d / e ** 2 % 3", {"a", "b", "c", "d", "e"}, set()),
        ("log(a) + log1p(b) + exp(c) + sqrt(d) + abs(e)", {"a", "b", "c", "d", "e"}, set()),
        ("clip(pressure / 6.5, 0, 2)", {"pressure"}, set()),
        ("clip(x, -1, 1)", {"x"}, set()),
        ("minimum(a, b) - maximum(a, 0)", {"a", "b"}, set()),
        (
            "hour(ts) + day_of_week(ts) + is_weekend(ts) + month(created)",
            {"ts", "created"},
            {"ts", "created"},
        ),
        ("hour(ts) * rpm", {"ts", "rpm"}, {"ts"}),
        ("bucketize(temperature, [-10, 0, 10.5, 40])", {"temperature"}, set()),
        ("bucketize(a * b, [1, 2])", {"a", "b"}, set()),
        ("bucketize(x, [7])", {"x"}, set()),
        ("  (rpm\n + 1)  ", {"rpm"}, set()),
        ("1e3 * x", {"x"}, set()),
    ],
)
def test_the_documented_language_parses(source: str, columns: set[str], time_columns: set[str]) -> None:
    expr = parse_expression(source)
    assert expr.columns == columns
    assert expr.time_columns == time_columns
    assert expr.source == source


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("rpm.real", "'rpm.real' is not allowed"),
        ("rpm[0]", "'rpm[0]' is not allowed"),
        ("lambda: 1", "is not allowed"),
        ("rpm > 1", "'rpm > 1' is not allowed"),
        ("a == b", "is not allowed"),
        ("a and b", "'a and b' is not allowed"),
        ("not a", "is not allowed"),
        ("~a", "is not allowed"),
        ("a if b else c", "is not allowed"),
        ("(a := 1)", "is not allowed"),
        ("[1, 2]", "is not allowed"),
        ("(a, b)", "is not allowed"),
        ("{a: 1}", "is not allowed"),
        ("[x for x in y]", "is not allowed"),
        ('"rpm"', "only numbers are allowed as constants, not 'rpm'"),
        ("b'x'", "only numbers are allowed as constants"),
        ('f"{rpm}"', "is not allowed"),
        ("True", "only numbers are allowed as constants, not True"),
        ("None", "only numbers are allowed as constants, not None"),
        ("1j", "only numbers are allowed as constants"),
        ("...", "only numbers are allowed as constants"),
        ("a // b", "operator FloorDiv is not allowed"),
        ("a @ b", "operator MatMult is not allowed"),
        ("a << 1", "operator LShift is not allowed"),
        ("a | b", "operator BitOr is not allowed"),
        ("foo(rpm)", "unknown function 'foo'; known: abs, bucketize"),
        ("eval('1')", "unknown function 'eval'"),
        ("__import__('os')", "unknown function '__import__'"),
        ("rpm.clip(0, 1)", "unknown function 'rpm.clip'"),
        ("np.log(rpm)", "unknown function 'np.log'"),
        ("log()", "log() takes 1 positional argument(s)"),
        ("log(a, b)", "log() takes 1 positional argument(s)"),
        ("clip(rpm, 0)", "clip() takes 3 positional argument(s)"),
        ("minimum(a)", "minimum() takes 2 positional argument(s)"),
        ("log(x=rpm)", "log() takes 1 positional argument(s)"),
        ("clip(rpm, lo=0, hi=1)", "clip() takes 3 positional argument(s)"),
        ("clip(rpm, 0, 1, key=2)", "clip() takes 3 positional argument(s)"),
        ("log(*xs)", "is not allowed"),
        ("bucketize(x, [1, 1])", "bucketize edges must be strictly increasing"),
        ("bucketize(x, [2, 1])", "bucketize edges must be strictly increasing"),
        ("bucketize(x, [-1, -2])", "bucketize edges must be strictly increasing"),
        ("bucketize(x, [])", "needs a list of numeric edges"),
        ("bucketize(x, ['a', 'b'])", "needs a list of numeric edges"),
        ("bucketize(x, [y, 2])", "needs a list of numeric edges"),
        ("bucketize(x, [True, 2])", "needs a list of numeric edges"),
        ("bucketize(x, 3)", "needs a list of numeric edges"),
        ("bucketize(x, (1, 2))", "needs a list of numeric edges"),
        ("bucketize(x, [1 + 1])", "needs a list of numeric edges"),
        ("bucketize(x)", "bucketize() takes 2 positional argument(s)"),
        ("bucketize('x', [1])", "only numbers are allowed as constants"),
        ("hour(ts + 1)", "hour() takes a timestamp column name"),
        ("day_of_week(1)", "day_of_week() takes a timestamp column name"),
        ("month(hour(ts))", "month() takes a timestamp column name"),
        ("is_weekend(-ts)", "is_weekend() takes a timestamp column name"),
        ("", "cannot parse ''"),
        ("rpm +", "cannot parse 'rpm +'"),
        ("rpm = 1", "cannot parse"),
        ("import os", "cannot parse"),
        ("1e400 * x", "number inf is too large"),
        ("9" * 400, "is too large"),
        ("x" + " + x" * 5000, "nested too deeply"),
        ("-" * 5000 + "x", "nested too deeply"),
    ],
)
def test_everything_else_is_refused_with_an_expression_error(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_expression(source)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)  # pydantic and the spec checks treat it as a value error


def test_every_function_is_documented_with_its_arity() -> None:
    assert set(FUNCTIONS) >= TIME_FUNCTIONS
    for name, arity in FUNCTIONS.items():
        with pytest.raises(ExpressionError, match=rf"{name}\(\) takes {arity} positional"):
            parse_expression(f"{name}({', '.join(['x'] * (arity + 1))})")


TEXT = st.text(max_size=60) | st.lists(
    st.sampled_from(
        [
            "x",
            "ts",
            "1",
            "2.5",
            "-",
            "+",
            "*",
            "/",
            "**",
            "%",
            "(",
            ")",
            "[",
            "]",
            ",",
            " ",
            ".",
            "'a'",
            "=",
            "<",
            "and",
            "lambda",
            ":",
            "if",
            "else",
            "j",
            "e9",
            *FUNCTIONS,
        ]
    ),
    max_size=25,
).map("".join)


@settings(max_examples=400)
@given(TEXT)
def test_arbitrary_text_parses_or_raises_expression_error(source: str) -> None:
    try:
        expr = parse_expression(source)
    except ExpressionError as exc:
        refused: ExpressionError | None = exc
    else:
        refused = None
        assert expr.columns >= expr.time_columns
    assert refused is None or str(refused)


# ----------------------------------------------------------------------------- evaluate

FLOATS = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
POSITIVE = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)


def three(elements: st.SearchStrategy[float]) -> st.SearchStrategy[tuple[np.ndarray, ...]]:
    return st.integers(1, 20).flatmap(lambda n: st.tuples(*[arrays(np.float64, n, elements=elements)] * 3))


@given(three(FLOATS))
def test_arithmetic_matches_numpy(abc: tuple[np.ndarray, ...]) -> None:
    a, b, c = abc
    frame = {"a": a, "b": b, "c": c}
    cases = {
        "a + b": a + b,
        "a - b": a - b,
        "a * b": a * b,
        "a + b * c - a": a + b * c - a,
        "(a + b) * c": (a + b) * c,
        "-a + +b": -a + b,
        "2 * a - 0.5": 2.0 * a - 0.5,
        "clip(a, -1, 1)": np.clip(a, -1.0, 1.0),
        "clip(a, b, b + abs(c))": np.clip(a, b, b + np.abs(c)),
        "minimum(a, b)": np.minimum(a, b),
        "maximum(a, abs(b))": np.maximum(a, np.abs(b)),
        "abs(a - c)": np.abs(a - c),
    }
    for source, expected in cases.items():
        result = parse_expression(source).evaluate(frame)
        assert result.dtype == np.float64
        np.testing.assert_array_equal(result, expected, err_msg=source)


@given(three(POSITIVE))
def test_log_sqrt_and_friends_match_numpy_on_positive_values(abc: tuple[np.ndarray, ...]) -> None:
    a, b, c = abc
    frame = {"a": a, "b": b, "c": c}
    cases = {
        "log(a)": np.log(a),
        "log1p(b)": np.log1p(b),
        "sqrt(c)": np.sqrt(c),
        "exp(log(a) / 100)": np.exp(np.log(a) / 100.0),
        "a / b": a / b,
        "a ** 0.5": a**0.5,
        "a % b": np.mod(a, b),
        "log(a) + sqrt(b) * c": np.log(a) + np.sqrt(b) * c,
    }
    for source, expected in cases.items():
        np.testing.assert_array_equal(parse_expression(source).evaluate(frame), expected, err_msg=source)


def test_evaluate_ignores_columns_it_does_not_use() -> None:
    expr = parse_expression("a * 2")
    np.testing.assert_array_equal(
        expr.evaluate({"a": np.array([1.0, 2.0]), "b": np.array(["x", "y"])}), [2.0, 4.0]
    )


# ------------------------------------------------------------------------ time functions

WHEN = np.array(
    [
        "2026-11-28T13:45:10",  # Saturday
        "2026-11-29T23:59:59",  # Sunday
        "2026-11-30T00:00:00",  # Monday
        "2026-12-04T07:00:00",  # Friday
        "2024-02-29T12:00:00",  # Thursday, leap day
        "1969-12-31T23:30:00",  # Wednesday, before the epoch
    ],
    dtype="datetime64[s]",
)


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("day_of_week", [5, 6, 0, 4, 3, 2]),
        ("is_weekend", [1, 1, 0, 0, 0, 0]),
        ("hour", [13, 23, 0, 7, 12, 23]),
        ("month", [11, 11, 11, 12, 2, 12]),
    ],
)
def test_time_functions_on_known_dates(function: str, expected: list[int]) -> None:
    result = parse_expression(f"{function}(ts)").evaluate({"ts": WHEN})
    assert result.dtype == np.float64
    assert result.tolist() == expected


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_time_functions_do_not_depend_on_the_timestamp_resolution(unit: str) -> None:
    ts = np.array(["2026-11-28T13:45:10.750", "1969-12-31T23:59:59.500"], dtype=f"datetime64[{unit}]")
    assert parse_expression("day_of_week(ts)").evaluate({"ts": ts}).tolist() == [5, 2]
    assert parse_expression("hour(ts)").evaluate({"ts": ts}).tolist() == [13, 23]


@given(st.lists(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31)), min_size=1))
def test_time_functions_agree_with_python_datetime(moments: list[datetime]) -> None:
    ts = np.array(moments, dtype="datetime64[us]")
    frame = {"ts": ts}
    assert parse_expression("hour(ts)").evaluate(frame).tolist() == [d.hour for d in moments]
    assert parse_expression("day_of_week(ts)").evaluate(frame).tolist() == [d.weekday() for d in moments]
    assert parse_expression("month(ts)").evaluate(frame).tolist() == [d.month for d in moments]
    assert parse_expression("is_weekend(ts)").evaluate(frame).tolist() == [
        int(d.weekday() >= 5) for d in moments
    ]


# ----------------------------------------------------------------------------- bucketize


def test_bucketize_puts_a_value_on_an_edge_in_the_upper_bucket() -> None:
    x = np.array([-5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0])
    result = parse_expression("bucketize(x, [0, 10, 20])").evaluate({"x": x})
    assert result.tolist() == [0, 1, 1, 2, 2, 3, 3]


def test_bucketize_takes_negative_edges() -> None:
    x = np.array([-20.0, -10.0, -0.5, 0.0, 3.0])
    result = parse_expression("bucketize(x, [-10, 0, 2.5])").evaluate({"x": x})
    assert result.tolist() == [0, 1, 1, 2, 3]


@given(
    st.lists(FLOATS, min_size=1, max_size=6, unique=True).map(sorted),
    arrays(np.float64, st.integers(1, 30), elements=FLOATS),
)
def test_bucketize_counts_the_edges_at_or_below_each_value(edges: list[float], x: np.ndarray) -> None:
    source = f"bucketize(x, [{', '.join(repr(e) for e in edges)}])"
    result = parse_expression(source).evaluate({"x": x})
    expected = [sum(e <= v for e in edges) for v in x]
    assert result.tolist() == expected
    np.testing.assert_array_equal(result, np.searchsorted(edges, x, side="right"))
