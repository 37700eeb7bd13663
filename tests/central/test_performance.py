"""Label-free accuracy on NannyML's car-loan data, checked against realized accuracy and NannyML."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from edgeml._thirdparty import import_nannyml
from edgeml.bundle.manifest import Golden, InputField, Manifest, Outputs, Reference
from edgeml.central.drift import pool_window
from edgeml.central.performance import (
    estimate_accuracy,
    nannyml_analysis,
    probability_column,
    publish_accuracy,
    realized_accuracy,
    sample_frame,
)
from edgeml.observability import REGISTRY
from edgeml.telemetry.schema import PooledWindow

from .test_drift import (
    CATEGORICAL,
    CHUNK,
    FEATURES,
    car_loan,
    chunk_windows,
    make_batch,
    make_manifest,
    probabilities,
)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return car_loan()


@pytest.fixture(scope="module")
def manifest(data: tuple[pd.DataFrame, pd.DataFrame]) -> Manifest:
    return make_manifest(data[0])


@pytest.fixture(scope="module")
def windows(data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest) -> list[PooledWindow]:
    return chunk_windows(manifest, data[1])


def _realized(rows: pd.DataFrame) -> float:
    return float((rows["prediction"] == rows["truth"]).mean())


def test_estimate_from_calibrated_sums_tracks_realized_accuracy_and_nannyml(
    data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest, windows: list[PooledWindow]
) -> None:
    reference, analysis = data
    nml = import_nannyml()
    # NannyML's CBPE on the raw rows, given the same predicted labels the agent counts
    cbpe = nml.CBPE(
        y_pred_proba="y_pred_proba",
        y_pred="y_pred",
        y_true="repaid",
        problem_type="classification_binary",
        metrics=["accuracy"],
        chunk_size=CHUNK,
    )
    cbpe.fit(reference.assign(y_pred=reference["prediction"].astype(int)))
    theirs = (
        cbpe.estimate(analysis.assign(y_pred=analysis["prediction"].astype(int)))
        .filter(period="analysis")
        .to_df()
    )

    inside = 0
    for i, window in enumerate(windows):
        estimate = estimate_accuracy(window, manifest)
        assert estimate is not None
        realized = _realized(analysis.iloc[i * CHUNK : (i + 1) * CHUNK])
        assert estimate.estimated == pytest.approx(realized, abs=0.01)
        low = theirs[("accuracy", "lower_confidence_boundary")].iloc[i]
        high = theirs[("accuracy", "upper_confidence_boundary")].iloc[i]
        inside += low <= estimate.estimated <= high
        # the accuracy drops by about 3 points with the drift from chunk 5: that, and only that, alarms
        assert estimate.alarm == (i >= 5), (i, estimate.estimated, estimate.reference)
        assert estimate.alarm == bool(theirs[("accuracy", "alert")].iloc[i])
    assert inside >= 9


def test_binary_precision_and_recall_from_the_sums(
    data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest, windows: list[PooledWindow]
) -> None:
    analysis = data[1]
    for i in (1, 7):
        estimate = estimate_accuracy(windows[i], manifest)
        assert estimate is not None
        rows = analysis.iloc[i * CHUNK : (i + 1) * CHUNK]
        for cls in estimate.classes:
            predicted, truth = rows["prediction"] == cls.label, rows["truth"] == cls.label
            assert cls.predicted == int(predicted.sum())
            assert cls.expected_actual == pytest.approx(truth.sum(), rel=0.03)
            assert cls.expected_precision == pytest.approx(
                (predicted & truth).sum() / predicted.sum(), abs=0.02
            )
            assert cls.expected_recall == pytest.approx((predicted & truth).sum() / truth.sum(), abs=0.02)


def test_no_estimate_without_sums_and_no_alarm_on_few_rows(
    data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest
) -> None:
    drifted = data[1].iloc[-20:]
    window = pool_window([make_batch(drifted, manifest)])
    few = estimate_accuracy(window, manifest, tolerance=0.0)
    assert few is not None
    assert few.rows == 20
    assert not few.alarm
    window.calibration = None
    assert estimate_accuracy(window, manifest) is None


def test_realized_accuracy_from_feedback_pairs() -> None:
    result = realized_accuracy([("1", 1), ("0", "0"), ("1", 0.0), ("yes", "yes"), ("2", "2.0")])
    assert result is not None
    assert (result.rows, result.correct, result.accuracy) == (5, 4, 0.8)
    assert realized_accuracy([]) is None


def test_publish_accuracy_sets_both_gauges(manifest: Manifest, windows: list[PooledWindow]) -> None:
    estimate = estimate_accuracy(windows[0], manifest)
    realized = realized_accuracy([("1", "1"), ("1", "0")])
    publish_accuracy("car-loan", 1, "perf", estimate=estimate, realized=realized)
    labels = {"model": "car-loan", "version": "1", "group": "perf"}
    assert estimate is not None
    assert REGISTRY.get_sample_value("edgeml_estimated_accuracy_ratio", labels) == estimate.estimated
    assert REGISTRY.get_sample_value("edgeml_realized_accuracy_ratio", labels) == 0.5


# --- NannyML on row samples --------------------------------------------------------------


def _frame(rows: pd.DataFrame, *, target: bool) -> pd.DataFrame:
    """The documented frame: inputs, prediction, probability:<label>, target."""
    proba = probabilities(rows)
    out = rows[FEATURES].copy()
    out["prediction"] = rows["prediction"]
    for k, label in enumerate(["0", "1"]):
        out[probability_column(label)] = proba[:, k]
    if target:
        out["target"] = rows["truth"]
    return out


@pytest.mark.slow
def test_nannyml_on_pooled_row_samples(data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest) -> None:
    reference, analysis = data
    ref_frame = _frame(reference, target=True)
    for i, drifted in ((1, False), (7, True)):
        chunk = analysis.iloc[i * CHUNK : (i + 1) * CHUNK]
        # ten devices' batches, 100 sampled rows each, pooled as the central node pools them
        window = pool_window(
            [make_batch(chunk.iloc[j : j + 500], manifest, sample=100) for j in range(0, CHUNK, 500)]
        )
        sample = sample_frame(window.sample)
        assert len(sample) == 1000
        assert set(sample.columns) == {*FEATURES, "prediction"}
        without = nannyml_analysis(ref_frame, sample, manifest)
        assert without.performance is None
        assert without.skipped is not None
        assert "probabilities" in without.skipped
        # the caller scores the sampled rows (the sample carries no probabilities) and asks again
        rows = chunk.iloc[[j + k for j in range(0, CHUNK, 500) for k in range(100)]]
        report = nannyml_analysis(ref_frame, _frame(rows, target=False), manifest)
        flagged = {d.feature for d in report.drift if d.alert}
        clear = {"car_value", "loan_length", "salary_range", "repaid_loan_on_prev_car"}
        if drifted:
            assert clear <= flagged
        else:  # NannyML's chi2 alarms at p < 0.05, so one category may flag by chance
            assert not flagged & {"car_value", "loan_length"}
            assert len(flagged) <= 1
        assert {d.method for d in report.drift if d.feature in CATEGORICAL} == {"chi2"}
        assert report.performance is not None
        assert report.performance.estimator == "CBPE"
        assert report.performance.lower is not None
        assert report.performance.upper is not None
        assert report.performance.lower <= _realized(rows) <= report.performance.upper
        assert report.performance.alert == drifted


def test_nannyml_refuses_what_it_cannot_do(
    data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest
) -> None:
    reference = _frame(data[0].iloc[:1000], target=True)
    sample = _frame(data[1].iloc[:100], target=False)
    with pytest.raises(ValueError, match="compliance 'gdpr'"):
        nannyml_analysis(reference, sample, manifest.model_copy(update={"compliance": "gdpr"}))
    with pytest.raises(ValueError, match="lacks the columns target"):
        nannyml_analysis(reference.drop(columns="target"), sample, manifest)
    with pytest.raises(ValueError, match="twice"):
        nannyml_analysis(reference.iloc[:150], sample, manifest)


@pytest.mark.slow
def test_dle_estimates_regression_error_on_a_sample() -> None:
    nml = import_nannyml()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "path is deprecated", DeprecationWarning)
        reference, analysis, targets = nml.load_synthetic_car_price_dataset()
    analysis = analysis.merge(targets, on="id")
    numeric = ["car_age", "km_driven", "price_new", "accident_count", "door_count"]
    categorical = ["fuel", "transmission"]
    manifest = Manifest(
        model="car-price",
        version=1,
        profile="x86-64-generic",
        runtime="onnxruntime",
        precision="fp32",
        created="2025-01-01T00:00:00Z",
        expires="2026-01-01T00:00:00Z",
        files=[],
        inputs=[InputField(name=n, kind="numeric", dtype="float64") for n in numeric]
        + [InputField(name=n, kind="categorical", dtype="string") for n in categorical],
        outputs=Outputs(task="regression", names=["value"]),
        reference=Reference(rows=len(reference), source="car-price reference", features={}, scores={}),
        golden=Golden(inputs=[], outputs={}, tolerance=0.0),
        metrics={},
        export={},
        compliance="none",
        mlflow_run_id="run",
        snapshot="snap",
        key_id="key",
    )
    ref_frame = reference[numeric + categorical].assign(
        prediction=reference["y_pred"], target=reference["y_true"]
    )
    rng = np.random.default_rng(7)
    # the last 6000 analysis rows drifted; a 1000-row sample of them
    rows = analysis.iloc[-6000:].iloc[rng.choice(6000, 1000, replace=False)]
    report = nannyml_analysis(
        ref_frame, rows[numeric + categorical].assign(prediction=rows["y_pred"]), manifest
    )
    assert report.performance is not None
    assert report.performance.estimator == "DLE"
    realized = float((rows["y_pred"] - rows["y_true"]).abs().mean())
    assert report.performance.lower is not None
    assert report.performance.upper is not None
    assert report.performance.lower <= realized <= report.performance.upper
