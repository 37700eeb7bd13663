"""Minimum-count suppression (hipaa): no telemetry count says "fewer than k rows were here".

A window's histogram bin (or category, or predicted label) that counted 1..k-1 rows could
point at one person — the one patient over 90 this hour. Before a batch leaves the device,
:func:`suppress` merges such cells with their neighbours until every merged group holds 0 or
at least k rows, then spreads each group's total back over its cells in the proportions of the
reference (the signed holdout counts every device already holds). The wire shape does not
change, so the central node pools and judges drift as before:

- a shift *between* groups is kept exactly (each group's total is the device's own count);
- a shift *within* a group is invisible — the group looks like the reference there, which is
  the information suppression removes. Cells of k or more that stand alone are sent as counted.

Numeric bins merge with adjacent bins (they are ordered); categories and labels merge the small
ones together, and with the smallest large one when the small ones still add up to under k.
A window of fewer than k rows becomes one group: only its total is sent, as ``rows`` is anyway.
Missing and out-of-range counts are sent as counted: they say nothing about a value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edgeml.bundle.manifest import CategoryCounts, Histogram, Reference
from edgeml.telemetry.schema import FeatureTelemetry, TelemetryBatch

__all__ = ["merge_categories", "merge_ordered", "spread", "suppress"]


def merge_ordered(counts: Sequence[int], k: int) -> list[list[int]]:
    """Adjacent bins grouped so that each group's total is 0 or at least ``k``."""
    groups: list[list[int]] = []
    run: list[int] = []
    total = 0
    for i, c in enumerate(counts):
        run.append(i)
        total += int(c)
        if total == 0 or total >= k:
            groups.append(run)
            run, total = [], 0
    if total:  # a small tail joins the groups back to the last one that counted rows
        while groups:
            last = groups.pop()
            run = last + run
            if sum(int(counts[i]) for i in last):
                break
    if run:
        groups.append(run)
    return groups


def merge_categories(counts: Sequence[int], k: int) -> list[list[int]]:
    """Unordered cells grouped: every small one (1..k-1) into one group, topped up to ``k``."""
    small = [i for i, c in enumerate(counts) if 0 < c < k]
    if not small:
        return [[i] for i in range(len(counts))]
    alone = [i for i in range(len(counts)) if i not in small]
    if sum(int(counts[i]) for i in small) < k:
        large = [i for i in alone if counts[i] >= k]
        if large:
            top_up = min(large, key=lambda i: counts[i])
            small.append(top_up)
            alone.remove(top_up)
    return [sorted(small), *([i] for i in alone)]


def spread(counts: Sequence[int], groups: list[list[int]], reference: Sequence[float]) -> list[int]:
    """Each group's total over its cells in ``reference``'s proportions (evenly where it has none).

    Largest remainders keep the integers adding up to the group's total.
    """
    out = np.asarray(counts, dtype=np.int64).copy()
    ref = np.asarray(reference, dtype=np.float64)
    for group in groups:
        if len(group) == 1:
            continue
        idx = np.asarray(group)
        total = int(out[idx].sum())
        weights = ref[idx] if ref.size and ref[idx].sum() > 0 else np.ones(len(idx))
        exact = total * weights / weights.sum()
        share = np.floor(exact).astype(np.int64)
        rest = total - int(share.sum())
        share[np.argsort(-(exact - share), kind="stable")[:rest]] += 1
        out[idx] = share
    return [int(c) for c in out]


def _cells(counts: Sequence[int], reference: Sequence[float], k: int, *, ordered: bool) -> list[int]:
    if len(reference) != len(counts):  # no usable reference: spread evenly
        reference = []
    groups = merge_ordered(counts, k) if ordered else merge_categories(counts, k)
    return spread(counts, groups, reference)


def _feature(f: FeatureTelemetry, ref: Histogram | CategoryCounts | None, k: int) -> FeatureTelemetry:
    if not f.counts:
        return f
    weights = ref.counts if ref is not None else []
    counts = _cells(f.counts, weights, k, ordered=f.edges is not None)
    return f.model_copy(update={"counts": counts})


def _predictions(seen: Mapping[str, int], reference: Mapping[str, int], k: int) -> dict[str, int]:
    labels = sorted(set(seen) | set(reference))
    counts = [seen.get(lb, 0) for lb in labels]
    counts = _cells(counts, [reference.get(lb, 0) for lb in labels], k, ordered=False)
    return {lb: c for lb, c in zip(labels, counts, strict=True) if c}


def suppress(batch: TelemetryBatch, reference: Reference, k: int) -> TelemetryBatch:
    """``batch`` with every input histogram, score histogram and predicted-label count merged
    so that no cell holds 1..k-1 rows (see the module docstring)."""
    features = {name: _feature(f, reference.features.get(name), k) for name, f in batch.features.items()}
    scores = {}
    for key, h in batch.scores.items():
        ref = reference.scores.get(key)
        scores[key] = h.model_copy(
            update={"counts": _cells(h.counts, ref.counts if ref is not None else [], k, ordered=True)}
        )
    predictions = _predictions(batch.predictions, reference.predictions, k)
    return batch.model_copy(update={"features": features, "scores": scores, "predictions": predictions})
