"""Rows that are nobody's: MLflow's input example (every mode) and golden samples (gdpr, hipaa).

MLflow stores a model's input example (``input_example.json``, ``serving_input_example.json``)
with the model, and it is copied wherever the model goes (registry, serving images, exports).
Real rows there would be rows of people that ``edgeml data erase`` must then chase through every
copy, so training logs a synthesised row instead, in every mode. A signed manifest's golden samples
go to every device and cannot be rewritten once published, so under gdpr and hipaa they are
synthesised the same way (:func:`synthesised_rows`) and no bundle ever holds a subject's row.

A synthesised row: floats and times drawn in the range the data spans and moved off any value in
it, text and pii inputs masked (:func:`edgeml.bundle.pii.synthesise_golden`); categories, integers
and booleans take values many rows share (held by at least ``min_bin_count`` rows, as hipaa's
telemetry cells; else the most common). The signature MLflow infers from real rows holds types only.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from edgeml.bundle.pii import pii_inputs, synthesise_golden
from edgeml.spec.models import Spec
from edgeml.train.pipeline import InputLayout

__all__ = ["input_example", "synthesised_rows"]


def _shared(values: pd.Series, k: int) -> list[Any]:
    """Values of a column held by at least ``k`` rows, most common first (else the most common)."""
    counts = values.dropna().value_counts(sort=True)
    if counts.empty:
        return [None]
    shared = counts[counts >= k].index.tolist()
    return shared or [counts.index[0]]


def synthesised_rows(
    spec: Spec, seen: pd.DataFrame, layout: InputLayout, n: int, seed: int = 0
) -> list[dict[str, Any]]:
    """``n`` synthesised rows of model inputs (see the module docstring); drawn values are off every
    value in ``seen`` (pass every row the model saw), shared values vary from row to row."""
    shared = {name: _shared(seen[name], spec.min_bin_count) for name in seen.columns}
    records = [{name: values[i % len(values)] for name, values in shared.items()} for i in range(n)]
    floats = {n for n in layout.numeric if n in seen and seen[n].dtype.kind == "f"}
    drawn = floats | set(layout.time) | set(layout.text) | pii_inputs(spec, seen.columns)
    drawn &= set(seen.columns)
    columns = spec.schema_.columns
    bounds = {n: (columns[n].min, columns[n].max) for n in drawn if n in columns}
    return synthesise_golden(records, drawn, seen, bounds, seed=seed)


def input_example(spec: Spec, rows: pd.DataFrame, layout: InputLayout) -> pd.DataFrame:
    """One synthesised row of model inputs, typed as ``rows``; drawn numbers are off every value in
    ``rows`` (pass every split the model saw)."""
    out = pd.DataFrame(synthesised_rows(spec, rows, layout, 1), columns=list(rows.columns))
    typed = {n: rows[n].dtype for n in rows.columns if rows[n].dtype.kind in "fiub"}
    return out.astype(typed, errors="ignore")
