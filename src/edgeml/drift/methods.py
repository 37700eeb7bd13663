"""Drift methods on binned counts, computed as NannyML 0.13's univariate drift computes them.

Every method compares a chunk's counts with the reference's counts on the same bins (the
last axis; leading axes are many chunks at once). Missing values are not a bin here: NannyML
drops them before comparing (a rising missing rate is data quality, reported apart).

- ``js``: Jensen-Shannon distance, base 2 (``scipy.spatial.distance.jensenshannon``), in [0, 1];
- ``hellinger``: ‖√p − √q‖ / √2, in [0, 1];
- ``wasserstein``: the earth mover's distance between the two binned distributions, in the
  feature's units: Σ |F_ref − F_chunk| · width over equal-width bins. A value outside the
  reference's range counts at the range's end, so it is a lower bound where NannyML's
  exact tails would add the distance beyond the end;
- ``chi2``: the chi-squared statistic of the 2 × k contingency table (reference; chunk) with
  bins empty on both sides left out and Yates' correction when one degree of freedom remains
  (``scipy.stats.chi2_contingency``), and the critical value at ``alpha``.

A bin with no reference count (out of the reference range, or an unseen category) adds to
``js`` and ``hellinger`` in proportion to its chunk share, so below and above the range can
be two bins, as telemetry counts them, and still equal NannyML's one "leftover" bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

__all__ = [
    "CATEGORICAL_METHODS",
    "CONTINUOUS_METHODS",
    "DEFAULT_CATEGORICAL",
    "DEFAULT_CONTINUOUS",
    "METHODS",
    "Method",
    "chi2",
    "distance",
    "hellinger",
    "js",
    "wasserstein",
]

Method = Literal["js", "hellinger", "wasserstein", "chi2"]
METHODS: tuple[Method, ...] = get_args(Method)
CONTINUOUS_METHODS: tuple[Method, ...] = ("js", "hellinger", "wasserstein")
CATEGORICAL_METHODS: tuple[Method, ...] = ("js", "hellinger", "chi2")
#: NannyML's defaults: Jensen-Shannon for both kinds of column
DEFAULT_CONTINUOUS: Method = "js"
DEFAULT_CATEGORICAL: Method = "js"


def _shares(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(counts / total)  # an empty chunk: NaN, as NannyML's value for it


def js(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance, base 2, along the last axis."""
    p, q = _shares(reference), _shares(current)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> np.ndarray:
        safe = np.where(a > 0, a, 1.0) / np.where(m > 0, m, 1.0)
        return np.asarray(np.sum(np.where(a > 0, a * np.log(safe), 0.0), axis=-1))

    divergence = (kl(p) + kl(q)) / 2 / np.log(2)
    return _empty_is_nan(q, np.sqrt(np.clip(divergence, 0.0, 1.0)))


def _empty_is_nan(shares: np.ndarray, values: np.ndarray) -> np.ndarray:
    """NaN where a chunk had nothing to count (its shares are NaN)."""
    return np.asarray(np.where(np.isnan(shares).any(axis=-1), np.nan, values))


def hellinger(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Hellinger distance along the last axis."""
    p, q = _shares(reference), _shares(current)
    return _empty_is_nan(q, np.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=-1)) / np.sqrt(2))


def wasserstein(reference: np.ndarray, current: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Earth mover's distance on open-ended bins cut at ``edges`` (equal widths between them)."""
    widths = np.diff(np.asarray(edges, dtype=np.float64))  # the open-ended bins have no width
    p, q = _shares(reference), _shares(current)
    # the gap between the two CDFs at the right end of each bounded bin, times its width
    gap = np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1))[..., 1 : len(widths) + 1]
    return _empty_is_nan(q, np.sum(gap * widths, axis=-1))


def chi2(reference: np.ndarray, current: np.ndarray, alpha: float) -> tuple[float, float]:
    """(statistic, critical value at ``alpha``) of the 2 × k table; (nan, nan) for an empty chunk."""
    from scipy.stats import chi2 as chi2_dist
    from scipy.stats import chi2_contingency

    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if cur.sum() == 0 or ref.sum() == 0:
        return float("nan"), float("nan")
    used = (ref + cur) > 0
    table = np.stack([ref[used], cur[used]], axis=1)
    if table.shape[0] < 2:  # one category on both sides: nothing can differ
        return 0.0, float("inf")
    statistic, _, dof, _ = chi2_contingency(table)
    return float(statistic), float(chi2_dist.isf(alpha, dof))


def distance(
    method: Method, reference: np.ndarray, current: np.ndarray, edges: Sequence[float] | None = None
) -> np.ndarray:
    """``method``'s value along the last axis (chi2: its statistic; see :func:`chi2` for the bound)."""
    if method == "js":
        return js(reference, current)
    if method == "hellinger":
        return hellinger(reference, current)
    if method == "wasserstein":
        if edges is None:
            raise ValueError("wasserstein needs the bin edges")
        return wasserstein(reference, current, edges)
    current = np.asarray(current)
    if current.ndim == 1:
        return np.asarray(chi2(reference, current, 0.05)[0])
    return np.asarray([chi2(reference, row, 0.05)[0] for row in current])
