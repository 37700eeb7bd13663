"""edgeml's skl2onnx converters: the exported graph computes what the pipeline computes."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType
from sklearn.linear_model import LogisticRegression, Ridge

from edgeml.export.converters import register
from edgeml.features.expr import parse_expression
from edgeml.spec import parse_spec
from edgeml.train.mlp import MLPClassifierTorch, MLPRegressorTorch
from edgeml.train.pipeline import RowFeatures, build_pipeline, input_layout

SPEC = """
name: conv
sources: [{name: f, kind: file, path: x.csv}]
schema:
  timestamp: ts
  columns:
    ts: {type: timestamp}
    temperature: {type: float}
    rpm: {type: float}
    state: {type: category}
    level: {type: float}
features:
  row:
    - {name: hour_of_day, expr: "hour(ts)"}
    - {name: weekday, expr: "day_of_week(ts)"}
    - {name: weekend, expr: "is_weekend(ts)"}
    - {name: month_no, expr: "month(ts)"}
    - {name: band, expr: "bucketize(temperature, [-10, 0, 35.5, 60])"}
    - {name: load, expr: "clip(rpm / 3000, 0, 1) ** 2 + log1p(abs(temperature)) - sqrt(rpm) % 7"}
    - {name: mixed, expr: "maximum(load, 0.25) * minimum(hour_of_day, 12) - exp(-rpm / 1000)"}
target: TARGET
task: TASK
search: {families: [FAMILY], trials: 1}
"""


def _frame(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = rng.integers(0, 4_102_444_800, n).astype(np.float64)  # 1970 .. 2100
    temperature = rng.normal(30, 25, n)
    temperature[rng.random(n) < 0.05] = np.nan  # missing readings are imputed in the graph
    rpm = rng.uniform(0, 4000, n)
    X = pd.DataFrame({"temperature": temperature, "rpm": rpm, "ts": ts})
    label = np.where(np.nan_to_num(temperature) + rpm / 100 > 60, "hot", "ok")
    value = np.nan_to_num(temperature) * 0.3 + rpm / 500 + rng.normal(0, 1, n)
    return X, label, value


def _onnx(pipeline: Any, X: pd.DataFrame, time: list[str]) -> ort.InferenceSession:
    register()
    types = [(c, DoubleTensorType([None, 1])) for c in X.columns]  # as `edgeml export` declares them
    options = {id(pipeline[-1]): {"zipmap": False}} if hasattr(pipeline[-1], "classes_") else None
    model = convert_sklearn(
        pipeline, initial_types=types, options=options, target_opset={"": 17, "ai.onnx.ml": 3}
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _feeds(X: pd.DataFrame, time: list[str]) -> dict[str, np.ndarray]:
    return {c: X[[c]].to_numpy(dtype=np.float64) for c in X.columns}


def _pipeline(task: str, estimator: Any, tmp_path: Any) -> Any:
    target = "label" if task == "classification" else "value"
    text = SPEC.replace("TARGET", target).replace("TASK", task)
    text = text.replace("FAMILY", "logistic" if task == "classification" else "linear")
    text = text.replace("    state: {type: category}\n", "").replace("    level: {type: float}\n", "")
    kind = "category" if task == "classification" else "float"
    text = text.replace(
        "    ts: {type: timestamp}\n", f"    ts: {{type: timestamp}}\n    {target}: {{type: {kind}}}\n"
    )
    spec = parse_spec(text)
    layout = input_layout(spec)
    return build_pipeline(spec, layout, estimator), layout


@pytest.mark.parametrize("estimator", [LogisticRegression(max_iter=2000), MLPClassifierTorch(epochs=5)])
def test_classifier_pipeline_parity(estimator: Any, tmp_path: Any) -> None:
    X, label, _ = _frame()
    pipeline, layout = _pipeline("classification", estimator, tmp_path)
    X = X[layout.columns]
    pipeline.fit(X, label)
    labels, proba = _onnx(pipeline, X, layout.time).run(None, _feeds(X, layout.time))
    assert np.abs(proba - pipeline.predict_proba(X)).max() <= 1e-4
    assert np.mean(labels == pipeline.predict(X)) >= 0.999


@pytest.mark.parametrize("estimator", [Ridge(), MLPRegressorTorch(epochs=5)])
def test_regressor_pipeline_parity(estimator: Any, tmp_path: Any) -> None:
    X, _, value = _frame()
    pipeline, layout = _pipeline("regression", estimator, tmp_path)
    X = X[layout.columns]
    pipeline.fit(X, value)
    (out,) = _onnx(pipeline, X, layout.time).run(None, _feeds(X, layout.time))
    native = pipeline.predict(X)
    assert np.abs(out.ravel() - native).max() <= 1e-4 * max(1.0, np.abs(native).max())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=-2_208_988_800, max_value=7_258_118_400), min_size=1, max_size=40))
def test_time_parts_are_exact_for_any_date_1900_to_2200(seconds: list[int]) -> None:
    features = [("h", "hour(ts)"), ("d", "day_of_week(ts)"), ("w", "is_weekend(ts)"), ("m", "month(ts)")]
    rows = RowFeatures(["ts"], features, ["ts"])
    from sklearn.pipeline import Pipeline

    X = pd.DataFrame({"ts": np.asarray(seconds, dtype=np.float64)})
    pipeline = Pipeline([("rows", rows)])
    (out,) = _onnx(pipeline, X, ["ts"]).run(None, _feeds(X, ["ts"]))
    expected = np.column_stack(
        [
            parse_expression(e).evaluate({"ts": X["ts"].to_numpy().astype("datetime64[s]")})
            for _, e in features
        ]
    )
    assert np.array_equal(out, expected.astype(np.float32))
