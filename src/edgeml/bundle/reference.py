"""Binning shared by the bundle builder (reference statistics) and the agent (telemetry).

Both sides must count the same way, or drift would be an artefact of the code: a value
``x`` falls in bin ``searchsorted(edges, x, side="right")`` of ``len(edges) + 1`` open-ended
bins; a category outside the reference list counts as "other" (the last count).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeml.bundle.manifest import CategoryCounts, Histogram

__all__ = [
    "PROBABILITY_EDGES",
    "bin_counts",
    "category_counts",
    "category_histogram",
    "numeric_histogram",
    "quantile_edges",
]

#: fixed score bins for probabilities: ten bins of 0.1
PROBABILITY_EDGES = [round(0.1 * i, 1) for i in range(1, 10)]


def quantile_edges(values: np.ndarray, bins: int = 10) -> list[float]:
    """Interior cut points at the quantiles of the finite values (fewer when values repeat)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    cuts = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(c) for c in np.unique(cuts)]


def bin_counts(edges: Sequence[float], values: np.ndarray) -> tuple[list[int], int]:
    """(counts per bin, missing count) of numeric values on ``edges``."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values[~missing], side="right")
    return np.bincount(index, minlength=len(edges) + 1).tolist(), int(missing.sum())


def numeric_histogram(values: np.ndarray, edges: Sequence[float] | None = None) -> Histogram:
    values = np.asarray(values, dtype=np.float64)
    cuts = list(edges) if edges is not None else quantile_edges(values)
    counts, missing = bin_counts(cuts, values)
    return Histogram(edges=cuts, counts=counts, missing=missing)


def category_counts(categories: Sequence[str], values: Sequence[Any]) -> tuple[list[int], int]:
    """(counts per category plus "other", missing count)."""
    index = {c: i for i, c in enumerate(categories)}
    counts = [0] * (len(categories) + 1)
    missing = 0
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            missing += 1
        else:
            counts[index.get(str(value), len(categories))] += 1
    return counts, missing


def category_histogram(
    values: Sequence[Any], allowed: Sequence[str] | None = None, top: int = 30
) -> CategoryCounts:
    """Reference counts over the allowed values, or the ``top`` most frequent ones."""
    if allowed is None:
        seen = Counter(str(v) for v in values if v is not None and not (isinstance(v, float) and np.isnan(v)))
        allowed = sorted(c for c, _ in seen.most_common(top))
    counts, missing = category_counts(list(allowed), values)
    return CategoryCounts(values=list(allowed), counts=counts, missing=missing)
