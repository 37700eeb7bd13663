"""Reference statistics and thresholds: what ``bundle build`` signs and ``edgeml drift run`` uses.

Per input, as NannyML 0.13's ``UnivariateDriftCalculator`` fits it:

- **bins**: a continuous input is cut at numpy's ``doane`` edges of its reference values
  (``wasserstein``: :data:`WASSERSTEIN_BINS` equal widths over the reference range), bounded
  bins closed on the left, the last one closed on both sides, and one open-ended bin on each
  side for values outside the range; a categorical input has one bin per reference category
  (at most :data:`MAX_CATEGORIES`, the most frequent) and one for every other value. Counting
  uses :func:`edgeml.bundle.reference.bin_counts` / ``category_counts``, the functions the
  agent counts telemetry with;
- **band**: the reference rows are cut into consecutive chunks of ``chunk_size`` rows (the
  last one smaller when they do not divide, as NannyML keeps it), the method's value is
  computed for every chunk against the whole reference, and the band is mean ± ``multiplier``
  standard deviations (population, ``np.nanstd``), a bound below a method's floor (0 for a
  distance) raised to it. NannyML's drift default has no lower bound (``lower_multiplier``
  None) and neither has ours. ``chi2`` keeps NannyML's p-value rule instead of a band.

A column is categorical when its dtype is object, string, category or bool and continuous
when it is a number (NannyML's rule), unless the caller says otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from edgeml.bundle.manifest import (
    CategoryCounts,
    ChunkBands,
    DriftThresholds,
    FeatureThreshold,
    GroupReference,
    Histogram,
)
from edgeml.bundle.reference import bin_counts, category_counts
from edgeml.drift.methods import (
    CATEGORICAL_METHODS,
    CONTINUOUS_METHODS,
    DEFAULT_CATEGORICAL,
    DEFAULT_CONTINUOUS,
    Method,
    distance,
)

__all__ = [
    "ALPHA",
    "MAX_CATEGORIES",
    "STD_MULTIPLIER",
    "WASSERSTEIN_BINS",
    "Kind",
    "build_reference",
    "chunk_bounds",
    "column_kind",
    "continuous_edges",
    "feature_threshold",
    "group_reference",
    "recount",
    "reference_histogram",
]

Kind = Literal["continuous", "categorical"]

#: NannyML's StandardDeviationThreshold: mean + 3 standard deviations
STD_MULTIPLIER = 3.0
#: chi2 alerts when its p-value is below this (NannyML's rule)
ALPHA = 0.05
#: categories with a bin of their own; the rest share "other"
MAX_CATEGORIES = 200
#: equal-width bins over the reference range for Wasserstein
WASSERSTEIN_BINS = 1000


def column_kind(column: pd.Series) -> Kind | None:
    """NannyML's split: numbers are continuous; object, string, category, bool categorical."""
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype):
        return "continuous"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return "categorical"
    return None


def _closed_top(edges: np.ndarray) -> list[float]:
    # telemetry's bins are [a, b); NannyML's last bin also holds the reference maximum
    cuts = [float(e) for e in edges]
    cuts[-1] = float(np.nextafter(cuts[-1], np.inf))
    return cuts


def continuous_edges(values: np.ndarray, method: Method = "js") -> list[float]:
    """The cut points of a continuous input (both ends included); [] without a finite value."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return []
    if method == "wasserstein":
        return _closed_top(np.histogram_bin_edges(finite, bins=WASSERSTEIN_BINS))
    return _closed_top(np.histogram_bin_edges(finite, bins="doane"))


def _categories(values: Sequence[Any]) -> list[str]:
    seen = Counter(str(v) for v in values if not _missing(v))
    return sorted(c for c, _ in seen.most_common(MAX_CATEGORIES))


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def reference_histogram(
    values: pd.Series, kind: Kind, method: Method, allowed: Sequence[str] | None = None
) -> Histogram | CategoryCounts:
    """The reference counts of one input on its drift bins."""
    if kind == "continuous":
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        edges = continuous_edges(numbers, method)
        counts, missing = bin_counts(edges, numbers)
        return Histogram(edges=edges, counts=counts, missing=missing)
    items = [None if _missing(v) else v for v in values.tolist()]
    categories = list(allowed) if allowed is not None else _categories(items)
    counts, missing = category_counts(categories, items)
    return CategoryCounts(values=categories, counts=counts, missing=missing)


def _bin_index(hist: Histogram | CategoryCounts, values: pd.Series) -> np.ndarray:
    """Per row, its bin on ``hist`` (-1: missing): bin_counts / category_counts, row by row."""
    if isinstance(hist, Histogram):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        index = np.searchsorted(np.asarray(hist.edges, dtype=np.float64), numbers, side="right")
        return np.where(np.isnan(numbers), -1, index)
    lookup = {c: i for i, c in enumerate(hist.values)}
    other = len(hist.values)
    return np.fromiter(
        (-1 if _missing(v) else lookup.get(str(v), other) for v in values.tolist()),
        dtype=np.int64,
        count=len(values),
    )


def chunk_bounds(rows: int, chunk_size: int) -> list[tuple[int, int]]:
    """[start, stop) of consecutive chunks; the remainder is a last, smaller chunk (NannyML's 'keep')."""
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, not {chunk_size}")
    return [(start, min(start + chunk_size, rows)) for start in range(0, rows, chunk_size)]


def _chunk_counts(hist: Histogram | CategoryCounts, values: pd.Series, chunk_size: int) -> np.ndarray:
    """(chunks × bins) counts of the reference's own chunks."""
    index = _bin_index(hist, values)
    bins = len(hist.counts)
    bounds = chunk_bounds(len(values), chunk_size)
    chunk_of = np.repeat(np.arange(len(bounds)), [stop - start for start, stop in bounds])
    kept = index >= 0
    flat = np.bincount(chunk_of[kept] * bins + index[kept], minlength=len(bounds) * bins)
    return flat.reshape(len(bounds), bins)


def feature_threshold(
    hist: Histogram | CategoryCounts,
    values: pd.Series,
    method: Method,
    chunk_size: int,
    *,
    multiplier: float = STD_MULTIPLIER,
    lower_multiplier: float | None = None,
    alpha: float = ALPHA,
) -> FeatureThreshold:
    """The band of ``method`` over ``values``' chunks (``values`` are the rows ``hist`` counts)."""
    chunks = _chunk_counts(hist, values, chunk_size)
    reference = np.asarray(hist.counts, dtype=np.float64)
    if method == "chi2":
        return FeatureThreshold(method=method, alpha=alpha, chunks=len(chunks))
    edges = hist.edges if isinstance(hist, Histogram) else None
    scores = distance(method, reference, chunks, edges)
    scored = scores[np.isfinite(scores)]
    if scored.size == 0:
        return FeatureThreshold(method=method, chunks=len(chunks))
    mean, std = float(np.mean(scored)), float(np.std(scored))
    lower = None if lower_multiplier is None else max(mean - lower_multiplier * std, 0.0)
    return FeatureThreshold(
        method=method, lower=lower, upper=mean + multiplier * std, mean=mean, std=std, chunks=len(chunks)
    )


def build_reference(
    frame: pd.DataFrame,
    chunk_size: int,
    *,
    kinds: Mapping[str, Kind] | None = None,
    methods: Mapping[str, Method] | None = None,
    allowed: Mapping[str, Sequence[str] | None] | None = None,
    multiplier: float = STD_MULTIPLIER,
    smaller: Sequence[int] = (),
) -> tuple[dict[str, Histogram | CategoryCounts], DriftThresholds]:
    """Reference histograms and thresholds of ``frame``'s columns, rows in the order given.

    ``kinds`` overrides NannyML's dtype rule; ``methods`` picks a method per column (default:
    Jensen-Shannon); ``allowed`` fixes a categorical column's categories (the spec's values);
    ``smaller`` chunk sizes get bands of their own, for windows with fewer rows.
    """
    kinds, methods, allowed = kinds or {}, methods or {}, allowed or {}
    histograms: dict[str, Histogram | CategoryCounts] = {}
    thresholds: dict[str, FeatureThreshold] = {}
    for name in frame.columns:
        column = frame[name]
        kind = kinds.get(name) or column_kind(column)
        if kind is None:
            raise ValueError(f"column {name!r} ({column.dtype}) is neither a number nor a category")
        method = methods.get(name, DEFAULT_CONTINUOUS if kind == "continuous" else DEFAULT_CATEGORICAL)
        usable = CONTINUOUS_METHODS if kind == "continuous" else CATEGORICAL_METHODS
        if method not in usable:
            raise ValueError(
                f"method {method!r} does not apply to {kind} column {name!r}: use one of {usable}"
            )
        hist = reference_histogram(column, kind, method, allowed.get(name))
        histograms[name] = hist
        if sum(hist.counts):
            thresholds[name] = feature_threshold(hist, column, method, chunk_size, multiplier=multiplier)
    bands = [
        ChunkBands(
            chunk_size=size,
            features={
                name: feature_threshold(histograms[name], frame[name], t.method, size, multiplier=multiplier)
                for name, t in thresholds.items()
            },
        )
        for size in sorted(set(smaller))
        if size < chunk_size
    ]
    return histograms, DriftThresholds(
        chunk_size=chunk_size, std_multiplier=multiplier, features=thresholds, smaller=bands
    )


#: a bundle's reference chunks: a tenth of its rows, within these bounds
CHUNK_ROWS = (50, 5000)
#: smaller chunk sizes a bundle also signs bands for, so a quiet window is judged by a band of
#: chunks it fills rather than by a widened one
LADDER = (100, 200, 500, 1000, 2000)


def default_chunk_size(rows: int) -> int:
    """Ten reference chunks (NannyML's default count), of 50 to 5,000 rows each."""
    low, high = CHUNK_ROWS
    return max(low, min(high, rows // 10))


def model_inputs_reference(
    inputs: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    text: Sequence[str],
    allowed: Mapping[str, Sequence[str] | None],
    chunk_size: int | None = None,
) -> tuple[dict[str, Histogram | CategoryCounts], DriftThresholds]:
    """A model's input statistics for its manifest: numbers and text lengths continuous, categories
    over their allowed values; ``chunk_size`` defaults to :func:`default_chunk_size`."""
    frame = _inputs_frame(inputs, numeric, categorical, text)
    kinds: dict[str, Kind] = {}
    kinds.update(dict.fromkeys((*numeric, *text), "continuous"))
    kinds.update(dict.fromkeys(categorical, "categorical"))
    size = chunk_size or default_chunk_size(len(frame))
    return build_reference(frame, size, kinds=kinds, allowed=dict(allowed), smaller=LADDER)


def _inputs_frame(
    inputs: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str], text: Sequence[str]
) -> pd.DataFrame:
    """Model inputs as the agent counts them: numbers, categories as objects, texts as lengths."""
    return pd.DataFrame(
        {name: inputs[name].to_numpy(dtype=np.float64, na_value=np.nan) for name in numeric}
        | {name: inputs[name].astype(object) for name in categorical}
        # a missing text is length 0, as the agent counts it
        | {name: inputs[name].fillna("").astype(str).str.len().astype(np.float64) for name in text},
        index=inputs.index,
    )


def recount(
    frame: pd.DataFrame,
    bins: Mapping[str, Histogram | CategoryCounts],
    thresholds: DriftThresholds,
    chunk_size: int | None = None,
) -> tuple[dict[str, Histogram | CategoryCounts], DriftThresholds]:
    """``frame``'s statistics on bins already fixed, each input judged by the method ``thresholds``
    give it, its bands from ``frame``'s own chunks (``chunk_size``: :func:`default_chunk_size`).

    A device bins on one set of edges whatever its group, so a group's reference must count on them.
    """
    size = chunk_size or default_chunk_size(len(frame))
    histograms: dict[str, Histogram | CategoryCounts] = {}
    for name, hist in bins.items():
        if name not in frame:
            continue
        index = _bin_index(hist, frame[name])
        counts = np.bincount(index[index >= 0], minlength=len(hist.counts)).tolist()
        missing = int(np.count_nonzero(index < 0))
        histograms[name] = hist.model_copy(update={"counts": counts, "missing": missing})
    methods = {name: t.method for name, t in thresholds.features.items() if name in histograms}
    multiplier = thresholds.std_multiplier

    def bands(rows: int) -> dict[str, FeatureThreshold]:
        return {
            name: feature_threshold(histograms[name], frame[name], method, rows, multiplier=multiplier)
            for name, method in methods.items()
            if sum(histograms[name].counts)
        }

    smaller = [ChunkBands(chunk_size=s, features=bands(s)) for s in LADDER if s < size]
    return histograms, DriftThresholds(
        chunk_size=size, std_multiplier=multiplier, features=bands(size), smaller=smaller
    )


def group_reference(
    inputs: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    text: Sequence[str],
    bins: Mapping[str, Histogram | CategoryCounts],
    thresholds: DriftThresholds,
    source: str,
) -> GroupReference:
    """A device group's reference from its rows (model inputs, as for :func:`model_inputs_reference`),
    on the version's bins and methods."""
    frame = _inputs_frame(inputs, numeric, categorical, text)
    features, drift = recount(frame, bins, thresholds)
    return GroupReference(rows=len(frame), source=source, features=features, drift=drift)
