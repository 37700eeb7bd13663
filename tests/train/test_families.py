"""Model families: each builds for its tasks and trains through the pipeline; the torch MLP and the
calibrated isolation forest behave as their docstrings say."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgeml.spec.models import FAMILIES as TASK_FAMILIES
from edgeml.spec.models import METRICS
from edgeml.train.families import FAMILIES, IsolationForestThreshold, suggest
from edgeml.train.metrics import evaluate
from edgeml.train.mlp import MLPClassifierTorch, MLPRegressorTorch
from edgeml.train.pipeline import build_pipeline
from edgeml.train.search import family_params, trial_seed

from .helpers import TaskData

#: cheap parameters, so every family trains in well under a second
SMALL: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 20},
    "hist_gradient_boosting": {"max_iter": 20},
    "mlp": {"epochs": 3, "hidden_units": 16},
    "isolation_forest": {"n_estimators": 50},
}
CASES = [(task, family) for task, families in TASK_FAMILIES.items() for family in families]


def test_every_spec_family_has_a_builder_and_a_valid_default_space() -> None:
    assert {f for fams in TASK_FAMILIES.values() for f in fams} == set(FAMILIES)
    for families in TASK_FAMILIES.values():
        for name, allowed in families.items():
            assert FAMILIES[name].name == name
            assert set(FAMILIES[name].space) <= allowed, name
    assert [n for n, f in FAMILIES.items() if f.iterative] == ["mlp"]


@pytest.mark.parametrize(("task", "family"), CASES, ids=[f"{t}-{f}" for t, f in CASES])
def test_family_fits_and_predicts_through_the_pipeline(
    task_data: Callable[[str], TaskData], task: str, family: str
) -> None:
    td = task_data(task)
    spec, data = td.spec, td.data
    params = SMALL.get(family, {})
    pipeline = build_pipeline(spec, data.layout, FAMILIES[family].build(task, params, 0), params)  # type: ignore[arg-type]
    pipeline.fit(data.X_train, data.y_train)
    if task == "anomaly":
        pipeline[-1].calibrate(pipeline[:-1].transform(data.X_val), data.y_val)
    pred = pipeline.predict(data.X_val)
    assert len(pred) == len(data.X_val)
    if task in ("classification", "text-classification"):
        assert set(pred) <= set(data.labels or [])
        assert set(pipeline.classes_) == set(np.unique(data.y_train))
    elif task == "regression":
        assert np.isfinite(pred).all()
    elif task == "clustering":
        assert pred.dtype.kind in "iu"
        assert len(np.unique(pred)) > 1
    else:
        assert set(np.unique(pred)) <= {0, 1}
    metrics = evaluate(task, pipeline, data.X_val, data.y_val)  # type: ignore[arg-type]
    assert spec.metric in metrics
    assert all(np.isfinite(v) for v in metrics.values())
    assert set(METRICS[task]) <= set(metrics)  # every metric of the task, the data allows them all


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_default_space_draws_build_and_fit(task_data: Callable[[str], TaskData], family: str) -> None:
    """A parameter set drawn from each family's default space gives an estimator that trains."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = next(t for t, fams in TASK_FAMILIES.items() if family in fams)
    td = task_data(task)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    suggest(trial, [family], td.spec.search.space)
    name, params = family_params(trial.params)
    assert name == family
    assert set(params) == set(FAMILIES[family].space) | set(td.spec.search.space.get(family, {}))
    estimator = FAMILIES[family].build(task, params, 0)  # type: ignore[arg-type]
    for key, value in params.items():
        if key in estimator.get_params():
            assert estimator.get_params()[key] == pytest.approx(value)
    pipeline = build_pipeline(td.spec, td.data.layout, estimator, params)
    pipeline.fit(td.data.X_train, td.data.y_train)
    assert len(pipeline.predict(td.data.X_val)) == len(td.data.X_val)


def test_space_override_replaces_the_default_range() -> None:
    import optuna

    from edgeml.spec.models import ParamRange

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        suggest(
            trial,
            ["random_forest", "kmeans"],
            {
                "random_forest": {"n_estimators": ParamRange(choices=[7])},
                "kmeans": {"n_clusters": ParamRange(low=3, high=4, int=True)},
            },  # type: ignore[call-arg]
        )
        family, params = family_params(trial.params)
        if family == "random_forest":
            assert params["n_estimators"] == 7
        else:
            assert params["n_clusters"] in (3, 4)
        study.tell(trial, 0.0)


# -------------------------------------------------------------------------------- MLP


def blobs(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, 3.0, 0.0, 0.0], [0.0, 3.0, 3.0, -3.0]])
    y = rng.integers(0, 3, n)
    X = centres[y] + rng.normal(0, 0.7, (n, 4))
    return X.astype(np.float32), np.asarray(["a", "b", "c"])[y]


def torch_free(model: Any) -> list[str]:
    """Attributes of ``model`` holding torch objects (directly or in a list/tuple/dict)."""
    bad = []
    for name, value in vars(model).items():
        values = list(value.values()) if isinstance(value, dict) else value
        for v in values if isinstance(values, list | tuple) else [values]:
            if type(v).__module__.split(".")[0] == "torch":
                bad.append(name)
    return bad


def test_mlp_classifier_partial_fit_improves_epoch_by_epoch() -> None:
    from sklearn.metrics import accuracy_score, log_loss

    X, y = blobs()
    model = MLPClassifierTorch(hidden_units=16, layers=1, learning_rate=0.01, batch_size=32, random_state=0)
    losses, accuracies = [], []
    for epoch in range(1, 11):
        model.partial_fit(X, y)
        assert model.epochs_done_ == epoch
        losses.append(log_loss(y, model.predict_proba(X), labels=model.classes_))
        accuracies.append(accuracy_score(y, model.predict(X)))
    assert list(model.classes_) == ["a", "b", "c"]
    assert losses[-1] < 0.5 * losses[0]
    assert sum(b < a for a, b in itertools.pairwise(losses)) >= 7  # mostly monotone
    assert accuracies[-1] >= accuracies[0]
    assert accuracies[-1] > 0.9


def test_mlp_regressor_partial_fit_reduces_the_error() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 3)).astype(np.float32)
    y = 2 * X[:, 0] - X[:, 1] + 0.5 * X[:, 2] + rng.normal(0, 0.05, 400)
    model = MLPRegressorTorch(hidden_units=32, layers=2, learning_rate=0.01, batch_size=32, random_state=0)
    errors = []
    for _ in range(8):
        model.partial_fit(X, y)
        errors.append(float(np.mean((model.predict(X) - y) ** 2)))
    assert errors[-1] < 0.25 * errors[0]
    assert errors[-1] < 0.1


@pytest.mark.parametrize("cls", [MLPClassifierTorch, MLPRegressorTorch])
def test_mlp_fit_is_deterministic_for_a_fixed_random_state(cls: type) -> None:
    X, labels = blobs(200)
    y = labels if cls is MLPClassifierTorch else X[:, 0] * 2.0
    kwargs = {"hidden_units": 16, "epochs": 5, "dropout": 0.2, "batch_size": 32}
    first = cls(random_state=3, **kwargs).fit(X, y)
    second = cls(random_state=3, **kwargs).fit(X, y)
    other = cls(random_state=4, **kwargs).fit(X, y)
    raw = "predict_proba" if cls is MLPClassifierTorch else "predict"
    assert np.array_equal(getattr(first, raw)(X), getattr(second, raw)(X))
    assert all(np.array_equal(a, b) for a, b in zip(first.weights_, second.weights_, strict=True))
    assert not np.array_equal(getattr(first, raw)(X), getattr(other, raw)(X))
    # fit starts over: refitting the same estimator gives the same weights again
    first.fit(X, y)
    assert np.array_equal(getattr(first, raw)(X), getattr(second, raw)(X))


def test_fitted_mlp_holds_numpy_only_and_skops_round_trips_it() -> None:
    import skops.io as sio

    from edgeml.train.tracking import trusted_types

    X, y = blobs(200)
    model = MLPClassifierTorch(hidden_units=8, epochs=2, random_state=0)
    model.partial_fit(X, y)
    assert torch_free(model)  # mid-training it holds the module and optimiser
    model.fit(X, y)
    assert torch_free(model) == []
    assert all(isinstance(w, np.ndarray) for w in model.weights_)
    assert len(model.weights_) == len(model.state_keys_)
    trusted = trusted_types(model)
    assert "edgeml.train.mlp.MLPClassifierTorch" in trusted
    loaded = sio.loads(sio.dumps(model), trusted=trusted)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_mlp_trained_by_a_trial_holds_no_torch(task_data: Callable[[str], TaskData]) -> None:
    from edgeml.train.search import fit_trial

    td = task_data("classification")
    reports: list[dict[str, float]] = []
    pipeline = fit_trial(
        td.spec, td.data, {"family": "mlp", "mlp.epochs": 4, "mlp.hidden_units": 16}, report=reports.append
    )
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    assert all(td.spec.metric in r for r in reports)
    assert torch_free(pipeline[-1]) == []
    assert len(pipeline.predict(td.data.X_hold)) == len(td.data.X_hold)


# --------------------------------------------------------------------- isolation forest


def anomalies(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    normal = rng.normal(0, 1, (400, 3))
    odd = rng.normal(0, 1, (40, 3)) + rng.choice([-4.0, 4.0], (40, 3))
    X = np.vstack([normal, odd])
    y = np.r_[np.zeros(400, dtype=np.int64), np.ones(40, dtype=np.int64)]
    order = rng.permutation(len(X))
    return X[order], y[order]


def test_isolation_forest_calibration_maximises_f1_with_labels() -> None:
    from sklearn.metrics import f1_score

    X, _ = anomalies()
    X_val, y_val = anomalies(seed=1)
    model = IsolationForestThreshold(n_estimators=100, contamination=0.2, random_state=0).fit(X)
    quantile_threshold = model.threshold_
    threshold = model.calibrate(X_val, y_val)
    assert threshold == model.threshold_
    scores = model.score_samples(X_val)
    best = f1_score(y_val, scores > threshold)
    candidates = np.quantile(scores, np.linspace(0.5, 0.999, 200))
    assert best == pytest.approx(max(f1_score(y_val, scores > t, zero_division=0) for t in candidates))
    assert best >= f1_score(y_val, scores > quantile_threshold)
    assert best > 0.8
    assert np.array_equal(model.predict(X_val), (scores > threshold).astype(np.int64))


@pytest.mark.parametrize("labels", ["none", "one-class"])
def test_isolation_forest_calibration_uses_the_contamination_quantile_without_labels(labels: str) -> None:
    X, _ = anomalies()
    X_val, _ = anomalies(seed=2)
    model = IsolationForestThreshold(n_estimators=100, contamination=0.1, random_state=0).fit(X)
    y = None if labels == "none" else np.zeros(len(X_val), dtype=np.int64)
    threshold = model.calibrate(X_val, y)
    scores = model.score_samples(X_val)
    assert threshold == pytest.approx(float(np.quantile(scores, 0.9)))
    assert model.predict(X_val).mean() == pytest.approx(0.1, abs=0.01)


def test_isolation_forest_scores_are_higher_for_anomalies() -> None:
    X, y = anomalies()
    model = IsolationForestThreshold(n_estimators=100, random_state=0).fit(X)
    scores = model.score_samples(X)
    assert scores[y == 1].mean() > scores[y == 0].mean()
    again = IsolationForestThreshold(n_estimators=100, random_state=0).fit(X)
    assert np.array_equal(again.score_samples(X), scores)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_final_refit_on_every_core_is_the_one_core_model_and_serves_on_one_core(
    task_data: Callable[[str], TaskData], task: str
) -> None:
    from edgeml.train.run import _fit_final

    td = task_data(task)
    config = {"family": "random_forest", "random_forest.n_estimators": 20, "seed": 3}
    refit = _fit_final(td.spec, td.data, config)
    assert refit[-1].n_jobs == 1  # devices and parity checks run it on one core

    family, params = family_params(config)
    one_core = build_pipeline(
        td.spec,
        td.data.layout,
        FAMILIES[family].build(task, params, trial_seed(3, config)),
        params,  # type: ignore[arg-type]
    )
    X = pd.concat([td.data.X_train, td.data.X_val], ignore_index=True)
    one_core.fit(X, np.concatenate([td.data.y_train, td.data.y_val]))  # type: ignore[list-item]
    assert one_core[-1].n_jobs == 1
    if task == "classification":
        assert np.array_equal(refit.predict_proba(td.data.X_hold), one_core.predict_proba(td.data.X_hold))
    else:
        assert np.array_equal(refit.predict(td.data.X_hold), one_core.predict(td.data.X_hold))
