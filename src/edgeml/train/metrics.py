"""Metrics per task, on any fitted pipeline."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from edgeml.spec.models import Task

__all__ = ["evaluate", "scores"]


def scores(model: Any, X: Any) -> np.ndarray:
    """Anomaly scores (higher is more anomalous) of a fitted anomaly pipeline."""
    transformed = model[:-1].transform(X)
    return np.asarray(model[-1].score_samples(transformed))


def evaluate(task: Task, model: Any, X: Any, y: np.ndarray | None) -> dict[str, float]:
    """Every metric of ``task`` that the data allows."""
    from sklearn import metrics as m

    out: dict[str, float] = {}
    if task in ("classification", "text-classification"):
        assert y is not None
        pred = model.predict(X)
        out["accuracy"] = float(m.accuracy_score(y, pred))
        with warnings.catch_warnings():  # a split may lack a class the model predicts: expected, not news
            warnings.simplefilter("ignore", UserWarning)
            out["balanced_accuracy"] = float(m.balanced_accuracy_score(y, pred))
        # Classes absent from both truth and predictions are left out, as scikit-learn does by default:
        # scoring them 0 would punish a model for a fault the holdout window happened not to contain.
        out["f1_macro"] = float(m.f1_score(y, pred, average="macro", zero_division=0))
        if task == "classification" and hasattr(model, "predict_proba"):
            proba = model.predict_proba(X)
            classes = list(model.classes_)
            out["log_loss"] = float(m.log_loss(y, proba, labels=classes))
            present = np.unique(y)
            if len(present) > 1:
                if len(classes) == 2:
                    out["roc_auc"] = float(m.roc_auc_score(y == classes[1], proba[:, 1]))
                else:
                    cols = [classes.index(c) for c in present]
                    sub = proba[:, cols] / np.clip(proba[:, cols].sum(axis=1, keepdims=True), 1e-12, None)
                    if len(present) == 2:  # two of several classes in this split: a binary question
                        out["roc_auc"] = float(m.roc_auc_score(y == present[1], sub[:, 1]))
                    else:
                        auc = m.roc_auc_score(y, sub, multi_class="ovr", labels=list(present))
                        out["roc_auc"] = float(auc)
    elif task == "regression":
        assert y is not None
        pred = model.predict(X)
        out["rmse"] = float(np.sqrt(m.mean_squared_error(y, pred)))
        out["mae"] = float(m.mean_absolute_error(y, pred))
        out["r2"] = float(m.r2_score(y, pred))
    elif task == "clustering":
        transformed = model[:-1].transform(X)
        labels = model[-1].predict(transformed)
        sample = np.random.default_rng(0).permutation(len(labels))[:5000]
        if len(np.unique(labels[sample])) > 1:
            out["silhouette"] = float(m.silhouette_score(transformed[sample], labels[sample]))
            out["davies_bouldin"] = float(m.davies_bouldin_score(transformed[sample], labels[sample]))
        else:
            out["silhouette"], out["davies_bouldin"] = -1.0, float("inf")
    else:  # anomaly
        pred = model.predict(X)
        out["anomaly_rate"] = float(np.mean(pred))
        if y is not None and len(np.unique(y)) > 1:
            out["f1"] = float(m.f1_score(y, pred, zero_division=0))
            out["precision"] = float(m.precision_score(y, pred, zero_division=0))
            out["recall"] = float(m.recall_score(y, pred, zero_division=0))
            out["roc_auc"] = float(m.roc_auc_score(y, scores(model, X)))
    return out
