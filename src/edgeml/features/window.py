"""Window features per entity, computed two ways with identical results.

- :func:`compute_batch`: DuckDB window functions over a whole table (training data).
- :class:`OnlineWindows`: plain Python + math over a stream, reading by reading (the
  edge agent). It imports nothing heavy, so a device needs neither pandas nor DuckDB.

Semantics, shared by both (a parity test feeds the same stream to each):

- readings are ordered by timestamp within an entity; a row's window ends at the row;
- ``size: N`` covers the last N readings; ``span: D`` covers readings with
  timestamp ≥ t − D (readings with an equal timestamp count as simultaneous, so give each
  entity strictly increasing timestamps — a ``monotonic_timestamp`` expectation with
  ``strict: true`` checks it);
- missing values are skipped by mean/std/min/max/sum/count/last, like SQL aggregates;
  an empty window gives NaN (``count`` gives 0); ``std`` is the sample standard
  deviation (NaN for fewer than two values);
- ``lag: N`` is the value N readings back (NaN when there are not that many).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeml.spec.models import WindowFeature

__all__ = ["OnlineWindows", "compute_batch"]

_SQL_AGG = {
    "mean": "avg",
    "std": "stddev_samp",
    "min": "min",
    "max": "max",
    "sum": "sum",
    "count": "count",
    "last": "last_value",
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql(feature: WindowFeature, entity: str | None, timestamp: str | None) -> str:
    col = _quote(feature.column)
    partition = f"PARTITION BY {_quote(entity)} " if entity else ""
    order = f"ORDER BY {_quote(timestamp)}, __seq" if timestamp else "ORDER BY __seq"
    if feature.agg == "lag":
        return f"lag({col}, {feature.lag}) OVER ({partition}{order})"
    agg = _SQL_AGG[feature.agg]
    arg = f"{col} IGNORE NULLS" if feature.agg == "last" else col
    if feature.size is not None:
        frame = f"{order} ROWS BETWEEN {feature.size - 1} PRECEDING AND CURRENT ROW"
    else:
        assert feature.span is not None
        assert timestamp is not None
        micros = int(feature.span.total_seconds() * 1_000_000)
        frame = (  # a quoted interval: DuckDB 1.5 parses no integer past 2**31 before MICROSECONDS
            f"ORDER BY {_quote(timestamp)} RANGE BETWEEN INTERVAL '{micros} microseconds' "
            "PRECEDING AND CURRENT ROW"
        )
    return f"{agg}({arg}) OVER ({partition}{frame})"


def compute_batch(
    table: Any,
    features: Sequence[WindowFeature],
    *,
    entity: str | None,
    timestamp: str | None,
    con: Any = None,
) -> Any:
    """Return ``table`` (pyarrow) with one float64 column per window feature, rows in input order.

    ``con``: a DuckDB connection to reuse (opening one costs more than a small table's windows).
    """
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc

    if not features:
        return table
    # NaN is a missing reading, as on the device: make it NULL, which SQL aggregates skip
    source = table
    for name in dict.fromkeys(f.column for f in features):
        column = source[name]
        if pa.types.is_floating(column.type):
            missing = pc.is_nan(column)
            source = source.set_column(
                source.schema.get_field_index(name),
                name,
                pc.if_else(missing, pa.scalar(None, column.type), column),
            )
    # An explicit row number: DuckDB does not promise to keep scan order.
    source = source.append_column("__seq", pa.array(range(source.num_rows), pa.int64()))
    own = con is None
    con = duckdb.connect() if own else con
    try:
        con.register("src", source)
        selects = ", ".join(
            f"CAST({_sql(f, entity, timestamp)} AS DOUBLE) AS {_quote(f.name)}" for f in features
        )
        result = con.sql(
            f"SELECT {selects} FROM src ORDER BY __seq"  # noqa: S608
        ).to_arrow_table()
    finally:
        con.unregister("src")
        if own:
            con.close()
    for f in features:
        column = result[f.name].fill_null(float("nan")) if f.agg != "count" else result[f.name].fill_null(0.0)
        table = table.append_column(f.name, column.cast(pa.float64()))
    return table


@dataclass
class _State:
    values: deque[tuple[int, float]] = field(default_factory=deque)  # (timestamp in µs, value)


def _aggregate(agg: str, values: list[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    if agg == "count":
        return float(len(present))
    if not present:
        return math.nan
    if agg == "last":
        return present[-1]
    if agg == "sum":
        return math.fsum(present)
    if agg == "mean":
        return math.fsum(present) / len(present)
    if agg == "min":
        return min(present)
    if agg == "max":
        return max(present)
    if len(present) < 2:  # std
        return math.nan
    mean = math.fsum(present) / len(present)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in present) / (len(present) - 1))


class OnlineWindows:
    """Window features over a stream, one reading at a time, per entity."""

    def __init__(self, features: Sequence[WindowFeature]) -> None:
        self.features = list(features)
        self._state: dict[tuple[Any, str], _State] = {}

    def update(self, entity: Any, timestamp_s: float, values: Mapping[str, float | None]) -> dict[str, float]:
        """Add one reading of ``entity`` and return every feature's value at it.

        ``values`` maps column names to readings; ``None`` or NaN is a missing reading.
        """
        out: dict[str, float] = {}
        now_us = round(timestamp_s * 1_000_000)  # integer µs: span edges compare exactly, as in SQL
        for f in self.features:
            state = self._state.setdefault((entity, f.name), _State())
            raw = values.get(f.column)
            value = math.nan if raw is None else float(raw)
            window = state.values
            window.append((now_us, value))
            if f.agg == "lag":
                assert f.lag is not None
                while len(window) > f.lag + 1:
                    window.popleft()
                out[f.name] = window[0][1] if len(window) == f.lag + 1 else math.nan
                continue
            if f.size is not None:
                while len(window) > f.size:
                    window.popleft()
            else:
                assert f.span is not None
                start = now_us - round(f.span.total_seconds() * 1_000_000)
                while window and window[0][0] < start:
                    window.popleft()
            out[f.name] = _aggregate(f.agg, [v for _, v in window])
        return out
