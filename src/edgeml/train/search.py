"""The hyper-parameter search: Ray Tune trials, suggested by Optuna, pruned by ASHA.

One trial = one family with one parameter set, trained on the train split and scored
on the validation split. Iterative families (the MLP) report after every epoch, so
ASHA can stop weak ones early. Every trial's seed derives from ``search.seed`` and its
parameters, so any trial can be re-run alone and gives the same model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from edgeml.spec.models import Spec
from edgeml.train.data import TrainingData
from edgeml.train.families import FAMILIES, suggest
from edgeml.train.incremental import fit_incremental, streams
from edgeml.train.metrics import evaluate
from edgeml.train.pipeline import build_pipeline

__all__ = ["SearchResult", "family_params", "fit_trial", "run_search", "trial_seed"]


@dataclass
class SearchResult:
    trials: pd.DataFrame  # one row per trial: config/*, metric, time_total_s, ...
    best_config: dict[str, Any]
    best_score: float
    metric: str
    mode: str
    #: trial_id -> the trial's exact config. The frame's config/* columns are no substitute: a
    #: parameter of one family is NaN in the rows of another, which turns its ints into floats
    #: (and None values are NaN too), so the seed derived from them would not be the trial's.
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)


def family_params(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    family = str(config["family"])
    prefix = f"{family}."
    return family, {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}


def trial_seed(base: int, config: dict[str, Any]) -> int:
    canonical = json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True, default=str)
    return (base * 1_000_003 + int(hashlib.sha256(canonical.encode()).hexdigest()[:8], 16)) % 2**31


def fit_trial(
    spec: Spec,
    data: TrainingData,
    config: dict[str, Any],
    report: Callable[[dict[str, float]], None] | None = None,
) -> Any:
    """Build and fit one trial's pipeline on the train split; report validation metrics."""
    family, params = family_params(config)
    seed = trial_seed(int(config.get("seed", spec.search.seed)), config)
    if streams(spec, data, family):  # every training row, batch by batch
        return fit_incremental(spec, data, family, params, seed, report=report)
    pipeline = build_pipeline(spec, data.layout, FAMILIES[family].build(spec.task, params, seed), params)
    metric = spec.metric
    if FAMILIES[family].iterative:
        head, model = pipeline[:-1], pipeline[-1]
        features = head.fit_transform(data.X_train, data.y_train)
        for epoch in range(1, int(params.get("epochs", model.epochs)) + 1):
            model.partial_fit(features, data.y_train)
            if report is not None:
                scores = evaluate(spec.task, pipeline, data.X_val, data.y_val)
                report({**scores, "epoch": epoch})
        model._drop_training_state()
        return pipeline
    pipeline.fit(data.X_train, data.y_train)
    if spec.task == "anomaly":
        transformed = pipeline[:-1].transform(data.X_val)
        pipeline[-1].calibrate(transformed, data.y_val)
    if report is not None:
        scores = evaluate(spec.task, pipeline, data.X_val, data.y_val)
        if metric not in scores:
            raise ValueError(f"metric {metric} cannot be computed for this data ({', '.join(scores)})")
        report({**scores, "epoch": 1})
    return pipeline


def _trainable(config: dict[str, Any], spec: Spec, data: TrainingData) -> None:
    import ray
    from ray import tune

    if FAMILIES[str(config["family"])].iterative:  # importing torch costs seconds: only when used
        import torch

        torch.set_num_threads(1)  # one core per trial: concurrency comes from Tune
    node = ray.get_runtime_context().get_node_id()  # shows where trials ran on a cluster
    fit_trial(spec, data, config, report=lambda metrics: tune.report({**metrics, "node_id": node}))


@dataclass(frozen=True)
class _Space:
    """Optuna define-by-run space; a class, not a closure, because Tune pickles its searcher."""

    families: list[str]
    overrides: dict[str, Any]
    seed: int

    def __call__(self, trial: Any) -> dict[str, Any]:
        suggest(trial, self.families, self.overrides)
        return {"seed": self.seed}


def run_search(
    spec: Spec, data: TrainingData, *, storage: str, concurrency: int, verbose: int = 0
) -> SearchResult:
    """Run the search on the current Ray cluster and return every trial's outcome."""
    import optuna
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress says what happens
    # Tune's new console output prints an experiment banner even at verbose=0; the classic one is quiet.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune adds CSV and TensorBoard loggers unless told not to; tensorboardX imports torch (3-20 s
    # per process here). Each trial's result.json, which the results frame is read from, stays.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    s = spec.search
    metric, mode = spec.metric, spec.metric_mode

    space = _Space(list(s.families), dict(s.space), s.seed)
    # iterative families report every epoch; so does every family that streams (SGD's epochs)
    iterative = any(FAMILIES[f].iterative or streams(spec, data, f) for f in s.families)
    scheduler: Any = (
        ASHAScheduler(time_attr="epoch", metric=metric, mode=mode, max_t=100, grace_period=3)
        if s.scheduler == "asha" and iterative
        else FIFOScheduler()  # type: ignore[no-untyped-call]
    )
    searcher = OptunaSearch(space=space, metric=metric, mode=mode, seed=s.seed)
    tuner = tune.Tuner(
        tune.with_parameters(_trainable, spec=spec, data=data),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=s.trials,
            max_concurrent_trials=concurrency,
            reuse_actors=True,  # a fresh worker per trial costs seconds of process start and imports
            time_budget_s=s.time_budget.total_seconds() if s.time_budget else None,
        ),
        run_config=tune.RunConfig(
            name=f"{spec.name}",
            storage_path=storage,
            verbose=verbose,
            callbacks=[JsonLoggerCallback()],  # type: ignore[no-untyped-call]
        ),
    )
    results = tuner.fit()
    frame = results.get_dataframe()
    errors = [results[i].error for i in range(len(results)) if results[i].error is not None]
    if frame.empty or metric not in frame.columns:
        detail = f": {errors[0]}" if errors else ""
        raise RuntimeError(f"no trial finished{detail}")
    best = results.get_best_result(metric=metric, mode=mode, scope="last")
    assert best.config is not None
    assert best.metrics is not None
    configs = {
        str(r.metrics["trial_id"]): dict(r.config)
        for r in (results[i] for i in range(len(results)))
        if r.config is not None and r.metrics and "trial_id" in r.metrics
    }
    return SearchResult(frame, dict(best.config), float(best.metrics[metric]), metric, mode, configs)
