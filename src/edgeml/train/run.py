"""``edgeml train``: search, refit the best, evaluate on the holdout, register, gate.

The spine of the training stage; each step lives in its own module.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from edgeml.audit import cli_actor
from edgeml.settings import Settings
from edgeml.spec.models import Spec
from edgeml.store import store_from_settings
from edgeml.train.data import TrainingData, load_training_data
from edgeml.train.families import FAMILIES
from edgeml.train.feedback import FieldLabels, with_field_labels
from edgeml.train.gates import Evidence, Verdict, judge
from edgeml.train.incremental import fit_incremental, streams
from edgeml.train.metrics import evaluate
from edgeml.train.mlflow_db import seed_sqlite_store
from edgeml.train.pipeline import build_pipeline
from edgeml.train.registry import ChampionComparison, crown, move_alias, record_comparison
from edgeml.train.search import SearchResult, family_params, fit_trial, run_search, trial_seed
from edgeml.train.stream import TRAIN, VALIDATION

__all__ = [
    "HOLDOUT_SAMPLE",
    "KEPT_ROWS",
    "TARGET_COLUMN",
    "TrainReport",
    "keep_holdout",
    "log_model",
    "train",
]

#: holdout rows kept with each model version, for export parity checks and quantisation
HOLDOUT_SAMPLE = 2000
TARGET_COLUMN = "__target__"
#: where in a run they are kept
KEPT_ROWS = "edgeml/holdout.parquet"

Progress = Callable[[str], None]


@dataclass
class TrainReport:
    model: str
    version: str
    run_id: str
    snapshot: str
    family: str
    params: dict[str, Any]
    validation_score: float
    holdout: dict[str, float]
    verdict: Verdict
    trials: int
    split: str
    sizes: dict[str, int]
    champion_version: str | None = None
    champion_holdout: dict[str, float] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)  # challenger and champion, same rows
    labelled: dict[str, Any] = field(default_factory=dict)  # the field's labelled rows it used
    artifacts: list[str] = field(default_factory=list)
    nodes: int = 1  # Ray nodes the trials ran on
    seconds: float = 0.0


def _labelled(field: FieldLabels) -> dict[str, Any]:
    if not field.rows:
        return {}
    return {
        "snapshot": field.snapshot,
        "rows": field.rows,
        "trained": field.trained,
        "weight": field.weight,
        "held_out": field.held,
    }


def _comparison(
    spec: Spec,
    version: str,
    champion: str | None,
    evidence: list[Evidence],
    verdict: Verdict,
    labelled: dict[str, Any],
) -> ChampionComparison:
    from datetime import UTC, datetime

    if verdict.passed:
        outcome = f"v{version} passed: it is the champion, and goes on to export and publication"
    else:
        failed = "; ".join(f"{r.name}: {r.detail}" for r in verdict.failures)
        kept = f"champion v{champion} stays" if champion else "there is no champion yet"
        outcome = f"v{version} failed its gates and was kept from the canary ({failed}); {kept}"
    return ChampionComparison(
        model=spec.name,
        challenger=version,
        champion=champion,
        metric=spec.metric,
        mode=spec.metric_mode,
        margin=spec.gates.champion_margin,
        tolerance=spec.gates.champion_tolerance,
        evidence=[
            {"name": e.name, "rows": e.rows, "challenger": e.challenger, "champion": e.champion}
            for e in evidence
        ],
        gates=[{"name": r.name, "passed": r.passed, "detail": r.detail} for r in verdict.results],
        passed=verdict.passed,
        outcome=outcome,
        labelled=labelled,
        at=datetime.now(UTC),
    )


def _fit_final(spec: Spec, data: TrainingData, config: dict[str, Any]) -> Any:
    """The best configuration refitted on train + validation (anomaly: calibrated on validation)."""
    if spec.task == "anomaly":
        return fit_trial(spec, data, config)
    family, params = family_params(config)
    seed = trial_seed(int(config.get("seed", spec.search.seed)), config)
    if streams(spec, data, family):
        return fit_incremental(spec, data, family, params, seed, splits=(TRAIN, VALIDATION))
    estimator = FAMILIES[family].build(spec.task, params, seed)
    pipeline = build_pipeline(spec, data.layout, estimator, params)
    X = pd.concat([data.X_train, data.X_val], ignore_index=True)
    y = None
    if data.y_train is not None and data.y_val is not None:
        import numpy as np

        y = np.concatenate([data.y_train, data.y_val])
    with _every_core(estimator):
        return pipeline.fit(X, y)


@contextmanager
def _every_core(estimator: Any) -> Iterator[None]:
    """Trials run one core each, side by side; the one refit runs alone after the search, so
    it takes every core (a forest's trees are seeded up front: the model is the same for any
    n_jobs). Only the model's own threads: the preprocessing's ColumnTransformer would fork
    processes, each with a copy of the data. The fitted model goes back to one core, as
    devices and parity checks run it."""
    from sklearn.ensemble import BaseEnsemble

    # forests: a tree per thread; elsewhere n_jobs is per-class work or deprecated (LogisticRegression)
    keys = ["n_jobs"] if isinstance(estimator, BaseEnsemble) and "n_jobs" in estimator.get_params() else []
    estimator.set_params(**dict.fromkeys(keys, -1))
    try:
        yield
    finally:
        estimator.set_params(**dict.fromkeys(keys, 1))


def _log_trials(client: Any, experiment: str, parent: str, result: SearchResult) -> None:
    now = int(time.time() * 1000)
    for row in result.trials.to_dict(orient="records"):
        config = result.configs.get(str(row.get("trial_id"))) or {
            k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/") and pd.notna(v)
        }
        family, params = family_params(config)
        run = client.create_run(
            experiment,
            run_name=f"trial-{row.get('trial_id', '')}",
            tags={"mlflow.parentRunId": parent, "family": family},
        )
        from mlflow.entities import Metric, Param

        metrics = [
            Metric(k, float(v), now, 0)
            for k, v in row.items()
            if isinstance(v, int | float)
            and not isinstance(v, bool)
            and pd.notna(v)
            and not k.startswith("config/")
            and k not in ("timestamp", "pid", "done")
        ]
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param("family", family)]
            + [Param(k, str(v)) for k, v in params.items()]
            + [Param("seed", str(trial_seed(int(config.get("seed", 0)), config)))],
        )
        client.set_terminated(run.info.run_id)


def keep_holdout(spec: Spec, data: TrainingData, settings: Settings) -> None:
    """Log what export needs to prove parity later as the active run's ``edgeml/`` artifacts: the
    spec and holdout rows with targets (``edgeml data erase`` rewrites ``edgeml/holdout.parquet``).
    Under hipaa the rows are sealed with the store's key (:mod:`edgeml.privacy.sealed_rows`)."""
    import mlflow

    from edgeml.privacy.sealed_rows import SEALED_TAG, kept_rows_key, write_rows

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("keep_holdout logs to the active MLflow run: start one first")
    run_id = run.info.run_id
    key = kept_rows_key(settings, create=True) if spec.compliance == "hipaa" else None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "spec.json").write_text(spec.model_dump_json(by_alias=True, indent=2))
        rows = data.X_hold.head(HOLDOUT_SAMPLE).copy()
        if data.y_hold is not None:
            rows[TARGET_COLUMN] = data.y_hold[: len(rows)]
        write_rows(rows, Path(tmp) / "holdout.parquet", run_id=run_id, artifact=KEPT_ROWS, key=key)
        if key is not None:
            mlflow.set_tag(SEALED_TAG, "sealed")
        mlflow.log_artifacts(tmp, artifact_path="edgeml")


def log_model(spec: Spec, data: TrainingData, model: Any) -> Any:
    """Log ``model`` to the active run, registered under the spec's name (its ``ModelInfo``). The
    input example MLflow keeps with it is synthesised (:mod:`edgeml.privacy.example`), no one's row."""
    import mlflow
    from mlflow.models import infer_signature

    from edgeml.privacy.example import input_example
    from edgeml.train import tracking as tr

    example = data.X_hold.head(5)  # types only: the signature keeps no values
    types = tr.trusted_types(model)
    return mlflow.sklearn.log_model(
        model,
        name="model",
        registered_model_name=spec.name,
        signature=infer_signature(example, model.predict(example)),
        input_example=input_example(spec, pd.concat([data.X_train, data.X_val, data.X_hold]), data.layout),
        skops_trusted_types=types,
        pip_requirements=tr.pip_requirements(types),
    )


def train(
    spec: Spec,
    settings: Settings,
    snapshot_id: str | None = None,
    *,
    tracking: str | None = None,
    progress: Progress | None = None,
) -> TrainReport:
    """Train on a snapshot and register the best model; see the module docstring."""
    import mlflow

    from edgeml.ingest.runtime import cluster_cpus, ray_session
    from edgeml.train import tracking as tr
    from edgeml.train.report import write_evaluation

    say = progress or (lambda _: None)
    started = time.perf_counter()
    say("loading and checking the training data")
    data = load_training_data(spec, settings, snapshot_id)
    store = store_from_settings(settings)
    data, field_labels = with_field_labels(spec, store, data)
    if field_labels.rows:
        say(
            f"with {field_labels.trained:,} labelled rows from the field (x{field_labels.weight}), "
            f"{field_labels.held:,} held out"
        )
    with ray_session(settings.ray_address, progress_bars=False):
        s = spec.search
        concurrency = s.max_concurrent if isinstance(s.max_concurrent, int) else cluster_cpus()
        say(f"searching: {s.trials} trials, {concurrency} at a time")
        result = run_search(
            spec, data, storage=str((settings.home / "tune").resolve()), concurrency=concurrency
        )
    family, params = family_params(result.best_config)
    say(f"refitting the best trial ({family})")
    model = _fit_final(spec, data, result.best_config)
    holdout = evaluate(spec.task, model, data.X_hold, data.y_hold)

    uri = tr.tracking_uri(settings, tracking)
    seed_sqlite_store(uri)  # a new store: a copy of the empty schema, not every migration again
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = tr.experiment_id(spec.name, settings)
    say("comparing with the champion")
    champ = tr.champion(spec.name)
    champ_holdout = evaluate(spec.task, champ[1], data.X_hold, data.y_hold) if champ else {}
    evidence = [Evidence("holdout", len(data.X_hold), holdout, champ_holdout)] if champ else []
    if champ and field_labels.X_hold is not None:
        X_field, y_field = field_labels.X_hold, field_labels.y_hold
        evidence.append(
            Evidence(
                "field labels",
                len(X_field),
                evaluate(spec.task, model, X_field, y_field),
                evaluate(spec.task, champ[1], X_field, y_field),
            )
        )
    verdict = judge(
        spec.gates,
        spec.metric,
        spec.metric_mode,
        holdout,
        (champ[0], champ_holdout) if champ else None,
        holdout_rows=len(data.X_hold),
        evidence=evidence[1:],
    )
    say("logging to MLflow")
    with mlflow.start_run(experiment_id=experiment, run_name=f"search-{data.snapshot}") as run:
        mlflow.set_tags(
            {
                "snapshot": data.snapshot,
                "spec_fingerprint": spec.fingerprint(),
                "git_commit": tr.git_commit(),
                "task": spec.task,
                "split": data.split,
            }
        )
        mlflow.log_params(
            {
                "family": family,
                **{f"{family}.{k}": v for k, v in params.items()},
                "trials": s.trials,
                "metric": spec.metric,
                "families": ",".join(s.families),
            }
        )
        mlflow.log_metrics(
            {f"holdout_{k}": v for k, v in holdout.items()} | {f"validation_{spec.metric}": result.best_score}
        )
        _log_trials(client, experiment, run.info.run_id, result)
        with tempfile.TemporaryDirectory() as tmp:
            files = write_evaluation(spec.task, model, data.X_hold, data.y_hold, holdout, Path(tmp))
            mlflow.log_artifacts(tmp, artifact_path="evaluation")
        keep_holdout(spec, data, settings)
        info = log_model(spec, data, model)
    version = str(info.registered_model_version)
    tags = {
        "snapshot": data.snapshot,
        "spec_fingerprint": spec.fingerprint(),
        "git_commit": tr.git_commit(),
        "family": family,
        "gates": "passed" if verdict.passed else "failed",
        **{f"holdout_{k}": f"{v:.6g}" for k, v in holdout.items()},
    }
    for key, value in tags.items():
        client.set_model_version_tag(spec.name, version, key, value)
    aliases = []
    if verdict.passed:
        gates = ", ".join(r.name for r in verdict.results) or "none set"
        move_alias(
            client, store, spec.name, "challenger", version, actor=cli_actor(), reason=f"passed {gates}"
        )
        crown(client, store, spec.name, version, champ[0] if champ else None, actor=cli_actor(), gates=gates)
        aliases += ["challenger", "champion"]
    labelled = _labelled(field_labels)
    record_comparison(
        store, _comparison(spec, version, champ[0] if champ else None, evidence, verdict, labelled)
    )
    return TrainReport(
        model=spec.name,
        version=version,
        run_id=run.info.run_id,
        snapshot=data.snapshot,
        family=family,
        params=params,
        validation_score=result.best_score,
        holdout=holdout,
        verdict=verdict,
        trials=len(result.trials),
        split=data.split,
        sizes=data.sizes(),
        champion_version=champ[0] if champ else None,
        champion_holdout=champ_holdout,
        aliases=aliases,
        evidence=evidence,
        labelled=labelled,
        artifacts=[f.name for f in files],
        seconds=time.perf_counter() - started,
        nodes=int(result.trials["node_id"].nunique()) if "node_id" in result.trials else 1,
    )
