"""``train()`` end to end on a local Ray: search, refit, evaluate, register in MLflow, gate.

Every test trains on small simulated data (3 pumps × 400 readings) with 2–3 trials, in one
appliance home shared by the module (one MLflow database); each test uses its own model name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from edgeml.spec import Spec
from edgeml.train.data import load_training_data
from edgeml.train.metrics import evaluate
from edgeml.train.run import TrainReport, train
from edgeml.train.search import trial_seed

from .conftest import TrainHome
from .helpers import (
    anomaly_spec,
    cheap_faults,
    cluster_spec,
    faults_spec,
    make_snapshot,
    notes_spec,
    power_spec,
    simulate_frame,
    spec_from_dict,
    with_notes,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]

EVALUATION = {
    "classification": {
        "confusion_matrix.png",
        "roc_curve.png",
        "pr_curve.png",
        "feature_importance.png",
        "classification_report.json",
    },
    "regression": {"predicted_vs_actual.png", "residuals.json", "feature_importance.png"},
    "anomaly": {"score_histogram.png", "threshold.json"},
    "clustering": {"cluster_sizes.png", "clusters.json"},
    "text-classification": {"confusion_matrix.png", "classification_report.json"},
}


def prepare(home: TrainHome, data: dict[str, Any], frame: pd.DataFrame) -> Spec:
    """Write the spec into the shared home's spec folder and make its snapshot."""
    spec = spec_from_dict(data, home.specs)
    make_snapshot(spec, home.settings, frame)
    return spec


def client(home: TrainHome) -> Any:
    import mlflow

    from edgeml.train.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(home.settings))
    return mlflow.MlflowClient()


def aliases(home: TrainHome, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client(home).get_registered_model(name).aliases.items()}


#: integer hyper-parameters of the families
INT_PARAMS = {
    "n_estimators",
    "max_depth",
    "min_samples_leaf",
    "max_iter",
    "max_leaf_nodes",
    "hidden_units",
    "layers",
    "epochs",
    "batch_size",
    "n_clusters",
    "n_init",
    "ngram_max",
    "min_df",
}


def literal(text: str) -> Any:
    """A logged parameter back to its value: int, float, None or string."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text == "None":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def check_registered(home: TrainHome, spec: Spec, report: TrainReport) -> None:
    """What train() promises to leave in MLflow, and a model that works from raw inputs."""
    import mlflow

    c = client(home)
    version = c.get_model_version(spec.name, report.version)
    assert version.run_id == report.run_id
    assert version.tags["snapshot"] == report.snapshot
    assert version.tags["spec_fingerprint"] == spec.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", version.tags["git_commit"])
    assert version.tags["family"] == report.family
    assert version.tags["gates"] == ("passed" if report.verdict.passed else "failed")
    for name, value in report.holdout.items():
        assert float(version.tags[f"holdout_{name}"]) == pytest.approx(value, rel=1e-5)

    run = c.get_run(report.run_id)
    assert run.data.tags["snapshot"] == report.snapshot
    assert run.data.tags["task"] == spec.task
    assert run.data.params["family"] == report.family
    assert run.data.params["metric"] == spec.metric
    assert run.data.metrics[f"validation_{spec.metric}"] == pytest.approx(report.validation_score)
    for name, value in report.holdout.items():
        assert run.data.metrics[f"holdout_{name}"] == pytest.approx(value)

    evaluation = {Path(a.path).name for a in c.list_artifacts(report.run_id, "evaluation")}
    assert EVALUATION[spec.task] <= evaluation
    assert "metrics.json" in evaluation
    assert evaluation == set(report.artifacts)

    children = c.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{report.run_id}'"
    )
    assert len(children) == report.trials == spec.search.trials
    for child in children:
        family = child.data.params["family"]
        assert family in spec.search.families
        # the logged seed is the trial's: it derives from the search seed and the logged parameters
        config = {"family": family} | {
            f"{family}.{k}": literal(v) for k, v in child.data.params.items() if k not in ("family", "seed")
        }
        assert int(child.data.params["seed"]) == trial_seed(spec.search.seed, config), child.data.params
        for name in INT_PARAMS & set(child.data.params):  # not "30.0": that is another config, another seed
            assert re.fullmatch(r"\d+", child.data.params[name]), child.data.params
        assert child.data.tags["family"] == child.data.params["family"]
        assert spec.metric in child.data.metrics
        assert child.info.status == "FINISHED"
    best = [
        ch.data.params
        for ch in children
        if ch.data.params["family"] == report.family
        and ch.data.metrics[spec.metric] == pytest.approx(report.validation_score)
    ]
    expected = {"family": report.family, **{k: str(v) for k, v in report.params.items()}}
    assert expected in [{k: v for k, v in p.items() if k != "seed"} for p in best]

    uri = f"models:/{spec.name}/{report.version}"
    # declared by train(), pinned: what loads the model, and nothing the trainer merely had imported
    declared = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    names = {line.split("==")[0] for line in declared}
    assert {"mlflow", "edgeml", "scikit-learn", "skops", "pandas", "numpy"} <= names, declared
    assert ("torch" in names) == (report.family == "mlp"), declared
    assert "pytest" not in names
    model = mlflow.sklearn.load_model(uri)
    data = load_training_data(spec, home.settings, report.snapshot)
    raw = data.X_hold  # raw sensor values (timestamps as epoch seconds); row features live in the model
    assert len(model.predict(raw)) == len(raw)
    assert evaluate(spec.task, model, raw, data.y_hold) == pytest.approx(report.holdout)


def run_train(spec: Spec, home: TrainHome, **search: Any) -> TrainReport:
    if search:
        spec = spec.model_copy(update={"search": spec.search.model_copy(update=search)})
    messages: list[str] = []
    report = train(spec, home.settings, progress=messages.append)
    assert messages[0] == "loading and checking the training data"
    assert any(m.startswith("searching:") for m in messages)
    return report


# ------------------------------------------------------------------------------- tasks


def test_classification_end_to_end(train_home: TrainHome) -> None:
    spec = prepare(train_home, faults_spec(trials=3), simulate_frame())
    report = run_train(spec, train_home)
    assert report.version == "1"
    assert report.split == "time"
    assert report.sizes == {"train": 720, "validation": 240, "holdout": 240}
    assert report.trials == 3
    assert report.family in spec.search.families
    assert {"accuracy", "balanced_accuracy", "f1_macro", "log_loss", "roc_auc"} <= set(report.holdout)
    assert report.champion_version is None
    # the example's gate (f1_macro ≥ 0.7) holds on this data: the model becomes the challenger, and,
    # the first version to pass its gates, the champion
    assert report.verdict.passed, report.verdict
    assert report.aliases == ["challenger", "champion"]
    assert aliases(train_home, spec.name) == {"challenger": "1", "champion": "1"}
    check_registered(train_home, spec, report)


def test_regression_end_to_end(train_home: TrainHome) -> None:
    spec = prepare(train_home, power_spec(trials=2), simulate_frame())
    report = run_train(spec, train_home)
    assert report.split == "time"
    assert {"rmse", "mae", "r2"} <= set(report.holdout)
    assert report.holdout["r2"] > 0.5
    check_registered(train_home, spec, report)


def test_anomaly_end_to_end(train_home: TrainHome) -> None:
    spec = prepare(train_home, anomaly_spec(trials=2), simulate_frame())
    report = run_train(spec, train_home)
    assert report.family == "isolation_forest"
    assert {"anomaly_rate", "f1", "precision", "recall", "roc_auc"} <= set(report.holdout)
    check_registered(train_home, spec, report)
    threshold = client(train_home).download_artifacts(report.run_id, "evaluation/threshold.json")
    assert Path(threshold).is_file()


def test_clustering_end_to_end(train_home: TrainHome) -> None:
    spec = prepare(train_home, cluster_spec(trials=2), simulate_frame())
    report = run_train(spec, train_home)
    assert report.family == "kmeans"
    assert {"silhouette", "davies_bouldin"} <= set(report.holdout)
    assert -1 <= report.holdout["silhouette"] <= 1
    check_registered(train_home, spec, report)


def test_text_classification_end_to_end(train_home: TrainHome) -> None:
    spec = prepare(train_home, notes_spec(trials=2), with_notes(simulate_frame()))
    report = run_train(spec, train_home)
    assert report.split == "stratified"
    assert report.family == "tfidf_linear"
    assert report.holdout["f1_macro"] > 0.9  # each note names its fault
    check_registered(train_home, spec, report)
    import mlflow

    model = mlflow.sklearn.load_model(f"models:/{spec.name}/{report.version}")
    notes = pd.DataFrame({"note": ["bearing rattles high vibration", "seal leaking low pressure"]})
    assert list(model.predict(notes)) == ["bearing_wear", "pressure_leak"]


# ------------------------------------------------------------------------------- gates


def test_an_impossible_threshold_fails_and_is_not_aliased(train_home: TrainHome) -> None:
    spec = prepare(
        train_home, cheap_faults("faults-strict", thresholds={"f1_macro": {"min": 0.9999}}), simulate_frame()
    )
    report = run_train(spec, train_home)
    assert not report.verdict.passed
    (failure,) = report.verdict.failures
    assert failure.name == "f1_macro ≥ 0.9999"
    value = report.holdout["f1_macro"]
    assert failure.detail == f"f1_macro {value:.4f} is below 0.9999 by {0.9999 - value:.4f}"
    assert report.aliases == []
    assert aliases(train_home, spec.name) == {}
    assert client(train_home).get_model_version(spec.name, report.version).tags["gates"] == "failed"


def test_the_champion_moves_only_through_a_gate_on_the_same_evidence(
    train_home: TrainHome, train_env: TrainHome, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeml.cli import main
    from edgeml.store import store_from_settings
    from edgeml.train.registry import last_comparison

    store = store_from_settings(train_home.settings)
    spec = prepare(train_home, cheap_faults("faults-champion"), simulate_frame())
    first = run_train(spec, train_home)
    assert first.verdict.passed
    assert first.aliases == ["challenger", "champion"]  # the first version to pass is the champion
    assert aliases(train_home, spec.name) == {"challenger": "1", "champion": "1"}
    first_comparison = last_comparison(store, spec.name)
    assert first_comparison is not None
    assert (first_comparison.champion, first_comparison.passed) == (None, True)

    demanding = spec.model_copy(update={"gates": spec.gates.model_copy(update={"champion_margin": 0.5})})
    second = run_train(demanding, train_home)
    assert second.version == "2"
    assert second.champion_version == "1"
    assert second.holdout == pytest.approx(first.holdout)  # same data and seed: the same model
    assert second.champion_holdout == pytest.approx(first.holdout)
    assert not second.verdict.passed
    (failure,) = second.verdict.failures
    assert failure.name == "beats champion"
    f1, rows = first.holdout["f1_macro"], second.sizes["holdout"]
    assert failure.detail == (
        f"f1_macro {f1:.4f} vs champion v1 {f1:.4f} on {rows:,} holdout rows (margin 0.5, tolerance 0): "
        f"short by {0.5:.4f}"
    )
    assert second.aliases == []
    assert aliases(train_home, spec.name) == {"challenger": "1", "champion": "1"}
    kept = last_comparison(store, spec.name)
    assert kept is not None
    assert (kept.challenger, kept.champion, kept.passed) == ("2", "1", False)
    assert "kept from the canary" in kept.outcome
    assert kept.evidence == [
        {"name": "holdout", "rows": rows, "challenger": second.holdout, "champion": second.champion_holdout}
    ]

    level = spec.model_copy(update={"gates": spec.gates.model_copy(update={"champion_margin": 0.0})})
    third = run_train(level, train_home)
    assert third.version == "3"
    assert third.champion_version == "1"
    assert [(r.name, r.passed) for r in third.verdict.results] == [
        ("f1_macro threshold", True),
        ("beats champion", True),
    ]
    assert third.aliases == ["challenger", "champion"]
    assert aliases(train_home, spec.name) == {"challenger": "3", "champion": "3"}

    # by hand, still possible (and audited)
    assert main(["models", "promote", spec.name, first.version, "--reason", "rollback drill"]) == 0
    assert f"{spec.name}@champion → v{first.version}" in capsys.readouterr().out
    assert aliases(train_home, spec.name) == {"challenger": "3", "champion": "1"}


def test_field_labels_join_training_and_the_champion_comparison(train_home: TrainHome) -> None:
    from datetime import UTC, datetime

    from edgeml.ingest.labels import write_labels
    from edgeml.store import store_from_settings
    from edgeml.telemetry.schema import LabelledRow
    from edgeml.train.feedback import LABELLED_WEIGHT
    from edgeml.train.pipeline import input_layout

    store = store_from_settings(train_home.settings)
    data = cheap_faults("faults-field")
    data["features"]["window"] = []  # the rows a device logs are its inputs: no windows here
    spec = prepare(train_home, data, simulate_frame())
    first = run_train(spec, train_home)
    assert first.labelled == {}
    # the field labels 120 rows it predicted: readings of another day, their true classes
    field = simulate_frame(seed=21).head(120)
    names = input_layout(spec).columns
    now = datetime.now(UTC)
    rows = [
        LabelledRow(
            prediction_id=f"p{i}",
            model=spec.name,
            version=1,
            device_id="dev-1",
            predicted_at=now,
            inputs={n: (row[n].timestamp() if hasattr(row[n], "timestamp") else row[n]) for n in names},
            prediction=None,
            label=str(row[spec.target]),
            labelled_at=now,
        )
        for i, (_, row) in enumerate(field.iterrows())
    ]
    write_labels(store, spec.name, rows)
    second = run_train(spec, train_home)
    used = second.labelled
    assert 100 < used["rows"] <= 120  # a class training never saw is left out
    assert used["trained"] + used["held_out"] == used["rows"]
    assert used["weight"] == LABELLED_WEIGHT
    assert second.sizes["train"] == first.sizes["train"] + used["trained"] * LABELLED_WEIGHT
    (holdout, on_field) = second.evidence
    assert (holdout.name, on_field.name, on_field.rows) == ("holdout", "field labels", used["held_out"])
    assert "beats champion on field labels" in [r.name for r in second.verdict.results]
