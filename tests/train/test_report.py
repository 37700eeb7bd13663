"""Evaluation artifacts per task: the plots and JSON a data scientist expects, written without MLflow."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeml.train.metrics import evaluate
from edgeml.train.report import write_evaluation
from edgeml.train.search import fit_trial

from .helpers import TaskData

EXPECTED = {
    "classification": {
        "metrics.json",
        "classification_report.json",
        "confusion_matrix.png",
        "roc_curve.png",
        "pr_curve.png",
        "feature_importance.png",
        "feature_importance.json",
    },
    "text-classification": {
        "metrics.json",
        "classification_report.json",
        "confusion_matrix.png",
        "roc_curve.png",
        "pr_curve.png",
    },
    "regression": {
        "metrics.json",
        "predicted_vs_actual.png",
        "residuals.json",
        "feature_importance.png",
        "feature_importance.json",
    },
    "clustering": {"metrics.json", "cluster_sizes.png", "clusters.json"},
    "anomaly": {"metrics.json", "score_histogram.png", "threshold.json"},
}
CONFIG: dict[str, dict[str, Any]] = {
    "classification": {"family": "random_forest", "random_forest.n_estimators": 10},
    "text-classification": {"family": "tfidf_linear"},
    "regression": {"family": "linear"},
    "clustering": {"family": "kmeans", "kmeans.n_clusters": 3},
    "anomaly": {"family": "isolation_forest", "isolation_forest.n_estimators": 40},
}


@pytest.mark.parametrize("task", list(EXPECTED))
def test_write_evaluation_per_task(task_data: Callable[[str], TaskData], task: str, tmp_path: Path) -> None:
    td = task_data(task)
    data = td.data
    model = fit_trial(td.spec, data, CONFIG[task])
    metrics = evaluate(td.spec.task, model, data.X_hold, data.y_hold)
    files = write_evaluation(td.spec.task, model, data.X_hold, data.y_hold, metrics, tmp_path / "eval")
    assert {f.name for f in files} == EXPECTED[task]
    for f in files:
        assert f.stat().st_size > 0
        if f.suffix == ".png":
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == pytest.approx(metrics)
    out = tmp_path / "eval"
    if task == "classification":
        report = json.loads((out / "classification_report.json").read_text())
        assert set(data.labels or []) <= set(report)
        importance = json.loads((out / "feature_importance.json").read_text())
        assert set(importance) == set(data.X_hold.columns)  # raw inputs, row features computed inside
    elif task == "regression":
        residuals = json.loads((out / "residuals.json").read_text())
        assert set(residuals) == {"mean", "std", "p05", "p95"}
    elif task == "anomaly":
        threshold = json.loads((out / "threshold.json").read_text())
        assert threshold["threshold"] == pytest.approx(model[-1].threshold_)
        assert 0 <= threshold["anomaly_rate"] <= 1
    elif task == "clustering":
        clusters = json.loads((out / "clusters.json").read_text())
        assert sum(clusters["sizes"].values()) == len(data.X_hold)
        assert clusters["silhouette"] == pytest.approx(metrics["silhouette"])
