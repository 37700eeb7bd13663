"""Build the feature table of a validated snapshot: window features, then row features."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from edgeml.features.expr import parse_expression
from edgeml.features.window import compute_batch
from edgeml.ingest.lake import Part, _put_part
from edgeml.settings import Settings
from edgeml.spec.models import RowFeature, Spec
from edgeml.store import store_from_settings
from edgeml.validate.run import load_validated

__all__ = ["FeatureReport", "apply_row_features", "build_features"]


@dataclass
class FeatureReport:
    dataset: str
    snapshot: str
    rows: int
    part: Part
    stats: dict[str, dict[str, float]]


def _as_array(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_timestamp(column.type):
        return np.asarray(column.cast(pa.timestamp("ms")).to_numpy(), dtype="datetime64[ms]")
    return np.asarray(column.cast(pa.float64()).fill_null(float("nan")).to_numpy(), dtype=np.float64)


def apply_row_features(table: pa.Table, features: Sequence[RowFeature]) -> pa.Table:
    """Append row features in order; each may use columns and the features before it."""
    for feature in features:
        expr = parse_expression(feature.expr)
        frame = {name: _as_array(table[name]) for name in expr.columns}
        with np.errstate(all="ignore"):  # log(0) and x/0 give -inf/NaN, as ONNX does
            values = np.broadcast_to(expr.evaluate(frame), (table.num_rows,))
        table = table.append_column(feature.name, pa.array(values, pa.float64()))
    return table


def _stats(table: pa.Table, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for name in names:
        values = _as_array(table[name])
        finite = values[np.isfinite(values)]
        out[name] = {
            "missing": float(np.mean(~np.isfinite(values))) if len(values) else 0.0,
            "mean": float(finite.mean()) if len(finite) else float("nan"),
            "std": float(finite.std()) if len(finite) else float("nan"),
            "min": float(finite.min()) if len(finite) else float("nan"),
            "max": float(finite.max()) if len(finite) else float("nan"),
        }
    return out


def build_features(spec: Spec, settings: Settings, snapshot_id: str | None = None) -> FeatureReport:
    """Compute features for a validated snapshot and store them next to it."""
    store = store_from_settings(settings)
    snapshot, table = load_validated(store, spec, snapshot_id)
    table = compute_batch(
        table, spec.features.window, entity=spec.schema_.entity, timestamp=spec.schema_.timestamp
    )
    table = apply_row_features(table, spec.features.row)
    part = _put_part(store, f"features/{spec.name}/{snapshot.id}", table, "features", "")
    names = [f.name for f in spec.features.window] + [f.name for f in spec.features.row]
    report = FeatureReport(spec.name, snapshot.id, table.num_rows, part, _stats(table, names))
    # an undefined statistic (a feature missing everywhere) is null: NaN is not JSON
    stats = {
        name: {k: v if math.isfinite(v) else None for k, v in st.items()} for name, st in report.stats.items()
    }
    doc = {
        "dataset": spec.name,
        "snapshot": snapshot.id,
        "rows": table.num_rows,
        "part": vars(part),
        "features": names,
        "stats": stats,
    }
    store.put(
        f"catalog/{spec.name}/features/{snapshot.id}.json",
        json.dumps(doc, indent=2, allow_nan=False).encode(),
        content_type="application/json",
    )
    return report
