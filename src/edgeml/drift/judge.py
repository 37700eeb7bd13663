"""The judge of one chunk: one input's counts against its reference and band.

The live monitor (a pooled window of device telemetry) and ``edgeml drift run`` (a chunk of
a file) both end here, so a backtest judges exactly as production does.

A manifest signs bands for its main chunk size and a ladder of smaller ones
(:attr:`DriftThresholds.smaller`); :func:`band_for` picks the largest a window fills. A band is
for chunks of one size. A
distance's sampling noise grows as 1/√rows, so a smaller chunk (a quiet window, a file's last
chunk) is judged against the band widened by √(chunk_size / rows). A larger one keeps the
band as it is: the reference chunks' spread holds more than sampling noise (rows that follow
each other, slow cycles), and that part does not shrink with more rows. chi2 needs no
scaling: its critical value depends only on the table's degrees of freedom.

``min_js`` is an optional effect-size floor (off by default): an alert also needs a
Jensen-Shannon distance of at least this much, for data whose rows are so dependent that a
statistically clear but tiny shift is not worth a page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeml.bundle.manifest import CategoryCounts, DriftThresholds, FeatureThreshold, Histogram
from edgeml.drift.methods import Method, chi2, distance, js

__all__ = ["Verdict", "band_for", "judge"]


class Verdict(BaseModel):
    """One input in one chunk: its value, the band it is judged by, and whether it alerts."""

    model_config = ConfigDict(frozen=True)

    feature: str
    method: Method
    value: float | None = Field(description="the method's value; null for a chunk without a value")
    lower: float | None = Field(description="alert below this; null: no lower bound")
    upper: float | None = Field(description="alert above this; null: no upper bound")
    alert: bool
    rows: int = Field(description="values compared (missing values are not)")
    missing: int = Field(0, description="missing values in the chunk")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def band_for(thresholds: DriftThresholds, feature: str, rows: int) -> tuple[FeatureThreshold, int] | None:
    """The band of ``feature`` for a chunk of ``rows`` and its chunk size: of the signed chunk sizes,
    the largest the chunk fills, else the smallest (None: the feature has no band)."""
    sizes = [(b.chunk_size, b.features) for b in thresholds.smaller]
    sizes.append((thresholds.chunk_size, thresholds.features))
    sizes = [(size, bands) for size, bands in sizes if feature in bands]
    if not sizes:
        return None
    filled = [(size, bands) for size, bands in sizes if size <= rows]
    size, bands = max(filled, key=lambda x: x[0]) if filled else min(sizes, key=lambda x: x[0])
    return bands[feature], size


def judge(
    feature: str,
    threshold: FeatureThreshold,
    reference: Histogram | CategoryCounts,
    counts: Sequence[int],
    chunk_size: int,
    *,
    missing: int = 0,
    min_js: float = 0.0,
) -> Verdict:
    """Judge one chunk's ``counts`` (on ``reference``'s bins, missing values apart)."""
    ref = np.asarray(reference.counts, dtype=np.float64)
    cur = np.asarray(counts, dtype=np.float64)
    if ref.shape != cur.shape:
        raise ValueError(f"{feature!r}: {len(cur)} counts on a reference of {len(ref)} bins")
    rows = int(cur.sum())
    method = threshold.method
    if method == "chi2":
        value, critical = chi2(ref, cur, threshold.alpha or 0.05)
        lower, upper = None, _finite(critical)
    else:
        edges = reference.edges if isinstance(reference, Histogram) else None
        value = float(distance(method, ref, cur, edges)) if rows else math.nan
        scale = math.sqrt(chunk_size / rows) if 0 < rows < chunk_size else 1.0
        lower = None if threshold.lower is None else threshold.lower * scale
        upper = None if threshold.upper is None else threshold.upper * scale
    alert = math.isfinite(value) and (
        (lower is not None and value < lower) or (upper is not None and value > upper)
    )
    if alert and min_js > 0:
        alert = float(js(ref, cur)) >= min_js
    return Verdict(
        feature=feature,
        method=method,
        value=_finite(value),
        lower=lower,
        upper=upper,
        alert=bool(alert),
        rows=rows,
        missing=missing,
    )
