"""Trials: any one is reproducible from its config alone; seeds derive from the search seed and params."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgeml.train.search import family_params, fit_trial, trial_seed

from .helpers import TaskData

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("classification", {"family": "logistic", "logistic.C": 0.5, "seed": 7}),
    (
        "classification",
        {"family": "random_forest", "random_forest.n_estimators": 15, "random_forest.max_features": "sqrt"},
    ),
    (
        "classification",
        {"family": "hist_gradient_boosting", "hist_gradient_boosting.max_iter": 15, "seed": 7},
    ),
    ("classification", {"family": "mlp", "mlp.epochs": 3, "mlp.hidden_units": 16, "mlp.dropout": 0.2}),
    ("regression", {"family": "random_forest", "random_forest.n_estimators": 10, "seed": 0}),
    ("regression", {"family": "mlp", "mlp.epochs": 3, "mlp.hidden_units": 16, "seed": 0}),
    ("clustering", {"family": "kmeans", "kmeans.n_clusters": 4, "seed": 3}),
    ("anomaly", {"family": "isolation_forest", "isolation_forest.n_estimators": 40, "seed": 0}),
    ("text-classification", {"family": "tfidf_linear", "tfidf_linear.C": 3.0, "tfidf_linear.ngram_max": 2}),
]


def outputs(task: str, pipeline: Any, X: Any) -> np.ndarray:
    if task == "classification":
        return np.asarray(pipeline.predict_proba(X))
    if task == "anomaly":
        from edgeml.train.metrics import scores

        return np.r_[scores(pipeline, X), pipeline[-1].threshold_]
    return np.asarray(pipeline.predict(X))


@pytest.mark.parametrize(("task", "config"), CONFIGS, ids=[f"{t}-{c['family']}" for t, c in CONFIGS])
def test_a_trial_is_reproducible_from_its_config(
    task_data: Callable[[str], TaskData], task: str, config: dict[str, Any]
) -> None:
    td = task_data(task)
    first = fit_trial(td.spec, td.data, dict(config))
    second = fit_trial(td.spec, td.data, dict(config))
    assert np.array_equal(outputs(task, first, td.data.X_hold), outputs(task, second, td.data.X_hold))


def test_the_trial_seed_reaches_the_estimator(task_data: Callable[[str], TaskData]) -> None:
    td = task_data("classification")
    config = {"family": "random_forest", "random_forest.n_estimators": 5, "seed": 7}
    model = fit_trial(td.spec, td.data, config)
    assert model[-1].random_state == trial_seed(7, config)
    default = fit_trial(td.spec, td.data, {"family": "random_forest", "random_forest.n_estimators": 5})
    assert default[-1].random_state == trial_seed(
        td.spec.search.seed, {"family": "random_forest"} | {"random_forest.n_estimators": 5}
    )
    other = fit_trial(td.spec, td.data, {**config, "random_forest.n_estimators": 6})
    assert other[-1].random_state != model[-1].random_state


def test_trial_seed_is_stable_and_differs_across_configs() -> None:
    a = {"family": "random_forest", "random_forest.n_estimators": 100, "random_forest.max_depth": 5}
    assert trial_seed(0, a) == trial_seed(0, dict(reversed(list(a.items()))))  # key order is irrelevant
    assert trial_seed(0, a) == trial_seed(0, {**a, "seed": 123})  # "seed" is the base, not a parameter
    configs = [
        a,
        {**a, "random_forest.n_estimators": 101},
        {**a, "random_forest.max_depth": 6},
        {"family": "logistic", "logistic.C": 1.0},
        {"family": "logistic", "logistic.C": 1.0000001},
        {"family": "mlp"},
    ]
    seeds = {trial_seed(0, c) for c in configs}
    assert len(seeds) == len(configs)
    assert trial_seed(1, a) != trial_seed(0, a)
    assert all(0 <= s < 2**31 for s in seeds | {trial_seed(10**9, a)})


def test_family_params_strips_the_family_prefix() -> None:
    family, params = family_params(
        {"family": "mlp", "mlp.epochs": 3, "mlp.hidden_units": 8, "seed": 1, "logistic.C": 2.0}
    )
    assert family == "mlp"
    assert params == {"epochs": 3, "hidden_units": 8}


def test_a_trial_reports_validation_metrics(task_data: Callable[[str], TaskData]) -> None:
    td = task_data("regression")
    reports: list[dict[str, float]] = []
    fit_trial(td.spec, td.data, {"family": "linear", "linear.alpha": 1.0}, report=reports.append)
    (report,) = reports
    assert report["epoch"] == 1
    assert {"rmse", "mae", "r2"} <= set(report)
    assert report["rmse"] > 0


def test_anomaly_trial_is_calibrated_on_validation(task_data: Callable[[str], TaskData]) -> None:
    td = task_data("anomaly")
    config = {"family": "isolation_forest", "isolation_forest.n_estimators": 40}
    model = fit_trial(td.spec, td.data, config)
    expected = fit_trial(td.spec, td.data, config)[-1]
    transformed = model[:-1].transform(td.data.X_val)
    assert model[-1].threshold_ == expected.calibrate(transformed, td.data.y_val)


def test_a_metric_the_data_cannot_give_fails_the_trial(task_data: Callable[[str], TaskData]) -> None:
    td = task_data("anomaly")
    from dataclasses import replace

    no_labels = replace(td.data, y_val=np.zeros_like(td.data.y_val))
    with pytest.raises(ValueError, match="metric f1 cannot be computed"):
        fit_trial(td.spec, no_labels, {"family": "isolation_forest"}, report=lambda _: None)


class FakeClient:
    """Records what ``_log_trials`` sends to MLflow."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def create_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> Any:
        self.runs.append({"experiment": experiment, "name": run_name, "tags": tags, "done": False})
        return SimpleNamespace(info=SimpleNamespace(run_id=str(len(self.runs) - 1)))

    def log_batch(self, run_id: str, metrics: list[Any], params: list[Any]) -> None:
        self.runs[int(run_id)]["params"] = {p.key: p.value for p in params}
        self.runs[int(run_id)]["metrics"] = {m.key: m.value for m in metrics}

    def set_terminated(self, run_id: str) -> None:
        self.runs[int(run_id)]["done"] = True


def test_trials_of_mixed_families_are_logged_with_their_exact_params_and_seed() -> None:
    """In Tune's trial table a family's int parameters are float (NaN in other families' rows)."""
    import pandas as pd

    from edgeml.train.run import _log_trials
    from edgeml.train.search import SearchResult

    configs = {
        "a1": {"family": "random_forest", "random_forest.n_estimators": 30, "random_forest.max_depth": 4},
        "b2": {"family": "logistic", "logistic.C": 0.5, "logistic.class_weight": None},
    }
    rows = [
        {**{f"config/{k}": v for k, v in config.items()}, "config/seed": 7, "trial_id": trial}
        | {"f1_macro": 0.8, "epoch": 1, "timestamp": 1_700_000_000, "pid": 42, "done": True}
        for trial, config in configs.items()
    ]
    frame = pd.DataFrame(rows)
    assert frame["config/random_forest.n_estimators"].dtype == np.float64  # the trap
    result = SearchResult(
        frame, configs["a1"], 0.8, "f1_macro", "max", {t: {**c, "seed": 7} for t, c in configs.items()}
    )
    fake = FakeClient()
    _log_trials(fake, "exp", "parent-run", result)
    forest, logistic = fake.runs
    assert forest["tags"] == {"mlflow.parentRunId": "parent-run", "family": "random_forest"}
    assert forest["name"] == "trial-a1"
    assert forest["params"] == {
        "family": "random_forest",
        "n_estimators": "30",
        "max_depth": "4",
        "seed": str(trial_seed(7, configs["a1"])),
    }
    assert logistic["params"] == {
        "family": "logistic",
        "C": "0.5",
        "class_weight": "None",
        "seed": str(trial_seed(7, configs["b2"])),
    }
    assert forest["metrics"] == {"f1_macro": 0.8, "epoch": 1.0}
    assert forest["done"]
    assert logistic["done"]
