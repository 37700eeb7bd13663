"""Evaluation artifacts a data scientist expects, as PNG plots plus JSON, per task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgeml.spec.models import Task
from edgeml.train.metrics import scores

__all__ = ["write_evaluation"]


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no screen on servers and devices
    import matplotlib.pyplot as plt

    return plt


def _importance(model: Any, X: pd.DataFrame, y: Any, task: Task, out: Path) -> None:
    from sklearn.inspection import permutation_importance

    if y is None or task in ("clustering", "anomaly"):
        return
    sample = X.sample(n=min(len(X), 1500), random_state=0)
    ys = np.asarray(y)[sample.index.to_numpy()]
    scoring = "f1_macro" if task != "regression" else "neg_root_mean_squared_error"
    result = permutation_importance(model, sample, ys, scoring=scoring, n_repeats=3, random_state=0, n_jobs=1)
    order = np.argsort(result.importances_mean)
    data = {
        X.columns[i]: {"mean": float(result.importances_mean[i]), "std": float(result.importances_std[i])}
        for i in order[::-1]
    }
    (out / "feature_importance.json").write_text(json.dumps(data, indent=2))
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(order) + 1.5))
    ax.barh([X.columns[i] for i in order], result.importances_mean[order], xerr=result.importances_std[order])
    ax.set_xlabel(f"drop in {scoring} when shuffled (permutation importance, holdout)")
    fig.tight_layout()
    fig.savefig(out / "feature_importance.png", dpi=110)
    plt.close(fig)


def _classification(model: Any, X: pd.DataFrame, y: Any, out: Path) -> None:
    from sklearn.metrics import (
        ConfusionMatrixDisplay,
        PrecisionRecallDisplay,
        RocCurveDisplay,
        classification_report,
    )

    plt = _figure()
    pred = model.predict(X)
    labels = list(model.classes_)
    report = classification_report(y, pred, labels=labels, output_dict=True, zero_division=0)
    (out / "classification_report.json").write_text(json.dumps(report, indent=2))
    fig, ax = plt.subplots(figsize=(6, 5))
    ConfusionMatrixDisplay.from_predictions(y, pred, labels=labels, ax=ax, xticks_rotation=45, colorbar=False)
    ax.set_title("confusion matrix (holdout)")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=110)
    plt.close(fig)
    if not hasattr(model, "predict_proba"):
        return
    proba = model.predict_proba(X)
    for name, display in (("roc_curve", RocCurveDisplay), ("pr_curve", PrecisionRecallDisplay)):
        fig, ax = plt.subplots(figsize=(6, 5))
        for i, label in enumerate(model.classes_):
            truth = np.asarray(y) == label
            if truth.any() and not truth.all():
                display.from_predictions(truth, proba[:, i], name=str(label), ax=ax)
        ax.set_title(
            f"{'ROC' if name == 'roc_curve' else 'precision-recall'} per class, one vs rest (holdout)"
        )
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)


def _regression(model: Any, X: pd.DataFrame, y: Any, out: Path) -> None:
    plt = _figure()
    pred = model.predict(X)
    residuals = np.asarray(y) - pred
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.scatter(y, pred, s=4, alpha=0.4)
    low, high = float(np.min(y)), float(np.max(y))
    left.plot([low, high], [low, high], color="black", linewidth=1)
    left.set(xlabel="actual", ylabel="predicted", title="predicted vs actual (holdout)")
    right.hist(residuals, bins=50)
    right.set(xlabel="actual − predicted", title="residuals (holdout)")
    fig.tight_layout()
    fig.savefig(out / "predicted_vs_actual.png", dpi=110)
    plt.close(fig)
    (out / "residuals.json").write_text(
        json.dumps(
            {
                "mean": float(residuals.mean()),
                "std": float(residuals.std()),
                "p05": float(np.quantile(residuals, 0.05)),
                "p95": float(np.quantile(residuals, 0.95)),
            },
            indent=2,
        )
    )


def _clustering(model: Any, X: pd.DataFrame, metrics: dict[str, float], out: Path) -> None:
    plt = _figure()
    labels = model[-1].predict(model[:-1].transform(X))
    values, counts = np.unique(labels, return_counts=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([str(v) for v in values], counts)
    ax.set(
        xlabel="cluster",
        ylabel="rows",
        title=f"cluster sizes (silhouette {metrics.get('silhouette', float('nan')):.3f})",
    )
    fig.tight_layout()
    fig.savefig(out / "cluster_sizes.png", dpi=110)
    plt.close(fig)
    (out / "clusters.json").write_text(
        json.dumps(
            {
                "sizes": {str(v): int(c) for v, c in zip(values, counts, strict=True)},
                "silhouette": metrics.get("silhouette"),
            },
            indent=2,
        )
    )


def _anomaly(model: Any, X: pd.DataFrame, y: Any, out: Path) -> None:
    plt = _figure()
    values = scores(model, X)
    threshold = float(model[-1].threshold_)
    fig, ax = plt.subplots(figsize=(7, 4))
    if y is not None:
        truth = np.asarray(y).astype(bool)
        ax.hist(values[~truth], bins=60, alpha=0.6, label="normal")
        ax.hist(values[truth], bins=60, alpha=0.6, label="anomaly (label)")
        ax.legend()
    else:
        ax.hist(values, bins=60)
    ax.axvline(threshold, color="red", linestyle="--")
    ax.set(
        xlabel="anomaly score", ylabel="rows", title=f"score histogram, threshold {threshold:.3f} (holdout)"
    )
    fig.tight_layout()
    fig.savefig(out / "score_histogram.png", dpi=110)
    plt.close(fig)
    (out / "threshold.json").write_text(
        json.dumps({"threshold": threshold, "anomaly_rate": float(np.mean(values > threshold))}, indent=2)
    )


def write_evaluation(
    task: Task, model: Any, X: pd.DataFrame, y: Any, metrics: dict[str, float], out: Path
) -> list[Path]:
    """Write the task's plots and JSON files into ``out``; return them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if task in ("classification", "text-classification"):
        _classification(model, X, y, out)
    elif task == "regression":
        _regression(model, X, y, out)
    elif task == "clustering":
        _clustering(model, X, metrics, out)
    else:
        _anomaly(model, X, y, out)
    if task != "text-classification":
        _importance(model, X, y, task, out)
    return sorted(out.iterdir())
