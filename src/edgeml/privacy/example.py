"""The input example MLflow keeps with a logged model: one row that is nobody's.

MLflow stores a model's input example (``input_example.json``, ``serving_input_example.json``)
with the model, and it is copied wherever the model goes (registry, serving images, exports).
Real rows there would be rows of people that ``edgeml data erase`` must then chase through every
copy, so training logs a synthesised row instead, in every mode: each category its most common
value (a value many rows share), numbers and times drawn in the range the data spans and moved off
any value in it, text and pii inputs masked (:func:`edgeml.bundle.pii.synthesise_golden`). The
signature (types only) is still inferred from real rows: it holds no values.
"""

from __future__ import annotations

import pandas as pd

from edgeml.bundle.pii import pii_inputs, synthesise_golden
from edgeml.spec.models import Spec
from edgeml.train.pipeline import InputLayout

__all__ = ["input_example"]


def input_example(spec: Spec, rows: pd.DataFrame, layout: InputLayout) -> pd.DataFrame:
    """One synthesised row of model inputs, typed as ``rows`` (see the module docstring); drawn
    numbers are off every value in ``rows`` (pass every split the model saw)."""
    record = {}
    for name in rows.columns:
        values = rows[name].dropna()
        record[name] = values.mode().iloc[0] if len(values) else None
    drawn = set(layout.numeric) | set(layout.time) | set(layout.text) | pii_inputs(spec, rows.columns)
    drawn &= set(rows.columns)
    columns = spec.schema_.columns
    bounds = {n: (columns[n].min, columns[n].max) for n in drawn if n in columns}
    (row,) = synthesise_golden([record], drawn, rows, bounds)
    out = pd.DataFrame([row], columns=list(rows.columns))
    typed = {n: rows[n].dtype for n in rows.columns if rows[n].dtype.kind in "fiub"}
    return out.astype(typed, errors="ignore")
