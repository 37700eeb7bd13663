"""The feature table of a large snapshot, read part by part: its split rule and a bounded row stream.

Nothing here holds more than one part's column of the table at a time. :class:`Splitter` says
which split (train, validation, holdout) each row is in from the row alone — its timestamp
against two cut points, or a seeded draw by its position in its part — so every reader (the
sampler, each trial's stream, the final refit) agrees without a per-row list anywhere.
:class:`SplitStream` yields the rows of some splits in batches, for the families that learn
incrementally (``partial_fit``).

Why not Ray Data inside the trials: the search already runs one trial per CPU, and a Ray Data
pipeline started in a trial asks the same cluster for CPUs the trials hold — it waits (or
serialises the trials). Each trial reads the parts itself with pyarrow instead, one row group
at a time, on whichever node it runs, from the shared store.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from edgeml.ingest.lake import Part, part_bytes
from edgeml.settings import S3Settings
from edgeml.store import ObjectStore, open_store

__all__ = ["HOLDOUT", "TRAIN", "VALIDATION", "SplitStream", "Splitter", "order_statistics", "part_file"]

TRAIN, VALIDATION, HOLDOUT = 0, 1, 2
#: rows a stream holds at a time (besides one part's compressed bytes)
BATCH_ROWS = 16_384


def part_file(store: ObjectStore, part: Part) -> pq.ParquetFile:
    """One part, its sha256 verified, opened for reading column by column and batch by batch."""
    return pq.ParquetFile(io.BytesIO(part_bytes(store, part)))


def epoch_ticks(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as int64 ticks of its own unit (nulls as the smallest int64)."""
    return np.asarray(column.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy())


@dataclass(frozen=True)
class Splitter:
    """Which split each row is in, from the row alone (see the module docstring).

    With ``cuts`` (ticks of the timestamp column), by time: at or after ``cuts[1]`` holdout,
    at or after ``cuts[0]`` validation, train before. Without, row ``r`` of part ``i`` draws a
    uniform number from a generator seeded by ``(seed, i, 0)``: below ``holdout`` it is held out,
    below ``holdout + validation`` it validates.
    """

    seed: int
    holdout: float
    validation: float
    timestamp: str | None = None
    cuts: tuple[int, int] | None = None

    def draws(self, part_index: int) -> np.random.Generator:
        """The generator a part's rows draw from, in row order (batches draw successive values)."""
        return np.random.default_rng([self.seed, part_index, 0])

    def assign(self, stamps: np.ndarray | None, draws: np.ndarray | None) -> np.ndarray:
        if self.cuts is not None:
            assert stamps is not None
            t = stamps
            out = np.where(t >= self.cuts[1], HOLDOUT, np.where(t >= self.cuts[0], VALIDATION, TRAIN))
        else:
            assert draws is not None
            hold, val = self.holdout, self.holdout + self.validation
            out = np.where(draws < hold, HOLDOUT, np.where(draws < val, VALIDATION, TRAIN))
        return out.astype(np.int8)


def order_statistics(columns: Callable[[], Iterator[np.ndarray]], ranks: Sequence[int]) -> list[int]:
    """The exact ``ranks``-th smallest values (0-based) of int64 values read column by column.

    Memory does not grow with the rows: each pass over ``columns()`` counts values in 65,536
    buckets and keeps only the bucket holding each rank, so int64 ranges need a few passes.
    """
    low = high = None
    for values in columns():
        if len(values):
            lo, hi = int(values.min()), int(values.max())
            low, high = lo if low is None else min(low, lo), hi if high is None else max(high, hi)
    if low is None or high is None:
        raise ValueError("no values")
    bins = 1 << 16
    bounds = {k: (low, high, k) for k in ranks}  # rank -> (low, high, rank within [low, high])
    while any(lo < hi for lo, hi, _ in bounds.values()):
        open_ = {k: b for k, b in bounds.items() if b[0] < b[1]}
        widths = {k: -(-(hi - lo + 1) // bins) for k, (lo, hi, _) in open_.items()}
        counts = {k: np.zeros(bins, dtype=np.int64) for k in open_}
        for values in columns():
            for k, (lo, hi, _) in open_.items():
                inside = values[(values >= lo) & (values <= hi)]
                counts[k] += np.bincount((inside - lo) // widths[k], minlength=bins)[:bins]
        for k, (lo, hi, r) in open_.items():
            cumulative = np.cumsum(counts[k])
            b = int(np.searchsorted(cumulative, r, side="right"))
            below = int(cumulative[b - 1]) if b else 0
            start = lo + b * widths[k]
            bounds[k] = (start, min(hi, start + widths[k] - 1), r - below)
    return [bounds[k][0] for k in ranks]


@dataclass(frozen=True)
class SplitStream:
    """Every row of the chosen splits of a feature table, ``BATCH_ROWS`` at a time.

    Each epoch visits the parts in a seeded order and shuffles each batch's rows (seeded), so
    an incremental learner does not see the snapshot in lake order every time. Picklable: a
    trial on any node opens the store itself.
    """

    parts: tuple[Part, ...]
    store_url: str
    s3: S3Settings
    splitter: Splitter
    #: rows of each split (train, validation, holdout) in the whole table
    rows: tuple[int, int, int]
    #: rows of each target class in the training split (classification), for class weights
    class_rows: dict[str, int] = field(default_factory=dict)
    batch_rows: int = BATCH_ROWS

    def batches(self, splits: Sequence[int], epoch: int) -> Iterator[pd.DataFrame]:
        """The rows of ``splits``, in batches of about ``batch_rows`` (small parts are pooled)."""
        store = open_store(self.store_url, self.s3)
        seed, by_time = self.splitter.seed, self.splitter.cuts is not None
        shuffle = np.random.default_rng([seed, epoch, 4])
        pooled: list[pa.RecordBatch] = []
        pooled_rows = 0

        def flush() -> pd.DataFrame:
            nonlocal pooled, pooled_rows
            table = pa.Table.from_batches(pooled)
            pooled, pooled_rows = [], 0
            return table.take(pa.array(shuffle.permutation(table.num_rows))).to_pandas()

        for i in np.random.default_rng([seed, epoch, 3]).permutation(len(self.parts)):
            draws = self.splitter.draws(int(i))
            for batch in part_file(store, self.parts[int(i)]).iter_batches(batch_size=self.batch_rows):
                split = self.splitter.assign(
                    epoch_ticks(batch.column(self.splitter.timestamp)) if by_time else None,
                    None if by_time else draws.random(batch.num_rows),
                )
                keep = np.flatnonzero(np.isin(split, splits))
                if len(keep):
                    pooled.append(batch.take(pa.array(keep)))
                    pooled_rows += len(keep)
                if pooled_rows >= self.batch_rows:
                    yield flush()
        if pooled_rows:
            yield flush()
