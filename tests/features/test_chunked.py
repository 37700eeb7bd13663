"""Window features by key range (a bucket larger than memory) equal the whole bucket's, row by row."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgeml.features.chunked import NULL_KEY, Loader, plan_ranges, windows_by_range
from edgeml.features.window import compute_batch
from edgeml.spec.models import WindowFeature

TS = pa.timestamp("ms", tz="UTC")
#: aggregates that add a frame up: DuckDB's order of addition follows the row's position in its
#: partition, so they agree to the last bits only (see edgeml.features.chunked)
ADDING = ("sum", "mean", "std")


def features(*, span: bool = True) -> list[WindowFeature]:
    out = []
    for agg in ("mean", "std", "min", "max", "sum", "count", "last"):
        out.append(WindowFeature(name=f"{agg}_n3", column="x", agg=agg, size=3))
        if span:
            out.append(WindowFeature(name=f"{agg}_2s", column="x", agg=agg, span=timedelta(seconds=2)))
    out += [WindowFeature(name=f"lag_{n}", column="x", agg="lag", lag=n) for n in (1, 4)]
    out.append(WindowFeature(name="y_sum_1", column="y", agg="sum", size=1))
    return out


def loaders(parts: Sequence[pa.Table]) -> list[Loader]:
    return [lambda columns, t=t: t if columns is None else t.select(columns) for t in parts]


def by_range(
    parts: Sequence[pa.Table], feats: list[WindowFeature], chunk_rows: int, **kw: Any
) -> list[pa.Table]:
    rows = [t.num_rows for t in parts]
    return list(windows_by_range(loaders(parts), rows, feats, chunk_rows=chunk_rows, **kw))


def assert_same_rows(got: pa.Table, whole: pa.Table, feats: list[WindowFeature]) -> None:
    """Row by row (matched by ``row``): bit for bit, but for the adding aggregates' last bits."""
    assert got.num_rows == whole.num_rows
    got = got.sort_by("row")
    whole = whole.sort_by("row")
    names = [f.name for f in feats]
    assert got.drop_columns(names).to_pandas().equals(whole.drop_columns(names).to_pandas())
    for f in feats:
        a, b = got[f.name].to_numpy(), whole[f.name].to_numpy()
        if f.agg in ADDING:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=f.name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=f.name)


readings = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", None]),  # the entity; null is an entity of its own in SQL
        st.one_of(st.integers(0, 12), st.none()),  # seconds: many ties, some missing timestamps
        st.one_of(st.floats(-1e3, 1e3), st.just(math.nan), st.none()),
        st.integers(-5, 5),
    ),
    max_size=40,
)


def split(rows: list[tuple[Any, ...]], cuts: list[int]) -> list[pa.Table]:
    """``rows`` as sub-parts, cut at ``cuts`` (lake order: any order of timestamps)."""
    table = pa.table(
        {
            "row": pa.array(range(len(rows)), pa.int64()),
            "machine": pa.array([r[0] for r in rows], pa.string()),
            "ts": pa.array([None if r[1] is None else r[1] * 1000 for r in rows], pa.int64()).cast(TS),
            "x": pa.array([r[2] for r in rows], pa.float64()),
            "y": pa.array([r[3] for r in rows], pa.int64()),
        }
    )
    edges = sorted({0, len(rows), *(c % (len(rows) + 1) for c in cuts)})
    return [table.slice(a, b - a) for a, b in itertools.pairwise(edges)]


@pytest.mark.slow
@settings(max_examples=50, deadline=None)
@given(readings, st.lists(st.integers(0, 40), max_size=4), st.integers(2, 8), st.booleans())
def test_windows_by_time_range_equal_the_whole_bucket(
    rows: list[tuple[Any, ...]], cuts: list[int], chunk_rows: int, entity: bool
) -> None:
    parts = split(rows, cuts)
    feats = features()
    key = {"entity": "machine" if entity else None, "timestamp": "ts"}
    got = by_range(parts, feats, chunk_rows, **key)
    whole = compute_batch(pa.concat_tables(parts), feats, **key) if parts else None
    if whole is None:
        assert got == []
        return
    assert_same_rows(pa.concat_tables(got), whole, feats)
    for table in got:  # the memory bound: a range is small, or one timestamp (ties stay together)
        assert table.num_rows <= chunk_rows or len(table["ts"].unique()) == 1


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(readings, st.lists(st.integers(0, 40), max_size=4), st.integers(2, 8))
def test_without_a_timestamp_ranges_are_lake_order_and_the_output_is_identical(
    rows: list[tuple[Any, ...]], cuts: list[int], chunk_rows: int
) -> None:
    parts = [t.drop_columns(["ts"]) for t in split(rows, cuts)]
    feats = features(span=False)
    got = by_range(parts, feats, chunk_rows, entity="machine", timestamp=None)
    if not parts:
        return
    whole = compute_batch(pa.concat_tables(parts), feats, entity="machine", timestamp=None)
    assert_same_rows(pa.concat_tables(got), whole, feats)
    assert pa.concat_tables(got)["row"].to_pylist() == list(range(len(rows)))  # bucket order
    assert all(t.num_rows <= chunk_rows for t in got)


@pytest.mark.slow
def test_a_lake_in_time_order_gives_the_whole_buckets_rows_in_its_order() -> None:
    rng = np.random.default_rng(3)
    n = 5_000
    rows = [
        (f"m{rng.integers(0, 3)}", i // 4, float(rng.normal()), int(rng.integers(0, 9))) for i in range(n)
    ]
    parts = split(rows, [700, 1_900, 2_000, 4_100])
    feats = features()
    got = by_range(parts, feats, 600, entity="machine", timestamp="ts")
    assert len(got) > 8  # several ranges, each after context
    merged = pa.concat_tables(got)
    assert merged["row"].to_pylist() == list(range(n))
    assert_same_rows(
        merged, compute_batch(pa.concat_tables(parts), feats, entity="machine", timestamp="ts"), feats
    )


def test_a_bucket_within_the_chunk_is_computed_whole() -> None:
    parts = split([("m", 3 - i, float(i), i) for i in range(4)], [2])
    feats = features()
    (got,) = by_range(parts, feats, 4, entity="machine", timestamp="ts")
    whole = compute_batch(pa.concat_tables(parts), feats, entity="machine", timestamp="ts")
    assert got.to_pandas().equals(whole.to_pandas())  # NaN for NaN


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(-(2**63), NULL_KEY - 1) | st.integers(0, 30) | st.just(NULL_KEY), max_size=40),
        max_size=4,
    ),
    st.integers(1, 10),
)
@example([[-(2**63), NULL_KEY - 1, 0]], 1)  # a key range wider than the largest int64
def test_planned_ranges_hold_at_most_the_limit_or_one_key(keys: list[list[int]], limit: int) -> None:
    arrays = [np.array(k, dtype=np.int64) for k in keys]
    cuts = plan_ranges(lambda: iter(arrays), limit)
    present = np.sort(np.concatenate([a[a != NULL_KEY] for a in arrays] or [np.zeros(0, np.int64)]))
    if not len(present):
        assert cuts == []
        return
    assert cuts == sorted(set(cuts))
    assert cuts[0] == present[0]
    edges = [*np.searchsorted(present, cuts).tolist(), len(present)]
    assert all(a < b for a, b in itertools.pairwise(edges))  # no range is empty
    for a, b in itertools.pairwise(edges):
        held = present[a:b]
        assert len(held) <= limit or held[0] == held[-1]
    # greedy: two ranges in a row hold more than the limit (so there are at most 2n/limit + 1)
    for a, c in zip(edges, edges[2:], strict=False):
        assert c - a > limit


def test_planning_a_wide_key_range_refines_only_the_crowded_bins() -> None:
    passes = 0
    crowd = np.full(50, 10**15, dtype=np.int64) + np.arange(50)
    arrays = [np.array([0, 2**62], dtype=np.int64), crowd]

    def keys():  # type: ignore[no-untyped-def]
        nonlocal passes
        passes += 1
        return iter(arrays)

    cuts = plan_ranges(keys, 10)
    present = np.sort(np.concatenate(arrays))
    sizes = np.diff([*np.searchsorted(present, cuts), len(present)])
    assert sizes.max() <= 10
    assert len(cuts) <= 2 * 52 // 10 + 1
    assert passes <= 8  # a min/max pass, then a few counting passes over a 2**62-wide range
