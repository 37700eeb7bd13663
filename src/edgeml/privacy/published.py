"""Erasure and published bundles: the golden samples of signed manifests.

A signed manifest goes to every device and is not rewritten: a changed one is a new bundle, and the
devices holding the old one keep it. So the golden samples of a bundle built under gdpr or hipaa are
synthesised (:mod:`edgeml.privacy.example`): no published bundle holds a subject's row, and nothing
is left to erase there. Under none and sox they are holdout rows (their pii inputs synthesised), so
an erasure looks through the dataset's published manifests and names those whose golden rows hold an
erased row — matched as MLflow's kept holdout rows are (:mod:`edgeml.privacy.kept`) — for the
operator to replace (publish a version built since, roll back) and delete; it changes none of them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pandas as pd

from edgeml.privacy.kept import column_match, inputs_match

if TYPE_CHECKING:
    from edgeml.privacy.where import Where
    from edgeml.store.base import ObjectStore
    from edgeml.train.pipeline import InputLayout

__all__ = ["bundles_holding"]


def bundles_holding(
    store: ObjectStore,
    model: str,
    where: Where,
    layout: InputLayout | None,
    erased: pd.DataFrame | None,
) -> dict[str, int]:
    """Published manifests of ``model`` whose golden rows hold ``where``'s value in its column, or
    equal in every input (``layout``) a feature row the erasure took out (``erased``): key -> rows."""
    found = {}
    for key in store.keys(f"bundles/{model}/"):
        if not key.endswith("/manifest.json"):
            continue
        try:
            rows = pd.DataFrame(json.loads(store.get(key))["golden"]["inputs"])
        except (ValueError, KeyError, TypeError):
            continue  # not a manifest this release reads: the bundle verifier says why
        if rows.empty:
            continue
        hit = column_match(rows, where)
        if layout is not None and erased is not None and not erased.empty:
            hit |= inputs_match(rows, layout, erased)
        if hit.any():
            found[key] = int(hit.sum())
    return found
