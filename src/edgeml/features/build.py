"""Build the feature table of a validated snapshot: window features, then row features."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgeml.features.chunked import windows_by_range
from edgeml.features.expr import parse_expression
from edgeml.ingest.lake import Part, _put_part, part_bytes, read_parts
from edgeml.settings import S3Settings, Settings
from edgeml.spec.models import RowFeature, Spec
from edgeml.store import ObjectStore, open_store, store_from_settings
from edgeml.validate.run import validated_parts

__all__ = ["FeatureReport", "apply_row_features", "build_features"]


#: most buckets the rows are hash-partitioned into by entity (one feature task each)
MAX_BUCKETS = 256
#: most rows of one feature part (a bucket of few, long-lived entities is written as several)
PART_ROWS = 262_144
#: rows a feature task computes windows over at a time (a larger bucket goes by key ranges)
CHUNK_ROWS = 262_144


@dataclass
class FeatureReport:
    dataset: str
    snapshot: str
    rows: int
    parts: list[Part]
    stats: dict[str, dict[str, float]]

    @property
    def prefix(self) -> str:
        """The store prefix under which the feature parts live."""
        return f"features/{self.dataset}/{self.snapshot}/"


def _as_array(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_timestamp(column.type):
        return np.asarray(column.cast(pa.timestamp("ms")).to_numpy(), dtype="datetime64[ms]")
    return np.asarray(column.cast(pa.float64()).fill_null(float("nan")).to_numpy(), dtype=np.float64)


def apply_row_features(table: pa.Table, features: Sequence[RowFeature]) -> pa.Table:
    """Append row features in order; each may use columns and the features before it."""
    for feature in features:
        expr = parse_expression(feature.expr)
        frame = {name: _as_array(table[name]) for name in expr.columns}
        with np.errstate(all="ignore"):  # log(0) and x/0 give -inf/NaN, as ONNX does
            values = np.broadcast_to(expr.evaluate(frame), (table.num_rows,))
        table = table.append_column(feature.name, pa.array(values, pa.float64()))
    return table


@dataclass
class _Moments:
    """Running statistics of one feature, mergeable across parts (Chan et al.'s parallel variance)."""

    rows: int = 0
    finite: int = 0
    mean: float = 0.0
    m2: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    @classmethod
    def of(cls, values: np.ndarray) -> _Moments:
        finite = values[np.isfinite(values)]
        if not len(finite):
            return cls(len(values))
        mean = float(finite.mean())
        return cls(
            len(values),
            len(finite),
            mean,
            float(((finite - mean) ** 2).sum()),
            float(finite.min()),
            float(finite.max()),
        )

    def merge(self, other: _Moments) -> _Moments:
        n = self.finite + other.finite
        if not n:
            return _Moments(self.rows + other.rows)
        delta = other.mean - self.mean
        return _Moments(
            self.rows + other.rows,
            n,
            self.mean + delta * other.finite / n,
            self.m2 + other.m2 + delta**2 * self.finite * other.finite / n,
            min(self.low, other.low),
            max(self.high, other.high),
        )

    def summary(self) -> dict[str, float]:
        nan = float("nan")
        some = self.finite > 0
        return {
            "missing": 1 - self.finite / self.rows if self.rows else 0.0,
            "mean": self.mean if some else nan,
            "std": math.sqrt(self.m2 / self.finite) if some else nan,
            "min": self.low if some else nan,
            "max": self.high if some else nan,
        }


def feature_moments(tables: list[pa.Table], names: list[str]) -> dict[str, dict[str, float]]:
    """Each feature's summary (missing share, mean, std, min, max) over the rows of ``tables``."""
    totals = {name: _Moments() for name in names}
    for table in tables:
        for name in names:
            totals[name] = totals[name].merge(_Moments.of(_as_array(table[name])))
    return {name: m.summary() for name, m in totals.items()}


def _bucket_of(table: pa.Table, entity: str, buckets: int) -> np.ndarray:
    import pandas as pd

    values = table[entity].to_pandas()
    hashed = pd.util.hash_pandas_object(values, index=False).to_numpy()  # the same in every process
    return np.asarray(hashed % np.uint64(buckets), dtype=np.int64)


def _split_part(
    index: int, part: Part, spec: Spec, store_url: str, s3: S3Settings, prefix: str, buckets: int
) -> list[Part | None]:
    """Task: split one validated part by entity into ``buckets`` parts (a shuffle through the store)."""
    store = open_store(store_url, s3)
    table = read_parts(store, [part], spec.schema_)
    assert spec.schema_.entity is not None
    bucket = _bucket_of(table, spec.schema_.entity, buckets)
    out: list[Part | None] = []
    for b in range(buckets):
        rows = table.filter(pa.array(bucket == b))
        out.append(
            _put_part(store, f"{prefix}shuffle/b={b}", rows, f"{index}", "") if rows.num_rows else None
        )
    return out


def _read_part(store: ObjectStore, part: Part, columns: Sequence[str] | None) -> pa.Table:
    """One part (its sha256 verified), only ``columns`` (all with None)."""
    data = io.BytesIO(part_bytes(store, part))
    return pq.read_table(data, columns=None if columns is None else list(columns))


def _feature_task(
    parts: list[Part],
    spec: Spec,
    store_url: str,
    s3: S3Settings,
    prefix: str,
    part_rows: int,
    chunk_rows: int,
) -> tuple[list[Part], dict[str, _Moments]]:
    """Task: window then row features over ``parts`` (every reading of their entities).

    Holds at most about ``chunk_rows`` rows (plus the windows' context, see
    :mod:`edgeml.features.chunked`), however many ``parts`` hold; writes parts of at most
    ``part_rows`` rows, so a reader of the table (training's stream) holds a bounded part."""
    store = open_store(store_url, s3)
    names = [f.name for f in spec.features.window] + [f.name for f in spec.features.row]
    moments = {name: _Moments() for name in names}
    out: list[Part] = []
    pending: list[pa.Table] = []  # rows not written yet: fewer than part_rows, but for the last

    def flush(final: bool) -> None:
        table = pa.concat_tables(pending) if pending else None
        pending.clear()
        if table is None:
            return
        start = 0
        while start < table.num_rows and (final or table.num_rows - start >= part_rows):
            out.append(_put_part(store, prefix.rstrip("/"), table.slice(start, part_rows), "features", ""))
            start += part_rows
        if start < table.num_rows:
            pending.append(table.slice(start))

    loaders = [partial(_read_part, store, part) for part in parts]
    ranges = windows_by_range(
        loaders,
        [p.rows for p in parts],
        spec.features.window,
        entity=spec.schema_.entity,
        timestamp=spec.schema_.timestamp,
        chunk_rows=chunk_rows,
    )
    for windowed in ranges:
        table = apply_row_features(windowed, spec.features.row)
        for name in names:
            moments[name] = moments[name].merge(_Moments.of(_as_array(table[name])))
        pending.append(table)
        flush(final=False)
    flush(final=True)
    return out, moments


def build_features(
    spec: Spec,
    settings: Settings,
    snapshot_id: str | None = None,
    *,
    part_rows: int = PART_ROWS,
    chunk_rows: int = CHUNK_ROWS,
) -> FeatureReport:
    """Compute features for a validated snapshot and store them next to it, in parts.

    Streams: each task holds a bounded share of the rows. Without window features, one task per
    validated part. With them, rows are first hash-partitioned by entity (one task per part
    writes a sub-part per bucket), then one task per bucket computes the windows: every reading
    of an entity is in its bucket, so windows are exact across part boundaries. Without an
    entity, the windows span the whole snapshot and one task computes them. A task holds about
    ``chunk_rows`` rows however large its bucket: it goes key range by key range, carrying the
    rows the next range's windows reach (:mod:`edgeml.features.chunked`).
    """
    from edgeml.ingest.runtime import run_tasks

    store = store_from_settings(settings)
    snapshot, parts = validated_parts(store, spec, snapshot_id)
    prefix = f"features/{spec.name}/{snapshot.id}/"
    shared = {"spec": spec, "store_url": settings.store_url, "s3": settings.store.s3, "prefix": prefix}
    groups: list[list[Part]]
    if not spec.features.window:
        groups = [[part] for part in parts]
    elif spec.schema_.entity is None or len(parts) < 2:
        groups = [parts]
    else:
        buckets = min(len(parts), MAX_BUCKETS)
        split = run_tasks(_split_part, [(i, p) for i, p in enumerate(parts)], buckets=buckets, **shared)
        groups = [[s[b] for s in split if s[b] is not None] for b in range(buckets)]  # type: ignore[misc]
        groups = [g for g in groups if g]
    results = run_tasks(
        _feature_task, [(g,) for g in groups], part_rows=part_rows, chunk_rows=chunk_rows, **shared
    )
    for info in store.list(f"{prefix}shuffle/"):  # the shuffle's sub-parts served their purpose
        store.delete(info.key)
    names = [f.name for f in spec.features.window] + [f.name for f in spec.features.row]
    totals = {name: _Moments() for name in names}
    for _, moments in results:
        for name in names:
            totals[name] = totals[name].merge(moments[name])
    out = [part for parts_out, _ in results for part in parts_out]
    rows = sum(p.rows for p in out)
    report = FeatureReport(spec.name, snapshot.id, rows, out, {n: m.summary() for n, m in totals.items()})
    # an undefined statistic (a feature missing everywhere) is null: NaN is not JSON
    stats = {
        name: {k: v if math.isfinite(v) else None for k, v in st.items()} for name, st in report.stats.items()
    }
    doc = {
        "dataset": spec.name,
        "snapshot": snapshot.id,
        "rows": rows,
        "parts": [vars(p) for p in out],
        "features": names,
        "stats": stats,
    }
    store.put(
        f"catalog/{spec.name}/features/{snapshot.id}.json",
        json.dumps(doc, indent=2, allow_nan=False).encode(),
        content_type="application/json",
    )
    return report
