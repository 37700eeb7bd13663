"""The model graph: row features computed inside the pipeline from raw inputs, inputs sorted by kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from edgeml.features.build import apply_row_features
from edgeml.spec.models import RowFeature
from edgeml.train.pipeline import InputLayout, RowFeatures, build_pipeline, input_layout

from .helpers import example_data, faults_spec, spec_from_dict

TIMES = pd.to_datetime(
    ["2026-01-05 00:30:00", "2026-01-05 13:00:00", "2026-01-05 12:59:59.999", "2026-01-10 23:59:59"],
    utc=True,
    format="ISO8601",
)


def epoch_seconds(times: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray((times - pd.Timestamp(0, tz="UTC")).total_seconds(), dtype=np.float64)


def raw_inputs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": epoch_seconds(TIMES),
            "power_kw": [10.0, 12.0, 0.0, 8.0],
            "rpm": [1500.0, 1600.0, 0.0, 1400.0],
        }
    )


FEATURES = [
    ("hour_of_day", "hour(ts)"),
    ("weekend", "is_weekend(ts)"),
    ("specific_power", "power_kw / maximum(rpm, 1) * 1000"),
    ("twice_hour", "hour_of_day * 2"),  # a row feature may use the ones before it
]


def _features(X: pd.DataFrame, features: list[tuple[str, str]], time: list[str]) -> pd.DataFrame:
    columns = list(X.columns)
    out = RowFeatures(columns, features, time).fit_transform(X)
    return pd.DataFrame(out, columns=[name for name, _ in features])


def test_row_features_from_epoch_seconds() -> None:
    X = raw_inputs()
    out = _features(X, FEATURES, ["ts"])
    assert list(out.columns) == ["hour_of_day", "weekend", "specific_power", "twice_hour"]
    assert out["hour_of_day"].tolist() == [0, 13, 12, 23]
    assert out["weekend"].tolist() == [0, 0, 0, 1]  # 2026-01-10 is a Saturday
    assert out["specific_power"].tolist() == pytest.approx([10 / 1500 * 1000, 12 / 1600 * 1000, 0.0, 8 / 1.4])
    assert out["twice_hour"].tolist() == [0, 26, 24, 46]
    assert "ts" in X.columns  # the input frame is left alone


def test_row_features_read_columns_by_position_from_arrays() -> None:
    X = raw_inputs()
    from_frame = RowFeatures(list(X.columns), FEATURES, ["ts"]).transform(X)
    from_array = RowFeatures(list(X.columns), FEATURES, ["ts"]).transform(X.to_numpy())
    assert np.array_equal(from_frame, from_array)


def test_row_features_match_the_batch_feature_build() -> None:
    """The pipeline (epoch seconds) and build_features (Arrow timestamps) compute the same values."""
    table = pa.table(
        {
            "ts": pa.array(TIMES.to_pydatetime(), pa.timestamp("ms", tz="UTC")),
            "power_kw": raw_inputs()["power_kw"],
            "rpm": raw_inputs()["rpm"],
        }
    )
    batch = apply_row_features(table, [RowFeature(name=n, expr=e) for n, e in FEATURES])
    online = _features(raw_inputs(), FEATURES, ["ts"])
    for name, _ in FEATURES:
        assert np.asarray(online[name], dtype=np.float64) == pytest.approx(batch[name].to_numpy()), name


def test_row_features_without_timestamps() -> None:
    X = raw_inputs().drop(columns=["ts"])
    out = _features(X, [("log_rpm", "log1p(rpm)")], [])
    assert list(out.columns) == ["log_rpm"]
    assert out["log_rpm"].tolist() == pytest.approx(np.log1p(X["rpm"]).tolist())


# ------------------------------------------------------------------------ input layout


def test_input_layout_of_the_fault_example(tmp_path: Path) -> None:
    spec = spec_from_dict(example_data("pump-faults"), tmp_path)
    layout = input_layout(spec)
    # never the target, timestamp, entity, an excluded column (msg_id, is_anomaly) or a pii one (operator)
    assert layout.numeric == [
        "temperature",
        "vibration",
        "pressure",
        "rpm",
        "power_kw",
        "vibration_mean_30",
        "vibration_std_30",
        "temperature_max_10m",
        "pressure_lag_6",
    ]
    assert layout.categorical == []
    assert layout.text == []
    assert layout.time == ["ts"]  # only because hour(ts) needs it
    assert layout.row_features == [
        ("specific_power", "power_kw / maximum(rpm, 1) * 1000"),
        ("hour_of_day", "hour(ts)"),
    ]
    assert layout.columns == [*layout.numeric, "ts"]


def mixed_spec(tmp_path: Path, **features: Any) -> Any:
    return spec_from_dict(
        {
            "version": 1,
            "name": "mixed",
            "sources": [{"name": "s", "kind": "file", "path": "x.csv"}],
            "schema": {
                "timestamp": "ts",
                "entity": "machine",
                "columns": {
                    "ts": {"type": "timestamp"},
                    "installed": {"type": "timestamp"},
                    "machine": {"type": "string"},
                    "temp": {"type": "float"},
                    "starts": {"type": "int"},
                    "running": {"type": "bool"},
                    "site": {"type": "category", "values": ["a", "b"]},
                    "model": {"type": "string"},
                    "note": {"type": "text"},
                    "rpm": {"type": "float"},
                    "badge": {"type": "string", "pii": True},
                    "label": {"type": "category"},
                },
            },
            "features": {
                "exclude": ["rpm"],
                "row": [
                    {"name": "log_rpm", "expr": "log1p(rpm)"},
                    {"name": "hour_of_day", "expr": "hour(ts)"},
                    {"name": "month_installed", "expr": "month(installed)"},
                    {"name": "hot", "expr": "temp * 2"},
                ],
                **features,
            },
            "target": "label",
            "task": "text-classification",
            "search": {"families": ["tfidf_linear"]},
        },
        tmp_path,
    )


def test_input_layout_sorts_columns_by_kind(tmp_path: Path) -> None:
    layout = input_layout(mixed_spec(tmp_path))
    assert layout.numeric == ["temp", "starts", "running", "rpm"]  # rpm: excluded, but a row feature reads it
    assert layout.categorical == ["site", "model"]
    assert layout.text == ["note"]
    assert layout.time == ["ts", "installed"]
    assert [name for name, _ in layout.row_features] == ["log_rpm", "hour_of_day", "month_installed", "hot"]
    assert "machine" not in layout.columns
    assert "badge" not in layout.columns
    assert "label" not in layout.columns


def test_input_layout_leaves_out_timestamps_no_row_feature_reads(tmp_path: Path) -> None:
    spec = spec_from_dict(faults_spec() | {"features": {"exclude": ["msg_id", "is_anomaly"]}}, tmp_path)
    layout = input_layout(spec)
    assert layout.time == []
    assert layout.row_features == []
    assert layout.numeric == ["temperature", "vibration", "pressure", "rpm", "power_kw"]


# ---------------------------------------------------------------------------- pipeline


def mixed_frame(n: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    times = pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(rng.integers(0, 86_400 * 7, n), unit="s")
    label = rng.choice(["ok", "bad"], n)
    X = pd.DataFrame(
        {
            "temp": rng.normal(50, 5, n) + (label == "bad") * 10,
            "starts": rng.integers(0, 10, n).astype(np.float64),
            "running": rng.integers(0, 2, n).astype(np.float64),
            "rpm": rng.normal(1500, 50, n),
            "site": rng.choice(["a", "b", None], n),
            "model": rng.choice(["x1", "x2"], n),
            "note": np.where(label == "bad", "loud grinding noise", "all fine"),
            "ts": epoch_seconds(pd.DatetimeIndex(times)),
            "installed": epoch_seconds(pd.DatetimeIndex(times - pd.Timedelta(days=400))),
        }
    )
    X.loc[3, "temp"] = np.nan
    return X, label


def test_pipeline_computes_row_features_from_raw_inputs(tmp_path: Path) -> None:
    spec = mixed_spec(tmp_path, scaling="none")
    layout = input_layout(spec)
    X, y = mixed_frame()
    assert list(X.columns) == layout.columns
    pipeline = build_pipeline(spec, layout, DecisionTreeClassifier(random_state=0)).fit(X, y)
    assert list(pipeline.named_steps) == ["preprocess", "model"]  # one ColumnTransformer: one ONNX graph
    preprocess = pipeline.named_steps["preprocess"]
    names = list(preprocess.get_feature_names_out())
    assert "row_features__hour_of_day" in names
    assert "row_features__log_rpm" in names
    assert not any(n.endswith("__ts") or n.endswith("__installed") for n in names)  # timestamps dropped
    assert {"categorical__site_a", "categorical__site_b", "categorical__model_x1"} <= set(names)
    assert any(n.startswith("text_note__") for n in names)
    matrix = pipeline[:-1].transform(X)
    hours = pd.DatetimeIndex(pd.to_datetime(X["ts"], unit="s", utc=True)).hour.to_numpy()
    assert matrix[:, names.index("row_features__hour_of_day")] == pytest.approx(hours)  # no scaling: raw
    assert matrix[:, names.index("row_features__month_installed")] == pytest.approx(
        pd.DatetimeIndex(pd.to_datetime(X["installed"], unit="s", utc=True)).month.to_numpy()
    )
    assert not np.isnan(matrix).any()  # the missing temperature is imputed
    assert set(pipeline.predict(X)) <= {"ok", "bad"}


def test_pipeline_scales_numeric_inputs(tmp_path: Path) -> None:
    X, y = mixed_frame()
    layout = input_layout(mixed_spec(tmp_path))
    pipeline = build_pipeline(mixed_spec(tmp_path), layout, LogisticRegression(max_iter=500)).fit(X, y)
    names = list(pipeline.named_steps["preprocess"].get_feature_names_out())
    numeric = [i for i, n in enumerate(names) if n.startswith("numeric__")]
    matrix = pipeline[:-1].transform(X)[:, numeric]
    assert matrix.mean(axis=0) == pytest.approx(0, abs=1e-9)


def test_pipeline_text_block_takes_ngram_and_min_df_params(tmp_path: Path) -> None:
    spec = mixed_spec(tmp_path)
    pipeline = build_pipeline(spec, input_layout(spec), LogisticRegression(), {"ngram_max": 2, "min_df": 3})
    tfidf = pipeline.named_steps["preprocess"].transformers[-1][1]
    assert tfidf.ngram_range == (1, 2)
    assert tfidf.min_df == 3


def test_pipeline_without_row_features_has_no_row_step(tmp_path: Path) -> None:
    spec = spec_from_dict(faults_spec() | {"features": {"exclude": ["msg_id", "is_anomaly"]}}, tmp_path)
    pipeline = build_pipeline(spec, input_layout(spec), LogisticRegression())
    assert list(pipeline.named_steps) == ["preprocess", "model"]
    empty = build_pipeline(spec, InputLayout(numeric=["temperature"]), LogisticRegression())
    assert empty.named_steps["preprocess"].transformers[0][2] == ["temperature"]
