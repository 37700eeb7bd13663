"""The model graph: row features and learned preprocessing inside one scikit-learn Pipeline.

Devices receive raw sensor values (plus window features their agent computes online):
row features, imputation, scaling, one-hot and TF-IDF all live in the pipeline, so the
export stage puts them inside the exported graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from edgeml.features.expr import parse_expression
from edgeml.spec.models import Spec

__all__ = ["TOKEN_PATTERN", "InputLayout", "RowFeatures", "build_pipeline", "input_layout"]

#: Words of text inputs: runs of two or more ASCII letters or digits, after lowercasing. ASCII,
#: because the exported graph lowercases in the C locale (the one locale every host has, ASCII
#: case only): scikit-learn's Unicode lowercasing then yields the same tokens as the device.
TOKEN_PATTERN = r"[a-z0-9]{2,}"  # noqa: S105 - a regular expression, not a secret


@dataclass(frozen=True)
class InputLayout:
    """Which model inputs are which. Timestamps enter as epoch seconds (float)."""

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    time: list[str] = field(default_factory=list)  # only feed row features (hour(ts), ...)
    row_features: list[tuple[str, str]] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.text, *self.time]


def input_layout(spec: Spec) -> InputLayout:
    """Model inputs from the spec: raw columns by type, window features, row-feature inputs."""
    cols = spec.schema_.columns
    numeric, categorical, text = [], [], []
    for name in spec.input_columns():
        kind = cols[name].type
        if kind in ("float", "int", "bool"):
            numeric.append(name)
        elif kind == "text":
            text.append(name)
        elif kind in ("category", "string"):
            categorical.append(name)
    numeric += [w.name for w in spec.features.window]
    time: list[str] = []
    for feature in spec.features.row:
        for name in sorted(parse_expression(feature.expr).columns):
            if name in cols and name not in numeric and name not in time and cols[name].type == "timestamp":
                time.append(name)
            elif name in cols and name not in numeric and cols[name].type in ("float", "int", "bool"):
                numeric.append(name)  # a raw column used only by a row feature is still an input
    return InputLayout(numeric, categorical, text, time, [(f.name, f.expr) for f in spec.features.row])


class RowFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Compute row features (edgeml expressions) from the columns they read.

    Input: the columns named by ``columns``, in order (a DataFrame or a 2-D array;
    timestamps as epoch seconds). Output: one float column per feature. The export stage
    turns each expression into ONNX operators, so devices compute features in the graph.
    """

    def __init__(
        self,
        columns: Sequence[str] = (),
        features: Sequence[tuple[str, str]] = (),
        time_columns: Sequence[str] = (),
    ) -> None:
        self.columns = columns
        self.features = features
        self.time_columns = time_columns

    def fit(self, X: Any, y: Any = None) -> RowFeatures:
        return self

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([name for name, _ in self.features], dtype=object)

    def transform(self, X: Any) -> np.ndarray:
        matrix = np.asarray(X, dtype=np.float64)
        known: dict[str, np.ndarray] = {}
        for i, name in enumerate(self.columns):
            values = matrix[:, i]
            known[name] = (values * 1000).astype("datetime64[ms]") if name in self.time_columns else values
        out = []
        for name, source in self.features:
            expr = parse_expression(source)
            with np.errstate(all="ignore"):
                values = np.broadcast_to(expr.evaluate({c: known[c] for c in expr.columns}), (len(matrix),))
            known[name] = np.asarray(values, dtype=np.float64)
            out.append(known[name])
        return np.column_stack(out)


def build_pipeline(
    spec: Spec, layout: InputLayout, estimator: Any, params: dict[str, Any] | None = None
) -> Any:
    """(impute, scale) numeric + (compute, impute, scale) row features + one-hot categorical
    + TF-IDF text -> estimator, as one ColumnTransformer: each branch converts to ONNX alone."""
    from sklearn.base import clone
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

    params = params or {}
    scalers = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if spec.features.scaling in scalers:
        numeric_steps.append(("scale", scalers[spec.features.scaling]()))
    blocks: list[tuple[str, Any, Any]] = []
    if layout.numeric:
        blocks.append(("numeric", Pipeline(numeric_steps), list(layout.numeric)))
    if layout.row_features:
        # Row features read raw columns (timestamps included) and are then imputed and scaled.
        reads = sorted(
            {
                c
                for _, e in layout.row_features
                for c in parse_expression(e).columns
                if c in layout.numeric or c in layout.time
            }
        )
        reads = [c for c in layout.numeric + layout.time if c in reads]
        rows = RowFeatures(reads, layout.row_features, layout.time)
        blocks.append(
            ("row_features", Pipeline([("compute", rows), *clone(Pipeline(numeric_steps)).steps]), reads)
        )
    if layout.categorical and spec.features.one_hot == "auto":
        blocks.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                layout.categorical,
            )
        )
    for name in layout.text:
        blocks.append(
            (
                f"text_{name}",
                TfidfVectorizer(
                    token_pattern=TOKEN_PATTERN,
                    ngram_range=(1, int(params.get("ngram_max", 1))),
                    min_df=int(params.get("min_df", 1)),
                    max_features=params.get("max_features"),
                ),
                name,
            )
        )
    steps: list[tuple[str, Any]] = [
        ("preprocess", ColumnTransformer(blocks, remainder="drop", sparse_threshold=0.0)),
    ]
    steps.append(("model", estimator))
    return Pipeline(steps)
