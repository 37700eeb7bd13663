"""Window features: DuckDB in batch and pure Python online must agree exactly.

The parity tests feed the same stream to :func:`compute_batch` (training data) and
:class:`OnlineWindows` (the edge agent); a model trained on one and served with the other
is only right if they do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeml.features.window import OnlineWindows, compute_batch
from edgeml.spec.models import WindowFeature

AGGS = ("mean", "std", "min", "max", "sum", "count", "last")
NAN = math.nan
TS = pa.timestamp("ms", tz="UTC")

Row = tuple[Any, int, float | None]  # (entity, timestamp in ms, value)


def window(agg: str, *, name: str | None = None, column: str = "x", **kw: Any) -> WindowFeature:
    return WindowFeature(name=name or f"{agg}_{'_'.join(map(str, kw))}", column=column, agg=agg, **kw)


def table_of(rows: Sequence[Row], *, entity: bool = True) -> pa.Table:
    """An Arrow table as the lake holds it; NaN stays NaN and None becomes null."""
    columns: dict[str, pa.Array] = {}
    if entity:
        columns["machine"] = pa.array([r[0] for r in rows], pa.string())
    columns["ts"] = pa.array([r[1] for r in rows], pa.int64()).cast(TS)
    columns["x"] = pa.array([r[2] for r in rows], pa.float64(), from_pandas=False)
    return pa.table(columns)


def batch(
    rows: Sequence[Row], features: Sequence[WindowFeature], *, entity: bool = True, timestamp: bool = True
) -> dict[str, np.ndarray]:
    table = table_of(rows, entity=entity)
    out = compute_batch(
        table, features, entity="machine" if entity else None, timestamp="ts" if timestamp else None
    )
    assert out.num_rows == len(rows)
    assert out.column_names == [*table.column_names, *(f.name for f in features)]
    for f in features:
        assert out.schema.field(f.name).type == pa.float64()
    return {f.name: out[f.name].to_numpy(zero_copy_only=False) for f in features}


def online(rows: Sequence[Row], features: Sequence[WindowFeature]) -> dict[str, np.ndarray]:
    windows = OnlineWindows(features)
    results = [windows.update(e, ts / 1000, {"x": v}) for e, ts, v in rows]
    return {f.name: np.array([r[f.name] for r in results], dtype=np.float64) for f in features}


def assert_same(left: np.ndarray, right: np.ndarray, what: str = "") -> None:
    assert left.shape == right.shape, what
    assert np.array_equal(np.isnan(left), np.isnan(right)), (
        f"{what}: NaN in different places\n{left}\n{right}"
    )
    assert np.allclose(left, right, rtol=1e-9, atol=1e-9, equal_nan=True), f"{what}:\n{left}\n{right}"


def assert_parity(
    rows: Sequence[Row], features: Sequence[WindowFeature], *, entity: bool = True, timestamp: bool = True
) -> None:
    got_batch = batch(rows, features, entity=entity, timestamp=timestamp)
    got_online = online(rows, features)
    for f in features:
        assert_same(got_batch[f.name], got_online[f.name], f"{f.name} ({f.agg})")


# ------------------------------------------------------------------------------ strategies

values = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.integers(-5, 5).map(float),  # repeats: ties for min/max, zero variance for std
    st.just(NAN),
    st.none(),
)
gaps = st.one_of(st.sampled_from([1, 250, 500, 1000]), st.integers(1, 3000))  # some land on span edges


@st.composite
def streams(draw: st.DrawFn, *, entities: bool = True) -> list[Row]:
    """Readings of several entities, interleaved; strictly increasing ms timestamps per entity."""
    names = (
        draw(st.lists(st.sampled_from(["m1", "m2", "m3", "m4"]), min_size=1, max_size=3, unique=True))
        if entities
        else [None]
    )
    per_entity: dict[Any, list[Row]] = {}
    for name in names:
        t = draw(st.integers(1_700_000_000_000, 1_700_000_010_000))  # real-world epoch ms
        readings = []
        for _ in range(draw(st.integers(1 if not entities else 0, 14))):
            t += draw(gaps)
            readings.append((name, t, draw(values)))
        per_entity[name] = readings
    order = draw(st.permutations([n for n, rs in per_entity.items() for _ in rs]))
    taken = dict.fromkeys(per_entity, 0)
    stream = []
    for name in order:
        stream.append(per_entity[name][taken[name]])
        taken[name] += 1
    return stream


@st.composite
def feature_sets(draw: st.DrawFn) -> list[WindowFeature]:
    """Every agg over a size window and a span window, plus a lag."""
    size = draw(st.integers(1, 6))
    span_ms = draw(st.one_of(st.sampled_from([500, 1000, 2000]), st.integers(1, 6000)))
    lag = draw(st.integers(1, 4))
    features = [window(a, name=f"{a}_size", size=size) for a in AGGS]
    features += [window(a, name=f"{a}_span", span=timedelta(milliseconds=span_ms)) for a in AGGS]
    features.append(window("lag", name="lagged", lag=lag))
    return features


# ---------------------------------------------------------------------------------- parity


@settings(max_examples=40, deadline=None)
@given(stream=streams(), features=feature_sets())
def test_parity_of_batch_and_online_per_entity(stream: list[Row], features: list[WindowFeature]) -> None:
    assert_parity(stream, features)


@settings(max_examples=40, deadline=None)
@given(stream=streams(entities=False), features=feature_sets())
def test_parity_of_batch_and_online_without_entity(stream: list[Row], features: list[WindowFeature]) -> None:
    assert_parity(stream, features, entity=False)


@settings(max_examples=20, deadline=None)
@given(stream=streams(), size=st.integers(1, 5), lag=st.integers(1, 3))
def test_parity_without_a_timestamp_follows_arrival_order(stream: list[Row], size: int, lag: int) -> None:
    features = [window(a, name=f"{a}_size", size=size) for a in AGGS] + [
        window("lag", name="lagged", lag=lag)
    ]
    assert_parity(stream, features, timestamp=False)


def test_parity_on_a_hand_made_stream_with_every_kind_of_gap() -> None:
    """A fixed stream so the parity holds even if hypothesis never draws these cases."""
    rows: list[Row] = [
        ("a", 1_000, 1.0),
        ("b", 1_000, 10.0),
        ("a", 2_000, NAN),
        ("a", 3_000, None),
        ("b", 1_500, 20.0),
        ("a", 3_001, 4.0),
        ("b", 4_000, 30.0),
        ("a", 5_001, -2.0),
        ("b", 4_001, NAN),
        ("a", 9_000, 7.5),
    ]
    features = [window(a, name=f"{a}_size", size=3) for a in AGGS]
    features += [window(a, name=f"{a}_span", span=timedelta(seconds=2)) for a in AGGS]
    features += [window("lag", name="lag1", lag=1), window("lag", name="lag3", lag=3)]
    assert_parity(rows, features)


# ------------------------------------------------------------------------- known answers


def single(rows: Sequence[Row], feature: WindowFeature, **kw: Any) -> list[float]:
    """The feature by both implementations, checked equal; returned as a list."""
    got = batch(rows, [feature], **kw)[feature.name]
    assert_same(got, online(rows, [feature])[feature.name], feature.name)
    return got.tolist()


def series(*xs: float | None, step_ms: int = 1000) -> list[Row]:
    return [("m", (i + 1) * step_ms, x) for i, x in enumerate(xs)]


def same(got: list[float], expected: list[float]) -> bool:
    return np.allclose(got, expected, rtol=1e-12, atol=0, equal_nan=True)


def test_mean_over_the_last_three_readings() -> None:
    assert single(series(1, 2, 3, 4), window("mean", size=3)) == [1, 1.5, 2, 3]


@pytest.mark.parametrize(
    ("agg", "expected"),
    [
        ("sum", [5, 7, -1, 7]),
        ("min", [5, 2, -3, -3]),
        ("max", [5, 5, 2, 10]),
        ("count", [1, 2, 2, 2]),
        ("last", [5, 2, -3, 10]),
        ("std", [NAN, math.sqrt(4.5), math.sqrt(12.5), math.sqrt(84.5)]),
    ],
)
def test_size_two_windows(agg: str, expected: list[float]) -> None:
    assert same(single(series(5, 2, -3, 10), window(agg, size=2)), expected)


def test_std_is_the_sample_deviation_and_nan_for_one_value() -> None:
    assert same(single(series(7), window("std", size=5)), [NAN])
    assert same(single(series(2, 4, 4, 4, 5, 5, 7, 9), window("std", size=8))[-1:], [math.sqrt(32 / 7)])
    assert same(single(series(3, 3, 3), window("std", size=3)), [NAN, 0, 0])


def test_missing_values_are_skipped() -> None:
    rows = series(1.0, None, NAN, 4.0, None)
    assert same(single(rows, window("mean", size=3)), [1, 1, 1, 4, 4])
    assert same(single(rows, window("sum", size=3)), [1, 1, 1, 4, 4])
    assert same(single(rows, window("count", size=3)), [1, 1, 1, 1, 1])
    assert same(single(rows, window("last", size=3)), [1, 1, 1, 4, 4])
    assert same(single(rows, window("min", size=2)), [1, 1, NAN, 4, 4])
    assert same(single(rows, window("std", size=4)), [NAN, NAN, NAN, math.sqrt(4.5), NAN])


def test_an_all_missing_window_counts_zero_and_aggregates_nan() -> None:
    rows = series(None, NAN, None)
    assert single(rows, window("count", size=2)) == [0, 0, 0]
    assert single(rows, window("count", span=timedelta(minutes=1))) == [0, 0, 0]
    for agg in ("mean", "std", "min", "max", "sum", "last"):
        assert same(single(rows, window(agg, size=2)), [NAN] * 3), agg


def test_span_window_includes_readings_exactly_span_old() -> None:
    rows: list[Row] = [("m", 0, 1.0), ("m", 1000, 2.0), ("m", 2000, 4.0), ("m", 3500, 8.0), ("m", 5500, 16.0)]
    # at 2000 the window reaches back to 0 inclusive; at 3500 to 1500; at 5500 to 3500 inclusive
    assert single(rows, window("sum", span=timedelta(seconds=2))) == [1, 3, 7, 12, 24]
    assert single(rows, window("count", span=timedelta(seconds=2))) == [1, 2, 3, 2, 2]
    assert single(rows, window("sum", span=timedelta(milliseconds=1999))) == [1, 3, 6, 12, 16]


def test_span_window_at_microsecond_resolution() -> None:
    rows: list[Row] = [("m", 1_700_000_000_000, 1.0), ("m", 1_700_000_000_001, 2.0)]
    assert single(rows, window("sum", span=timedelta(microseconds=999))) == [1, 2]
    assert single(rows, window("sum", span=timedelta(microseconds=1000))) == [1, 3]


def test_span_windows_of_hours_and_days() -> None:
    """Spans past 2**31 microseconds (~36 minutes), as `span: 1h` or `1d` in a spec."""
    hour = 3_600_000
    rows: list[Row] = [("m", 0, 1.0), ("m", hour, 2.0), ("m", 2 * hour + 1, 4.0), ("m", 30 * hour, 8.0)]
    assert single(rows, window("sum", span=timedelta(hours=1))) == [1, 3, 4, 8]
    assert single(rows, window("sum", span=timedelta(days=1))) == [1, 3, 7, 8]
    assert single(rows, window("sum", span=timedelta(days=2))) == [1, 3, 7, 15]


def test_lag_is_the_value_n_readings_back() -> None:
    assert same(single(series(10, 20, 30, 40), window("lag", lag=2)), [NAN, NAN, 10, 20])
    # a missing reading is a reading: lag passes it through and does not skip it
    assert same(single(series(10, None, 30, 40), window("lag", lag=1)), [NAN, 10, NAN, 30])


def test_entities_have_their_own_windows() -> None:
    rows: list[Row] = [
        ("a", 1000, 1.0),
        ("b", 1000, 100.0),
        ("a", 2000, 3.0),
        ("b", 2000, 300.0),
        ("a", 3000, 5.0),
    ]
    assert single(rows, window("mean", size=2)) == [1, 100, 2, 200, 4]
    assert same(single(rows, window("lag", lag=1)), [NAN, NAN, 1, 100, 3])


def test_without_an_entity_all_rows_share_one_window() -> None:
    rows: list[Row] = [(None, 1000, 1.0), (None, 2000, 3.0), (None, 3000, 5.0)]
    assert single(rows, window("sum", size=2), entity=False) == [1, 4, 8]
    assert single(rows, window("sum", span=timedelta(seconds=1)), entity=False) == [1, 4, 8]


def test_batch_keeps_input_row_order_but_computes_in_time_order() -> None:
    rows: list[Row] = [
        ("a", 3000, 30.0),
        ("b", 5000, 7.0),
        ("a", 1000, 10.0),
        ("a", 2000, 20.0),
        ("b", 4000, 6.0),
    ]
    features = [window("sum", size=3), window("lag", lag=1), window("last", size=1)]
    got = batch(rows, features)
    assert got["sum_size"].tolist() == [60, 13, 10, 30, 6]
    assert same(got["lag_lag"].tolist(), [20, 6, NAN, 10, NAN])
    assert got["last_size"].tolist() == [30, 7, 10, 20, 6]


def test_batch_leaves_the_input_columns_alone() -> None:
    rows = series(1.0, NAN, None)
    table = table_of(rows)
    out = compute_batch(table, [window("mean", size=2)], entity="machine", timestamp="ts")
    assert out.select(["machine", "ts"]).equals(table.select(["machine", "ts"]))
    x = out["x"].to_pylist()
    assert x[0] == 1.0
    assert math.isnan(x[1])
    assert x[2] is None
    assert compute_batch(table, [], entity="machine", timestamp="ts") is table


def test_integer_columns_with_nulls() -> None:
    table = pa.table(
        {
            "machine": ["a"] * 4,
            "ts": pa.array([1000, 2000, 3000, 4000], pa.int64()).cast(TS),
            "n": pa.array([1, None, 3, 4], pa.int64()),
        }
    )
    features = [
        window("sum", column="n", size=2),
        window("mean", column="n", size=4),
        window("count", column="n", span=timedelta(seconds=1)),
    ]
    out = compute_batch(table, features, entity="machine", timestamp="ts")
    assert out["sum_size"].to_pylist() == [1, 1, 3, 7]
    assert out["mean_size"].to_pylist() == [1, 1, 2, pytest.approx(8 / 3)]
    assert out["count_span"].to_pylist() == [1, 1, 1, 2]
    windows = OnlineWindows(features)
    streamed = [windows.update("a", t, {"n": v}) for t, v in [(1, 1), (2, None), (3, 3), (4, 4)]]
    assert [s["sum_size"] for s in streamed] == [1, 1, 3, 7]
    assert [s["count_span"] for s in streamed] == [1, 1, 1, 2]


def test_online_update_returns_every_feature_and_keeps_state_per_entity() -> None:
    features = [window("mean", size=2), window("lag", lag=1)]
    windows = OnlineWindows(features)
    assert windows.update("a", 1.0, {"x": 2.0}) == {
        "mean_size": 2.0,
        "lag_lag": pytest.approx(NAN, nan_ok=True),
    }
    assert windows.update("b", 1.0, {"x": 10.0})["mean_size"] == 10.0
    second = windows.update("a", 2.0, {"x": 4.0})
    assert second == {"mean_size": 3.0, "lag_lag": 2.0}
    assert math.isnan(windows.update("c", 1.0, {})["mean_size"])  # a missing column is a missing reading
