"""Drift on real data with known drift: NannyML's synthetic car-loan dataset.

The reference statistics are built with the bundle builder's own binning and calibration
(edgeml.bundle.reference, edgeml.bundle.build._calibration) on the reference period, and
telemetry batches are counted from analysis rows with the agent's binning functions, so the
only thing under test is the central node's pooling, distances and thresholds.
"""

from __future__ import annotations

import uuid
import warnings
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeml._thirdparty import import_nannyml
from edgeml.bundle.manifest import Golden, Histogram, InputField, Manifest, Outputs, Reference
from edgeml.bundle.reference import (
    PROBABILITY_EDGES,
    bin_counts,
    category_counts,
    category_histogram,
    numeric_histogram,
)
from edgeml.central.drift import (
    DISTANCES,
    PREDICTIONS,
    DriftConfig,
    ThresholdCache,
    compute_drift,
    pool,
    pool_window,
    publish_drift,
)
from edgeml.observability import REGISTRY
from edgeml.telemetry.schema import LATENCY_EDGES, CalibratedSums, FeatureTelemetry, SampleRow, TelemetryBatch

NUMERIC = ["car_value", "debt_to_income_ratio", "loan_length", "driver_tenure"]
CATEGORICAL = ["salary_range", "size_of_downpayment", "repaid_loan_on_prev_car"]
FEATURES = NUMERIC + CATEGORICAL
LABELS = ["0", "1"]
CHUNK = 5000  # NannyML's chunks and ours: 10 reference-free analysis chunks, drift from chunk 5
T0 = datetime(2025, 3, 1, tzinfo=UTC)


@cache
def car_loan() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, analysis with targets), with the predicted label the agent would count."""
    nml = import_nannyml()
    with warnings.catch_warnings():
        # NannyML 0.13 reads its bundled CSVs through importlib.resources.path (deprecated)
        warnings.filterwarnings("ignore", "path is deprecated", DeprecationWarning)
        reference, analysis, targets = nml.load_synthetic_car_loan_dataset()
    analysis = analysis.merge(targets, on="id")
    for frame in (reference, analysis):
        # the agent predicts the argmax of the probabilities
        frame["prediction"] = np.where(frame["y_pred_proba"] > 0.5, "1", "0")
        frame["truth"] = frame["repaid"].astype(int).astype(str)
    return reference, analysis


def probabilities(rows: pd.DataFrame) -> np.ndarray:
    p = rows["y_pred_proba"].to_numpy(np.float64)
    return np.column_stack([1 - p, p])


def make_manifest(rows: pd.DataFrame, version: int = 1) -> Manifest:
    """A manifest whose reference is ``rows``, built as the bundle builder builds it."""
    from edgeml.bundle.build import _calibration

    proba = probabilities(rows)
    features: dict[str, Any] = {n: numeric_histogram(rows[n].to_numpy(np.float64)) for n in NUMERIC}
    features |= {n: category_histogram(rows[n].tolist()) for n in CATEGORICAL}
    reference = Reference(
        rows=len(rows),
        source="car-loan reference period",
        features=features,
        scores={
            f"probability:{lb}": numeric_histogram(proba[:, k], PROBABILITY_EDGES)
            for k, lb in enumerate(LABELS)
        },
        predictions={str(k): int(v) for k, v in rows["prediction"].value_counts().items()},
        calibration=_calibration(proba, rows["truth"].to_numpy(), LABELS),
    )
    return Manifest(
        model="car-loan",
        version=version,
        profile="x86-64-generic",
        runtime="onnxruntime",
        precision="fp32",
        created="2025-01-01T00:00:00Z",
        expires="2026-01-01T00:00:00Z",
        files=[],
        inputs=[InputField(name=n, kind="numeric", dtype="float64") for n in NUMERIC]
        + [InputField(name=n, kind="categorical", dtype="string") for n in CATEGORICAL],
        outputs=Outputs(task="classification", names=["label", "probabilities"], labels=LABELS),
        reference=reference,
        golden=Golden(inputs=[], outputs={}, tolerance=0.0),
        metrics={"holdout_accuracy": float((rows["prediction"] == rows["truth"]).mean())},
        export={},
        compliance="none",
        mlflow_run_id="run",
        snapshot="snap",
        key_id="key",
    )


def make_batch(
    rows: pd.DataFrame,
    manifest: Manifest,
    *,
    start: datetime = T0,
    group: str | None = "line-1",
    device: str = "dev-1",
    sample: int = 0,
) -> TelemetryBatch:
    """What a device serving ``manifest`` would report for ``rows`` (the agent's counting)."""
    ref = manifest.reference
    features = {}
    for name in NUMERIC:
        edges = ref.features[name].edges  # type: ignore[union-attr]
        counts, missing = bin_counts(edges, rows[name].to_numpy(np.float64))
        features[name] = FeatureTelemetry(edges=edges, counts=counts, missing=missing)
    for name in CATEGORICAL:
        values = ref.features[name].values  # type: ignore[union-attr]
        counts, missing = category_counts(values, rows[name].tolist())
        features[name] = FeatureTelemetry(values=values, counts=counts, missing=missing)
    proba = probabilities(rows)
    winner = proba.argmax(axis=1)
    cal = ref.calibration
    assert cal is not None
    calibrated = np.column_stack(
        [np.interp(proba[:, k], cal.grid, cal.values[lb]) for k, lb in enumerate(LABELS)]
    )
    picked = rows.head(sample)
    return TelemetryBatch(
        device_id=device,
        batch_id=uuid.uuid4().hex,
        model=manifest.model,
        version=manifest.version,
        profile=manifest.profile,
        group=group,
        window_start=start,
        window_end=start + timedelta(seconds=59),
        rows=len(rows),
        requests=len(rows),
        features=features,
        predictions={LABELS[k]: int(c) for k, c in enumerate(np.bincount(winner, minlength=2)) if c},
        scores={
            f"probability:{lb}": Histogram(
                edges=PROBABILITY_EDGES, counts=bin_counts(PROBABILITY_EDGES, proba[:, k])[0]
            )
            for k, lb in enumerate(LABELS)
        },
        calibration=CalibratedSums(
            sums={lb: float(calibrated[:, k].sum()) for k, lb in enumerate(LABELS)},
            expected_correct=float(calibrated[np.arange(len(winner)), winner].sum()),
            rows=len(winner),
        ),
        latency=Histogram(edges=LATENCY_EDGES, counts=[0] * (len(LATENCY_EDGES) + 1)),
        sample=[
            SampleRow(inputs={n: rec[n] for n in FEATURES}, prediction=rec["prediction"])
            for rec in picked.to_dict("records")
        ],
    )


def chunk_windows(manifest: Manifest, analysis: pd.DataFrame, batch_rows: int = 500) -> list[Any]:
    """Each analysis chunk as one pooled window of several devices' batches."""
    out = []
    for i in range(len(analysis) // CHUNK):
        chunk = analysis.iloc[i * CHUNK : (i + 1) * CHUNK]
        batches = [
            make_batch(chunk.iloc[j : j + batch_rows], manifest, device=f"dev-{j // batch_rows % 3}")
            for j in range(0, CHUNK, batch_rows)
        ]
        out.append(pool_window(batches))
    return out


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return car_loan()


@pytest.fixture(scope="module")
def manifest(data: tuple[pd.DataFrame, pd.DataFrame]) -> Manifest:
    return make_manifest(data[0])


# --- distances -------------------------------------------------------------------------

counts = st.lists(st.integers(0, 10_000), min_size=2, max_size=25).filter(lambda c: sum(c) > 0)
pairs = st.integers(2, 25).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(lambda c: sum(c) > 0),
        st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(lambda c: sum(c) > 0),
    )
)


@settings(max_examples=200, deadline=None)
@given(pairs)
def test_distances_are_non_negative_symmetric_and_bounded(pair: tuple[list[int], list[int]]) -> None:
    p, q = np.array(pair[0]), np.array(pair[1])
    for method, distance in DISTANCES.items():
        forward, backward = float(distance(p, q)), float(distance(q, p))
        assert forward >= 0, method
        assert forward == pytest.approx(backward, rel=1e-9, abs=1e-12), method
    assert float(DISTANCES["js"](p, q)) <= 1.0
    assert float(DISTANCES["hellinger"](p, q)) <= 1.0


@settings(max_examples=200, deadline=None)
@given(counts, st.integers(1, 50))
def test_distances_are_zero_for_the_same_distribution(c: list[int], scale: int) -> None:
    p = np.array(c)
    for method, distance in DISTANCES.items():
        assert float(distance(p, p)) == pytest.approx(0.0, abs=1e-9), method
        # the same proportions from a bigger sample: still no distance
        assert float(distance(p, p * scale)) == pytest.approx(0.0, abs=1e-9), method


def test_distances_vectorise_over_draws() -> None:
    ref = np.array([50, 30, 20])
    draws = np.array([[50, 30, 20], [20, 30, 50], [0, 0, 100]])
    for distance in DISTANCES.values():
        batch = distance(ref, draws)
        assert batch.shape == (3,)
        assert batch.tolist() == pytest.approx([float(distance(ref, d)) for d in draws])
        assert batch[0] == pytest.approx(0.0, abs=1e-12)
        assert batch[1] < batch[2]


def test_psi_stays_finite_on_empty_bins() -> None:
    assert np.isfinite(DISTANCES["psi"](np.array([100, 0]), np.array([0, 100])))


# --- thresholds ------------------------------------------------------------------------


def test_thresholds_come_from_the_reference_and_shrink_with_the_window(manifest: Manifest) -> None:
    hist = manifest.reference.features["car_value"]
    reference = [*hist.counts, hist.missing]
    cache = ThresholdCache()
    small = cache.thresholds(reference, 100, ("js", "psi", "hellinger", "chi2"))
    large = cache.thresholds(reference, 10_000, ("js", "psi", "hellinger", "chi2"))
    for method in ("js", "psi", "hellinger"):
        assert small[method] > 2 * large[method], method  # ~ 1/√n: 10x fewer rows, ~3x the threshold
    # chi2 on k bins does not shrink: its no-drift quantile stays near the χ²(k-1) one
    assert 10 < large["chi2"] < 40
    # memoised, and the same in a fresh cache (seeded by the question)
    assert cache.thresholds(reference, 100, ("js", "psi", "hellinger", "chi2")) is small
    assert ThresholdCache().thresholds(reference, 100, ("js", "psi", "hellinger", "chi2")) == small
    # nearby window sizes share one bootstrap, rounded down (the more cautious threshold)
    assert cache.thresholds(reference, 105, ("js", "psi", "hellinger", "chi2")) is small


def test_few_false_alarms_on_held_out_reference_windows(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference = data[0]
    built_on, held_out = reference.iloc[:25_000], reference.iloc[25_000:]
    manifest = make_manifest(built_on)
    cache = ThresholdCache()
    tested = breached = windows = noisy_windows = 0
    for size in (200, 1000, 5000):
        for start in range(0, len(held_out), size):
            report = compute_drift(
                pool_window([make_batch(held_out.iloc[start : start + size], manifest)]),
                manifest,
                cache=cache,
            )
            tested += len(report.features)
            breached += len(report.breaches)
            windows += 1
            noisy_windows += bool(report.breaches)
    assert windows == 125 + 25 + 5
    assert tested == windows * (len(FEATURES) + 3)  # 7 inputs, 2 score histograms, the predicted labels
    assert breached / tested <= 0.01
    assert noisy_windows / windows <= 0.08


def test_drifted_chunks_alarm_where_nannyml_flags_them(
    data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest
) -> None:
    reference, analysis = data
    nml = import_nannyml()
    calc = nml.UnivariateDriftCalculator(
        column_names=FEATURES,
        treat_as_categorical=CATEGORICAL,
        chunk_size=CHUNK,
        continuous_methods=["jensen_shannon"],
        categorical_methods=["chi2"],
    )
    calc.fit(reference)
    theirs = calc.calculate(analysis).filter(period="analysis").to_df()
    cache = ThresholdCache()
    reports = [compute_drift(w, manifest, cache=cache) for w in chunk_windows(manifest, analysis)]
    assert len(reports) == 10

    agree = total = 0
    for i, report in enumerate(reports):
        ours = {f.feature: f.breached for f in report.features}
        for name in FEATURES:
            method = "chi2" if name in CATEGORICAL else "jensen_shannon"
            total += 1
            agree += ours[name] == bool(theirs[(name, method, "alert")].iloc[i])
    assert agree / total >= 0.9

    # chunks 5-9 are the drifted ones (NannyML flags 4 inputs in each): we flag every one of
    # them on those inputs, and the model's scores moved with them
    clear = [
        n
        for n in FEATURES
        if all(
            bool(theirs[(n, m, "alert")].iloc[i])
            for i in range(5, 10)
            for m in ("chi2", "jensen_shannon")
            if (n, m, "alert") in theirs
        )
    ]
    assert set(clear) == {"car_value", "loan_length", "salary_range", "repaid_loan_on_prev_car"}
    for report in reports[5:]:
        flagged = {f.feature for f in report.breaches}
        assert set(clear) <= flagged
        assert {"score:probability:0", "score:probability:1"} <= flagged
    for report in reports[:5]:
        flagged = {f.feature for f in report.breaches}
        assert not flagged & {*clear, "score:probability:0", "score:probability:1"}
    # every result names what it compared: the reference's bins plus missing
    car = next(f for f in reports[7].features if f.feature == "car_value")
    assert len(car.counts) == len(manifest.reference.features["car_value"].counts) + 1
    assert car.rows == CHUNK
    assert car.method == "js"
    assert {s.method for s in car.scores} == {"js", "psi", "hellinger"}
    salary = next(f for f in reports[7].features if f.feature == "salary_range")
    assert salary.method == "chi2"
    chi2 = next(s for s in salary.scores if s.method == "chi2")
    assert chi2.p_value is not None
    assert chi2.p_value < 1e-6


# --- pooling and the rest ----------------------------------------------------------------


def test_pool_groups_by_version_group_and_window(
    data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest
) -> None:
    rows = data[1].iloc[:1200]
    other = make_manifest(data[0].iloc[:5000], version=2)
    batches = [
        make_batch(
            rows.iloc[i * 100 : (i + 1) * 100], manifest, start=T0 + timedelta(seconds=30 * i), group=g
        )
        for i in range(12)
        for g in ("line-1", "line-2")
    ] + [make_batch(rows.iloc[:100], other, start=T0)]
    windows = pool(batches, timedelta(minutes=1))
    keys = [(w.version, w.group, w.start) for w in windows]
    assert keys == sorted(keys, key=lambda k: (k[0], k[1] or "", k[2]))
    assert len(windows) == 2 * 6 + 1
    first = windows[0]
    assert (first.version, first.group, first.start, first.end) == (
        1,
        "line-1",
        T0,
        T0 + timedelta(minutes=1),
    )
    assert first.batches == 2
    assert first.rows == 200
    # counts add up: pooling two batches is counting their rows at once
    whole = make_batch(rows.iloc[:200], manifest)
    assert first.features == whole.features
    assert first.scores == whole.scores
    assert first.predictions == whole.predictions
    assert first.calibration is not None
    assert whole.calibration is not None
    assert first.calibration.expected_correct == pytest.approx(whole.calibration.expected_correct)

    with pytest.raises(ValueError, match="cannot pool"):
        pool_window([batches[0], batches[-1]])
    with pytest.raises(ValueError, match="no batches"):
        pool_window([])
    bad = batches[2].model_copy(
        update={"features": batches[2].features | {"car_value": FeatureTelemetry(edges=[1.0], counts=[1, 2])}}
    )
    with pytest.raises(ValueError, match="car_value"):
        pool_window([batches[0], bad])


def test_a_rising_missing_rate_is_drift(data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest) -> None:
    rows = data[1].iloc[:2000].copy()
    rows.loc[rows.index[::4], "debt_to_income_ratio"] = np.nan  # a sensor failing a quarter of the time
    report = compute_drift(pool_window([make_batch(rows, manifest)]), manifest)
    dti = next(f for f in report.features if f.feature == "debt_to_income_ratio")
    assert dti.breached
    assert dti.missing == 500
    assert dti.counts[-1] == 500


def test_small_windows_are_not_tested_and_versions_must_match(
    data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest
) -> None:
    tiny = pool_window([make_batch(data[1].iloc[:10], manifest)])
    assert compute_drift(tiny, manifest).features == []
    assert compute_drift(tiny, manifest, cache=ThresholdCache(DriftConfig(min_rows=5))).features != []
    with pytest.raises(ValueError, match="v1"):
        compute_drift(tiny, make_manifest(data[0].iloc[:5000], version=2))


def test_publish_drift_sets_the_gauges(data: tuple[pd.DataFrame, pd.DataFrame], manifest: Manifest) -> None:
    window = pool_window([make_batch(data[1].iloc[-CHUNK:], manifest, group="gauges")])
    report = compute_drift(window, manifest)
    publish_drift(report)

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(
            name, {"model": "car-loan", "version": "1", "group": "gauges", **labels}
        )

    car = next(f for f in report.features if f.feature == "car_value")
    assert sample("edgeml_drift_score_ratio", feature="car_value", method="hellinger") == pytest.approx(
        next(s.value for s in car.scores if s.method == "hellinger")
    )
    assert sample("edgeml_drift_breach_info", feature="car_value") == 1.0
    assert sample("edgeml_drift_breach_info", feature="driver_tenure") == 0.0
    assert sample("edgeml_drift_breach_info", feature=PREDICTIONS) is not None
