"""Personal data in what a bundle publishes: which inputs are pii, and golden samples without it.

A bundle's manifest goes to every device, and its reference rows to the central node: neither may
carry a value of a ``pii`` column, under any compliance mode. An input is pii when it is a pii
column (one a row feature reads enters the graph raw) or a window feature aggregating one — a
rolling mean of ages is still about the person. Such inputs get no reference histogram (its quantile
edges are values from the data) and their golden values are synthesised: drawn in the range the
data spans, never equal to a value seen. The golden outputs are then computed from the device
runtime on the synthesised rows, so the smoke test proves parity exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from edgeml.features.expr import parse_expression
from edgeml.spec.models import Spec

__all__ = ["MASK_PREFIX", "pii_columns", "pii_inputs", "synthesise_golden"]

#: what a masked text or category value looks like
MASK_PREFIX = "pii-masked-"


def pii_columns(spec: Spec) -> set[str]:
    """The schema's ``pii`` columns."""
    return {name for name, col in spec.schema_.columns.items() if col.pii}


def pii_inputs(spec: Spec, inputs: Iterable[str]) -> set[str]:
    """The model ``inputs`` that carry personal data: pii columns and window features over them
    (or over a row feature that reads one)."""
    pii = pii_columns(spec)
    derived = {f.name for f in spec.features.row if parse_expression(f.expr).columns & pii}
    windows = {w.name for w in spec.features.window if w.column in pii | derived}
    return {name for name in inputs if name in pii | windows}


def synthesise_golden(
    records: Sequence[dict[str, Any]],
    pii: set[str],
    seen: pd.DataFrame,
    bounds: dict[str, tuple[float | None, float | None]],
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``records`` with every ``pii`` input replaced by a synthetic value.

    Numbers (and times) are drawn uniformly in the range of the values in ``seen`` (narrowed to the
    input's valid ``bounds``), rounded to 3 decimals and moved off any value that occurs in ``seen``;
    text becomes ``pii-masked-<n>``. A missing value stays missing (the smoke test keeps the case).
    """
    rng = np.random.default_rng(seed)
    out = [dict(r) for r in records]
    for name in sorted(pii):
        column = seen[name] if name in seen else pd.Series([], dtype=object)
        for i, record in enumerate(out):
            value = record.get(name)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            record[name] = _synthetic(value, column, bounds.get(name, (None, None)), rng, i)
    return out


def _synthetic(
    value: Any, seen: pd.Series, bounds: tuple[float | None, float | None], rng: np.random.Generator, i: int
) -> Any:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number | datetime):
        return f"{MASK_PREFIX}{i}"
    as_time = isinstance(value, datetime)
    numbers = _as_numbers(seen, as_time)
    lo, hi = (float(numbers.min()), float(numbers.max())) if numbers.size else (0.0, 1.0)
    if bounds[0] is not None:
        lo = max(lo, bounds[0])
    if bounds[1] is not None:
        hi = min(hi, bounds[1])
    taken = set(np.round(numbers, 6).tolist())  # a reading stored as 3.5789999999999997 is 3.579
    step = 1.0 if as_time else 0.001
    x = round(float(rng.uniform(lo, hi)), 0 if as_time else 3)
    while round(x, 6) in taken:  # a draw that hit a real value: move off it (in the valid range if it can)
        x = x + step if x + step <= hi or x - step < lo else x - step
        step *= 1.5
    if isinstance(value, datetime):
        tz = value.tzinfo
        return pd.Timestamp(x, unit="s", tz=tz) if tz is not None else pd.Timestamp(x, unit="s")
    return x


def _as_numbers(seen: pd.Series, as_time: bool) -> np.ndarray:
    if as_time:
        times = pd.to_datetime(seen, utc=True).dropna()
        seconds: np.ndarray = np.asarray(times.astype("int64") // 10**9, dtype=np.float64)  # as drawn
        return seconds
    numbers = np.asarray(pd.to_numeric(seen, errors="coerce"), dtype=np.float64)
    finite: np.ndarray = numbers[np.isfinite(numbers)]
    return finite
