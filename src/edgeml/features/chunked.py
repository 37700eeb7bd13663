"""Window features over a bucket of rows larger than memory: key range by key range, with context.

A bucket's rows come as sub-parts in lake order. Its windows are ordered per entity by
(timestamp, position in the bucket), or by position alone without a timestamp: the *key* below
is the timestamp's integer ticks (position without one). Lake order is not time order (a day's
rows sit in several parts, in content-hash order; sources follow each other), so the bucket is
not cut in lake order but in key ranges:

1. plan: histogram passes over the key column (one sub-part's column at a time) cut the key
   range into ranges of at most ``chunk_rows`` rows; a timestamp is never split between two
   ranges (ties are peers of a span window), so a timestamp held more often is a range alone;
2. compute: per range, its rows (in bucket order) after the *context* carried from the ranges
   before — per entity the last N rows (the largest ``size`` - 1 or ``lag``) and every row within
   the longest ``span`` of the range's start — go through :func:`compute_batch`; the context's
   own outputs are dropped. Every context row precedes every range row in window order, and
   extra context never enters a window it does not belong to, so each window holds exactly the
   rows it holds over the whole bucket. Rows without a timestamp come last (SQL's NULLS LAST),
   as one range.

Memory: one range's rows, one sub-part, and the context (bounded by the windows' extent, not the
bucket). ``min``, ``max``, ``last``, ``count`` and ``lag`` equal the whole-bucket values bit for
bit; ``sum``, ``mean`` and ``std`` to the last bits only, since DuckDB adds a frame up in an
order set by the row's position in its partition (so they differ in the last bits already
between two layouts of the same rows today).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import duckdb
import numpy as np
import pyarrow as pa

from edgeml.features.window import compute_batch
from edgeml.spec.models import WindowFeature

__all__ = ["NULL_KEY", "plan_ranges", "windows_by_range"]

#: the key of a row without a timestamp: after every other (SQL's NULLS LAST)
NULL_KEY = int(np.iinfo(np.int64).max)
#: bins a planning pass counts each open key range in
BINS = 4096
_TICKS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}

#: reads one sub-part, only the named columns (all with None)
Loader = Callable[[Sequence[str] | None], pa.Table]


def plan_ranges(keys: Callable[[], Iterator[np.ndarray]], limit: int) -> list[int]:
    """Ascending starts of key ranges of at most ``limit`` keys each (``NULL_KEY`` left out).

    A single key value held more than ``limit`` times is a range of its own. ``keys()`` yields the
    keys one array at a time, afresh on each call: a pass holds one array and the bin counts.
    """
    low = high = None
    for array in keys():
        k = array[array != NULL_KEY]
        if len(k):
            lo, hi = int(k.min()), int(k.max())
            low, high = lo if low is None else min(low, lo), hi if high is None else max(high, hi)
    if low is None or high is None:
        return []
    atoms: list[tuple[int, int]] = []  # (start, rows) of key ranges small enough, or single keys
    pending = [(low, high)]
    while pending:
        starts = np.array([lo for lo, _ in pending], dtype=np.int64)
        ends = np.array([hi for _, hi in pending], dtype=np.int64)
        widths = np.array([max(1, -(-(hi - lo + 1) // BINS)) for lo, hi in pending], dtype=np.int64)
        counts = np.zeros(len(pending) * BINS, dtype=np.int64)
        for array in keys():
            which = np.searchsorted(starts, array, side="right") - 1
            inside = (which >= 0) & (array <= ends[np.maximum(which, 0)])
            k, which = array[inside], which[inside]
            # unsigned: a key range may be wider than the largest int64 (it is below 2**64)
            steps = (k.view(np.uint64) - starts[which].view(np.uint64)) // widths[which].view(np.uint64)
            bins = which * BINS + steps.astype(np.int64)
            counts += np.bincount(bins, minlength=len(counts))
        refine = []
        for b in np.flatnonzero(counts):
            r, offset = divmod(int(b), BINS)
            width = int(widths[r])
            start = int(starts[r]) + offset * width
            if counts[b] > limit and width > 1:
                refine.append((start, min(int(ends[r]), start + width - 1)))
            else:
                atoms.append((start, int(counts[b])))
        pending = sorted(refine)
    cuts: list[int] = []
    held = 0
    for start, rows in sorted(atoms):
        if not cuts or held + rows > limit:
            cuts.append(start)
            held = 0
        held += rows
    return cuts


def _ticks(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(column.cast(pa.int64()).fill_null(NULL_KEY).to_numpy(), dtype=np.int64)


def _span_ticks(features: Sequence[WindowFeature], unit: str) -> int | None:
    spans = [f.span for f in features if f.span is not None]
    if not spans:
        return None
    longest: timedelta = max(spans)
    per_second = _TICKS_PER_SECOND[unit]
    return -(-longest // timedelta(microseconds=1)) * per_second // 1_000_000 + 1  # rounded up


def _context(
    table: pa.Table, keys: np.ndarray, entity: str | None, last: int, reach_from: int | None
) -> np.ndarray:
    """Rows of ``table`` a later range's windows may reach: per entity the ``last`` rows in window
    order, and every row keyed at or after ``reach_from``; in table order."""
    n = table.num_rows
    if entity is None:
        codes = np.zeros(n, dtype=np.int64)
    else:
        encoded = table[entity].combine_chunks().dictionary_encode()
        codes = np.asarray(encoded.indices.fill_null(-1).to_numpy(), dtype=np.int64)
    order = np.lexsort((np.arange(n), keys, codes))  # entity, then window order
    grouped = codes[order]
    new_group = np.r_[True, grouped[1:] != grouped[:-1]] if n else np.zeros(0, dtype=bool)
    group_end = np.r_[np.flatnonzero(new_group)[1:] - 1, n - 1] if n else np.zeros(0, dtype=np.int64)
    from_end = group_end[np.cumsum(new_group) - 1] - np.arange(n)
    keep = from_end < last
    if reach_from is not None:
        keep |= keys[order] >= reach_from
    return np.sort(order[keep])


def windows_by_range(
    loaders: Sequence[Loader],
    rows: Sequence[int],
    features: Sequence[WindowFeature],
    *,
    entity: str | None,
    timestamp: str | None,
    chunk_rows: int,
) -> Iterator[pa.Table]:
    """The bucket of sub-parts ``loaders`` (``rows`` each) with its window features, a range at a time.

    Each table yielded is one key range's rows with the feature columns appended, in bucket order
    within the range; the ranges follow each other in key order. A bucket of at most
    ``chunk_rows`` rows is one table, in bucket order: :func:`compute_batch` over all of it.
    """
    if not features:
        yield from (load(None) for load in loaders)
        return
    if sum(rows) <= chunk_rows:
        tables = [load(None) for load in loaders]
        if tables:
            whole = pa.concat_tables(tables, promote_options="default")
            yield compute_batch(whole, features, entity=entity, timestamp=timestamp)
        return
    offsets = np.cumsum([0, *rows])

    def keys_of(i: int, table: pa.Table | None) -> np.ndarray:
        if timestamp is None:
            return np.arange(offsets[i], offsets[i + 1], dtype=np.int64)
        if table is None:
            table = loaders[i]([timestamp])
        return _ticks(table[timestamp])

    bounds = []  # per sub-part: smallest and largest key (NULL_KEY left out), any NULL_KEY
    for i in range(len(loaders)):
        k = keys_of(i, None)
        present = k[k != NULL_KEY]
        lo, hi = (int(present.min()), int(present.max())) if len(present) else (NULL_KEY, -1)
        bounds.append((lo, hi, len(present) < len(k)))
    cuts = plan_ranges(lambda: (keys_of(i, None) for i in range(len(loaders))), chunk_rows)
    highest = max(hi for _, hi, _ in bounds)
    ranges = [(lo, hi - 1) for lo, hi in itertools.pairwise(cuts)]
    ranges += [(cuts[-1], highest)] if cuts else []
    ranges += [(NULL_KEY, NULL_KEY)] if any(null for _, _, null in bounds) else []

    needed = list(dict.fromkeys([*([entity] if entity else []), *([timestamp] if timestamp else [])]))
    needed += [c for c in dict.fromkeys(f.column for f in features) if c not in needed]
    last = max([f.size - 1 for f in features if f.size is not None] + [f.lag or 0 for f in features])
    span: int | None = None
    context: pa.Table | None = None
    context_keys = np.zeros(0, dtype=np.int64)
    con = duckdb.connect()  # one for every range: opening one costs more than a range's windows
    try:
        for r, (lo, hi) in enumerate(ranges):
            pieces, piece_keys = [], []
            for i, (first, final, null) in enumerate(bounds):
                if not (null if lo == NULL_KEY else first <= hi and final >= lo):
                    continue
                table = loaders[i](None)
                k = keys_of(i, table)
                take = np.flatnonzero((k >= lo) & (k <= hi))
                pieces.append(table.take(take))
                piece_keys.append(k[take])
            chunk = pa.concat_tables(pieces, promote_options="default")
            keys = np.concatenate(piece_keys)
            if timestamp is not None and span is None:
                span = _span_ticks(features, chunk.schema.field(timestamp).type.unit)
            narrow = chunk.select(needed)
            if context is not None:
                narrow = pa.concat_tables([context, narrow], promote_options="default")
                keys = np.concatenate([context_keys, keys])
            computed = compute_batch(narrow, features, entity=entity, timestamp=timestamp, con=con)
            skip = narrow.num_rows - chunk.num_rows
            for f in features:
                chunk = chunk.append_column(f.name, computed[f.name].slice(skip))
            yield chunk
            if r + 1 < len(ranges):
                start = ranges[r + 1][0]
                reach = None if span is None or start == NULL_KEY else max(start - span, -NULL_KEY)
                keep = _context(narrow, keys, entity, last, reach)
                context, context_keys = narrow.take(keep), keys[keep]
    finally:
        con.close()
