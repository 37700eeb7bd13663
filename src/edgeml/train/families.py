"""Model families: each knows its default search space and how to build its estimator.

A family is one entry in :data:`FAMILIES`: its task-specific estimator builder, the
Optuna suggestions of its default space, and whether it trains iteratively (then a
trial reports after every epoch and ASHA may stop it early). The spec's
``search.space`` overrides any default range.

A family that can learn incrementally also has an ``incremental`` builder: with
``pipeline.data_volume`` medium or large it is fed every training row in bounded batches
(``partial_fit``; see ``train/stream.py``) instead of a sample. ``logistic`` and ``linear``
are then fitted by stochastic gradient descent on the same objective (log loss or squared
error with the L2 penalty their ``C`` / ``alpha`` set, scaled per row), averaged over the
steps; the MLP takes each batch as it comes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin

from edgeml.spec.models import ParamRange, Task

__all__ = ["FAMILIES", "Family", "IsolationForestThreshold", "Rows", "sgd_epochs", "suggest"]


class IsolationForestThreshold(BaseEstimator, OutlierMixin):  # type: ignore[misc]
    """Isolation forest whose anomaly threshold is calibrated on validation data.

    ``score_samples`` is higher for more anomalous rows; ``predict`` is 1 for anomalies.
    With labels, the threshold maximises F1 on the validation rows; without, it is the
    (1 − contamination) quantile of their scores.
    """

    def __init__(
        self,
        n_estimators: int = 200,
        max_samples: float | str = "auto",
        contamination: float = 0.05,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = contamination
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> IsolationForestThreshold:
        from sklearn.ensemble import IsolationForest

        self.forest_ = IsolationForest(
            n_estimators=int(self.n_estimators),
            max_samples=self.max_samples,
            random_state=int(self.random_state),
            n_jobs=1,
        ).fit(X)
        self.threshold_ = float(np.quantile(self.score_samples(X), 1 - float(self.contamination)))
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        return np.asarray(-self.forest_.score_samples(X))

    def calibrate(self, X: Any, y: Any | None) -> float:
        scores = self.score_samples(X)
        if y is None or len(np.unique(np.asarray(y))) < 2:
            self.threshold_ = float(np.quantile(scores, 1 - float(self.contamination)))
            return self.threshold_
        from sklearn.metrics import f1_score

        truth = np.asarray(y).astype(bool)
        candidates = np.unique(np.quantile(scores, np.linspace(0.5, 0.999, 200)))
        best = max(candidates, key=lambda t: f1_score(truth, scores > t, zero_division=0))
        self.threshold_ = float(best)
        return self.threshold_

    def predict(self, X: Any) -> np.ndarray:
        return (self.score_samples(X) > self.threshold_).astype(np.int64)


Suggest = Callable[[Any, str], Any]  # (optuna trial, name) -> value


def _f(low: float, high: float, log: bool = False) -> Suggest:
    return lambda trial, name: trial.suggest_float(name, low, high, log=log)


def _i(low: int, high: int, log: bool = False) -> Suggest:
    return lambda trial, name: trial.suggest_int(name, low, high, log=log)


def _c(*choices: Any) -> Suggest:
    return lambda trial, name: trial.suggest_categorical(name, list(choices))


@dataclass(frozen=True)
class Rows:
    """What an incremental estimator needs to know of the rows it will see: how many, per class."""

    total: int
    per_class: Mapping[str, int]


def sgd_epochs(rows: int) -> int:
    """Passes of the SGD-fitted families over the training rows: scikit-learn's rule of thumb (SGD
    converges after seeing about 10⁶ rows, so ⌈10⁶ / rows⌉ passes), kept between 2 and 50."""
    return max(2, min(50, math.ceil(1_000_000 / max(1, rows))))


@dataclass(frozen=True)
class Family:
    name: str
    space: Mapping[str, Suggest]
    build: Callable[[Task, dict[str, Any], int], Any]
    iterative: bool = False
    #: the estimator fed batch by batch (``partial_fit``), for data that does not fit in memory
    incremental: Callable[[Task, dict[str, Any], int, Rows], Any] | None = None


def _logistic(task: Task, p: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        C=p.get("C", 1.0),
        max_iter=int(p.get("max_iter", 500)),
        class_weight=p.get("class_weight"),
        random_state=seed,
    )


def _linear(task: Task, p: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(alpha=p.get("alpha", 1.0), random_state=seed)


def _sgd_logistic(task: Task, p: dict[str, Any], seed: int, rows: Rows) -> Any:
    """LogisticRegression's objective, C·Σ log loss + ½‖w‖², divided by C·n: SGD's alpha = 1 / (C·n)."""
    from sklearn.linear_model import SGDClassifier

    weights = None
    if p.get("class_weight") == "balanced":  # partial_fit takes weights, not "balanced": from the counts
        weights = {c: rows.total / (len(rows.per_class) * n) for c, n in rows.per_class.items() if n}
    return SGDClassifier(
        loss="log_loss",
        alpha=1.0 / (float(p.get("C", 1.0)) * max(1, rows.total)),
        class_weight=weights,
        average=True,
        random_state=seed,
    )


def _sgd_linear(task: Task, p: dict[str, Any], seed: int, rows: Rows) -> Any:
    """Ridge's objective, ‖y − Xw‖² + alpha·‖w‖², divided by 2n: SGD's alpha = alpha / n."""
    from sklearn.linear_model import SGDRegressor

    alpha = float(p.get("alpha", 1.0)) / max(1, rows.total)
    return SGDRegressor(alpha=alpha, average=True, random_state=seed)


def _forest(task: Task, p: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
    return cls(
        n_estimators=int(p.get("n_estimators", 100)),
        max_depth=p.get("max_depth"),
        min_samples_leaf=int(p.get("min_samples_leaf", 1)),
        max_features=p.get("max_features", "sqrt" if task == "classification" else 1.0),
        random_state=seed,
        n_jobs=1,
    )


def _hgb(task: Task, p: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    depth = p.get("max_depth")
    return cls(
        learning_rate=p.get("learning_rate", 0.1),
        max_iter=int(p.get("max_iter", 100)),
        max_leaf_nodes=int(p.get("max_leaf_nodes", 31)),
        max_depth=int(depth) if depth else None,
        l2_regularization=p.get("l2_regularization", 0.0),
        random_state=seed,
        early_stopping=False,
    )


def _mlp(task: Task, p: dict[str, Any], seed: int) -> Any:
    from edgeml.train.mlp import MLPClassifierTorch, MLPRegressorTorch

    cls = MLPClassifierTorch if task == "classification" else MLPRegressorTorch
    return cls(
        hidden_units=int(p.get("hidden_units", 64)),
        layers=int(p.get("layers", 2)),
        learning_rate=p.get("learning_rate", 1e-3),
        epochs=int(p.get("epochs", 30)),
        dropout=p.get("dropout", 0.0),
        batch_size=int(p.get("batch_size", 256)),
        weight_decay=p.get("weight_decay", 0.0),
        random_state=seed,
    )


def _kmeans(task: Task, p: dict[str, Any], seed: int) -> Any:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=int(p.get("n_clusters", 4)), n_init=int(p.get("n_init", 3)), random_state=seed)


def _iforest(task: Task, p: dict[str, Any], seed: int) -> Any:
    return IsolationForestThreshold(
        n_estimators=int(p.get("n_estimators", 200)),
        max_samples=p.get("max_samples", "auto"),
        contamination=p.get("contamination", 0.05),
        random_state=seed,
    )


def _tfidf_linear(task: Task, p: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=p.get("C", 1.0), max_iter=1000, random_state=seed)


FAMILIES: Mapping[str, Family] = {
    "logistic": Family("logistic", {"C": _f(1e-3, 100, log=True)}, _logistic, incremental=_sgd_logistic),
    "linear": Family("linear", {"alpha": _f(1e-4, 100, log=True)}, _linear, incremental=_sgd_linear),
    "random_forest": Family(
        "random_forest",
        {
            "n_estimators": _i(50, 300),
            "max_depth": _i(3, 24),
            "min_samples_leaf": _i(1, 20),
            "max_features": _c("sqrt", "log2", 1.0),
        },
        _forest,
    ),
    "hist_gradient_boosting": Family(
        "hist_gradient_boosting",
        {
            "learning_rate": _f(0.01, 0.3, log=True),
            "max_iter": _i(50, 300),
            "max_leaf_nodes": _i(8, 64, log=True),
            "l2_regularization": _f(1e-6, 10, log=True),
        },
        _hgb,
    ),
    "mlp": Family(
        "mlp",
        {
            "hidden_units": _c(32, 64, 128),
            "layers": _i(1, 3),
            "learning_rate": _f(1e-4, 1e-2, log=True),
            "epochs": _i(10, 40),
            "dropout": _f(0.0, 0.3),
            "weight_decay": _f(1e-6, 1e-2, log=True),
        },
        _mlp,
        iterative=True,
        incremental=lambda task, p, seed, rows: _mlp(task, p, seed),
    ),
    "kmeans": Family("kmeans", {"n_clusters": _i(2, 10)}, _kmeans),
    "isolation_forest": Family(
        "isolation_forest", {"n_estimators": _i(100, 400), "contamination": _f(0.01, 0.15)}, _iforest
    ),
    "tfidf_linear": Family(
        "tfidf_linear",
        {"C": _f(1e-2, 100, log=True), "ngram_max": _i(1, 2), "min_df": _i(1, 3)},
        _tfidf_linear,
    ),
}


def _from_range(rng: ParamRange) -> Suggest:
    if rng.choices is not None:
        return _c(*rng.choices)
    assert rng.low is not None
    assert rng.high is not None
    if rng.int_:
        return _i(int(rng.low), int(rng.high), log=rng.log)
    return _f(rng.low, rng.high, log=rng.log)


def suggest(trial: Any, families: list[str], overrides: Mapping[str, Mapping[str, ParamRange]]) -> None:
    """Optuna define-by-run space: pick a family, then its parameters (names prefixed by family)."""
    family = trial.suggest_categorical("family", families)
    space = dict(FAMILIES[family].space)
    for name, rng in overrides.get(family, {}).items():
        space[name] = _from_range(rng)
    for name, draw in space.items():
        draw(trial, f"{family}.{name}")
