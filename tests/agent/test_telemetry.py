"""Telemetry windows count what the bundle builder counted, on the same bins, and nothing private."""

from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundle.conftest import make_manifest, write_model
from edgeml.agent import model as model_module
from edgeml.agent import telemetry
from edgeml.agent.inputs import InputError, RowColumns, Schema
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.telemetry import TelemetryWindow
from edgeml.bundle.build import _entry
from edgeml.bundle.manifest import Calibration, CategoryCounts, Histogram, InputField, Manifest, Outputs
from edgeml.bundle.reference import PROBABILITY_EDGES, bin_counts, category_counts
from edgeml.telemetry.schema import LATENCY_EDGES, TelemetryBatch

LABELS = ["idle", "run", "fault"]
GRID = [0.0, 0.25, 0.5, 0.75, 1.0]
CURVES = {
    "idle": [0.0, 0.1, 0.45, 0.8, 0.95],
    "run": [0.05, 0.3, 0.5, 0.7, 1.0],
    "fault": [0.0, 0.2, 0.6, 0.9, 1.0],
}


def write_classifier(folder: Path) -> list[Path]:
    """probabilities = softmax([a, b] @ W), label = argmax; the string inputs reach the graph unused."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weights = np.array([[1.0, -0.5, 0.2], [-0.3, 0.8, 0.6]])
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["a", "b"], ["x"], axis=1),
            helper.make_node("MatMul", ["x", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "edgeml",
        [
            helper.make_tensor_value_info("a", TensorProto.DOUBLE, [None, 1]),
            helper.make_tensor_value_info("b", TensorProto.DOUBLE, [None, 1]),
            *(
                helper.make_tensor_value_info(n, TensorProto.STRING, [None, 1])
                for n in ("site", "note", "email")
            ),
        ],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, 3]),
        ],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(folder / "model.onnx"))
    return [folder / "model.onnx"]


def classifier_manifest(files: list[Path], version: int = 1, compliance: str = "none") -> Manifest:
    base = make_manifest(files, version)
    reference = base.reference.model_copy(
        update={
            "features": {
                "a": Histogram(edges=[-1.0, 0.0, 1.0], counts=[0, 0, 0, 0]),
                "b": Histogram(edges=[0.5], counts=[0, 0]),
                "site": CategoryCounts(values=["north", "south"], counts=[0, 0, 0]),
                "note": Histogram(edges=[5.0, 20.0], counts=[0, 0, 0]),
                "email": Histogram(edges=[10.0], counts=[0, 0]),
            },
            "scores": {
                f"probability:{lb}": Histogram(edges=PROBABILITY_EDGES, counts=[0] * 10) for lb in LABELS
            },
            "calibration": Calibration(grid=GRID, values=CURVES),
        }
    )
    return base.model_copy(
        update={
            "files": [_entry(p) for p in files],
            "inputs": [
                InputField(name="a", kind="numeric", dtype="float64", min=-10, max=10),
                InputField(name="b", kind="numeric", dtype="float64"),
                InputField(name="site", kind="categorical", dtype="string", values=["north", "south"]),
                InputField(name="note", kind="text", dtype="string"),
                InputField(name="email", kind="text", dtype="string", pii=True),
            ],
            "outputs": Outputs(task="classification", names=["label", "probabilities"], labels=LABELS),
            "reference": reference,
            "compliance": compliance,
        }
    )


@pytest.fixture(scope="module")
def classifier_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_classifier(tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="module")
def classifier(classifier_files: list[Path]) -> LoadedModel:
    return LoadedModel(classifier_files[0].parent, classifier_manifest(classifier_files))


def make_rows(n: int, seed: int) -> dict[str, list[Any]]:
    """Inputs with missing values, values out of range, unknown categories and e-mail addresses."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 4, n)
    a[rng.random(n) < 0.1] = np.nan
    b = rng.normal(0.5, 1, n).tolist()
    for i in np.flatnonzero(rng.random(n) < 0.1):
        b[i] = None
    sites = [None, "north", "south", "east"]
    words = ["ok", "pump vibrates", "bearing noise reported at night shift", ""]
    return {
        "a": a.tolist(),
        "b": b,
        "site": [sites[i] for i in rng.integers(0, 4, n)],
        "note": [None if i == 4 else words[i] for i in rng.integers(0, 5, n)],
        "email": [f"operator{i}@plant.example" for i in range(n)],
    }


def chunks(columns: dict[str, list[Any]], sizes: list[int]) -> list[dict[str, list[Any]]]:
    out, start = [], 0
    for size in sizes:
        out.append({k: v[start : start + size] for k, v in columns.items()})
        start += size
    return out


_holders: weakref.WeakKeyDictionary[TelemetryWindow, ModelHolder] = weakref.WeakKeyDictionary()


def holder_of(window: TelemetryWindow) -> ModelHolder:
    """The holder that hands requests to ``window``, as the serving path does (one per window)."""
    holder = _holders.get(window)
    if holder is None:
        holder = _holders[window] = ModelHolder()
        holder.watch(window)
    return holder


def observe(
    window: TelemetryWindow, model: LoadedModel, columns: Any, outputs: Any, latency_s: float
) -> None:
    holder_of(window).observe(model, columns, outputs, latency_s)


def observe_error(window: TelemetryWindow, model: LoadedModel | None, kind: str) -> None:
    holder_of(window).observe_error(model, kind)


def feed(
    window: TelemetryWindow, model: LoadedModel, columns: dict[str, list[Any]], sizes: list[int]
) -> list[dict[str, np.ndarray]]:
    """Predict chunk by chunk with the real runtime, observing each as a request; the outputs."""
    outputs = []
    for part in chunks(columns, sizes):
        start = time.perf_counter()
        out = model.predict(part)
        observe(window, model, part, out, time.perf_counter() - start)
        outputs.append(out)
    return outputs


def split_sizes(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = []
    while n > 0:
        sizes.append(min(n, int(rng.integers(1, 64))))
        n -= sizes[-1]
    return sizes


def only(batches: list[TelemetryBatch]) -> TelemetryBatch:
    assert len(batches) == 1, batches
    return batches[0]


def test_counts_equal_the_reference_binning(classifier: LoadedModel) -> None:
    rows = make_rows(2000, seed=1)
    window = TelemetryWindow("dev-1", group="line-a", window_rows=100_000, seed=0)
    sizes = split_sizes(2000, seed=2)
    outputs = feed(window, classifier, rows, sizes)
    batch = only(window.flush())
    manifest = classifier.manifest
    ref = manifest.reference.features

    assert (batch.device_id, batch.group, batch.model, batch.version, batch.profile) == (
        "dev-1",
        "line-a",
        manifest.model,
        manifest.version,
        manifest.profile,
    )
    assert (batch.rows, batch.requests) == (2000, len(sizes))
    a = np.array(rows["a"])
    for name in ("a", "b"):
        edges = ref[name].edges  # type: ignore[union-attr]
        counts, missing = bin_counts(edges, np.array(rows[name], dtype=np.float64))
        assert (batch.features[name].counts, batch.features[name].missing) == (counts, missing)
        assert batch.features[name].edges == edges
    assert batch.features["a"].out_of_range == int(np.sum(np.abs(a[~np.isnan(a)]) > 10)) > 0
    assert batch.features["b"].out_of_range == 0

    counts, missing = category_counts(["north", "south"], rows["site"])
    site = batch.features["site"]
    assert (site.values, site.counts, site.missing) == (["north", "south"], counts, missing)
    assert site.out_of_range == rows["site"].count("east") > 0

    lengths = np.array([len(v or "") for v in rows["note"]], dtype=np.float64)  # as fillna("").str.len()
    note = batch.features["note"]
    assert note.counts == bin_counts([5.0, 20.0], lengths)[0]
    assert note.missing == rows["note"].count(None) > 0

    proba = np.concatenate([o["probabilities"] for o in outputs])
    assert np.isnan(proba).any()  # NaN in a: the test model cannot impute
    assert set(batch.scores) == set(manifest.reference.scores)
    for k, label in enumerate(LABELS):
        hist = batch.scores[f"probability:{label}"]
        assert hist.edges == PROBABILITY_EDGES
        assert (hist.counts, hist.missing) == bin_counts(PROBABILITY_EDGES, proba[:, k])
    finite = np.isfinite(proba).all(axis=1)
    labels_out = np.concatenate([o["label"] for o in outputs])
    proba = proba[finite]
    winner = proba.argmax(axis=1)
    assert np.array_equal(labels_out[finite], winner)  # the graph's label is the argmax we count
    assert batch.predictions == {LABELS[k]: int(c) for k, c in enumerate(np.bincount(winner)) if c}

    calibrated = np.column_stack([np.interp(proba[:, k], GRID, CURVES[lb]) for k, lb in enumerate(LABELS)])
    assert batch.calibration is not None
    for k, label in enumerate(LABELS):
        assert batch.calibration.sums[label] == pytest.approx(calibrated[:, k].sum(), rel=1e-12)
    expected = calibrated[np.arange(len(winner)), winner].sum()
    assert batch.calibration.expected_correct == pytest.approx(expected, rel=1e-12)
    assert batch.calibration.rows == int(finite.sum())
    assert 0 < batch.calibration.expected_correct / batch.calibration.rows < 1

    assert batch.latency.edges == LATENCY_EDGES
    assert sum(batch.latency.counts) == len(sizes)
    assert TelemetryBatch.model_validate_json(batch.model_dump_json()) == batch


def test_sample_is_bounded_and_never_carries_pii(classifier: LoadedModel) -> None:
    rows = make_rows(3000, seed=3)
    window = TelemetryWindow("dev-1", window_rows=100_000, sample_rows=50, seed=1)
    feed(window, classifier, rows, split_sizes(3000, seed=4))
    batch = only(window.flush())
    assert len(batch.sample) == 50
    for row in batch.sample:
        assert set(row.inputs) == {"a", "b", "site", "note"}
        unimputed = row.inputs["a"] is None or row.inputs["b"] is None  # the model answers NaN
        assert row.prediction is None if unimputed else row.prediction in LABELS
        if not unimputed:  # CBPE on the central node needs the probabilities of sampled rows
            assert row.probabilities is not None
            assert set(row.probabilities) == set(LABELS)
            assert sum(row.probabilities.values()) == pytest.approx(1, abs=1e-5)
            assert max(row.probabilities, key=row.probabilities.__getitem__) == row.prediction
    assert "plant.example" not in batch.model_dump_json()
    # a reservoir, not the first rows: later rows get in too
    index = {(r.inputs["a"], r.inputs["b"]) for r in batch.sample}
    late = {(a, b) for a, b in zip(rows["a"][1000:], rows["b"][1000:], strict=True)}
    assert index & late


def test_no_sample_unless_compliance_is_none(classifier_files: list[Path]) -> None:
    for regime in ("gdpr", "hipaa", "sox"):
        model = LoadedModel(
            classifier_files[0].parent, classifier_manifest(classifier_files, compliance=regime)
        )
        window = TelemetryWindow("dev-1", seed=0)
        feed(window, model, make_rows(200, seed=5), [100, 100])
        batch = only(window.flush())
        assert batch.sample == []
        assert batch.rows == 200


def test_a_window_closes_on_row_count(classifier: LoadedModel) -> None:
    window = TelemetryWindow("dev-1", window_rows=100, window_s=3600)
    feed(window, classifier, make_rows(250, seed=6), [10] * 25)
    closed = window.collect()
    assert [b.rows for b in closed] == [100, 100]
    assert [b.rows for b in window.flush()] == [50]
    assert len({b.batch_id for b in closed}) == 2
    assert window.flush() == []


def test_a_window_closes_on_time_without_traffic(classifier: LoadedModel) -> None:
    window = TelemetryWindow("dev-1", window_s=0.2)
    feed(window, classifier, make_rows(30, seed=7), [10, 10, 10])
    assert window.collect() == []
    time.sleep(0.25)
    batch = only(window.collect())
    assert batch.rows == 30
    assert batch.window_start < batch.window_end
    assert batch.window_end.utcoffset() is not None
    assert batch.window_end.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_a_swap_closes_the_window_and_late_requests_still_count(classifier_files: list[Path]) -> None:
    folder = classifier_files[0].parent
    old = LoadedModel(folder, classifier_manifest(classifier_files, version=1))
    new = LoadedModel(folder, classifier_manifest(classifier_files, version=2))
    window = TelemetryWindow("dev-1", window_s=3600)
    rows = make_rows(60, seed=8)
    feed(window, old, rows, [20])
    feed(window, new, rows, [10])
    assert [(b.version, b.rows) for b in window.collect()] == [(1, 20)]
    feed(window, old, rows, [5])  # a request that started before the swap answers after it
    feed(window, new, rows, [10])
    assert window.collect() == []
    assert sorted((b.version, b.rows) for b in window.flush()) == [(1, 5), (2, 20)]


def test_errors_are_counted_by_kind(classifier: LoadedModel) -> None:
    window = TelemetryWindow("dev-1")
    observe_error(window, None, "not-ready")  # before any model: kept for the first window
    feed(window, classifier, make_rows(10, seed=9), [10])
    observe_error(window, classifier, "bad-input")
    observe_error(window, classifier, "bad-input")
    observe_error(window, None, "too-large")
    batch = only(window.flush())
    assert batch.errors == {"not-ready": 1, "bad-input": 2, "too-large": 1}
    observe_error(window, classifier, "runtime")
    only_errors = only(window.flush())
    assert (only_errors.rows, only_errors.errors) == (0, {"runtime": 1})


def test_a_regression_model_reports_its_prediction_histogram(tmp_path: Path) -> None:
    files = write_model(tmp_path / "model", seed=0, external=False)
    base = make_manifest(files)
    edges = [-20.0, 0.0, 20.0]
    reference = base.reference.model_copy(
        update={"scores": {"prediction": Histogram(edges=edges, counts=[0, 0, 0, 0])}}
    )
    model = LoadedModel(tmp_path / "model", base.model_copy(update={"reference": reference}))
    rng = np.random.default_rng(0)
    columns = {"a": rng.normal(0, 5, 300).tolist(), "b": rng.normal(0, 5, 300).tolist()}
    window = TelemetryWindow("dev-1")
    outputs = feed(window, model, columns, [100, 150, 50])
    batch = only(window.flush())
    values = np.concatenate([o["variable"].ravel() for o in outputs])
    assert batch.scores["prediction"].counts == bin_counts(edges, values)[0]
    assert batch.predictions == {}
    assert batch.calibration is None
    assert all(isinstance(r.prediction, float) for r in batch.sample)


# --- properties -------------------------------------------------------------------------


def synthetic_outputs(n: int, seed: int) -> dict[str, np.ndarray]:
    logits = np.random.default_rng(seed).normal(size=(n, 3))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"label": proba.argmax(axis=1), "probabilities": proba}


def observe_split(
    model: LoadedModel, columns: dict[str, list[Any]], outputs: dict[str, np.ndarray], sizes: list[int]
) -> TelemetryBatch:
    window = TelemetryWindow("dev-1", window_rows=10**9, sample_rows=0)
    start = 0
    for part, size in zip(chunks(columns, sizes), sizes, strict=True):
        observe(window, model, part, {k: v[start : start + size] for k, v in outputs.items()}, 0.001)
        start += size
    return only(window.flush())


def comparable(batch: TelemetryBatch) -> dict[str, Any]:
    return batch.model_dump(include={"rows", "features", "predictions", "scores"})


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 1500), st.integers(0, 2**31), st.data())
def test_aggregation_properties(classifier: LoadedModel, n: int, seed: int, data: st.DataObject) -> None:
    """Counts add up to the rows, and how rows are split into requests changes nothing."""
    columns = make_rows(n, seed)
    outputs = synthetic_outputs(n, seed)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, n - 1)), max_size=12))) if n > 1 else []
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    split = observe_split(classifier, columns, outputs, sizes)
    whole = observe_split(classifier, columns, outputs, [n])

    assert (split.rows, split.requests) == (n, len(sizes))
    for name in ("a", "b", "site"):
        feature = split.features[name]
        assert sum(feature.counts) + feature.missing == n
    assert sum(split.features["note"].counts) == n  # missing text counts as length 0
    assert sum(split.predictions.values()) == n
    for hist in split.scores.values():
        assert sum(hist.counts) + hist.missing == n
    assert sum(split.latency.counts) == len(sizes)
    assert comparable(split) == comparable(whole)
    assert split.calibration is not None
    assert whole.calibration is not None
    assert split.calibration.sums == pytest.approx(whole.calibration.sums, rel=1e-9)


def test_integer_labels_are_counted_as_the_reference_names_them(tmp_path: Path) -> None:
    """Anomaly flags and clusters come out as integers; the reference counts them as strings."""
    files = write_model(tmp_path / "model", seed=0, external=False)
    base = make_manifest(files)
    manifest = base.model_copy(
        update={
            "outputs": Outputs(task="anomaly", names=["label"]),
            "reference": base.reference.model_copy(update={"predictions": {"1": 90, "-1": 10}}),
        }
    )
    model = LoadedModel(tmp_path / "model", manifest)
    window = TelemetryWindow("dev-1")
    columns = {"a": [0.0, 1.0, 2.0, 3.0], "b": [0.0, 0.0, 0.0, 0.0]}
    observe(window, model, columns, {"label": np.array([1, -1, 1, 1])}, 0.001)
    batch = only(window.flush())
    assert batch.predictions == {"1": 3, "-1": 1}
    assert {r.prediction for r in batch.sample} == {"1", "-1"}


# --- off the request path ---------------------------------------------------------------


def test_requests_only_queue_and_the_counting_thread_counts(classifier: LoadedModel) -> None:
    rows = make_rows(2000, seed=10)
    sizes = [1] * 1000 + [50] * 20
    counted = TelemetryWindow("dev-1", window_rows=100_000, sample_rows=0, seed=0)
    feed(counted, classifier, rows, sizes)
    deadline = time.monotonic() + 5
    while counted._pending and time.monotonic() < deadline:  # no collect: the thread drains it
        time.sleep(0.01)
    assert not counted._pending
    assert not counted._closed  # nothing closes before its time, count or swap

    sync = TelemetryWindow("dev-1", window_rows=100_000, sample_rows=0, seed=0)
    telemetry._windows.discard(sync)  # left to flush alone
    feed(sync, classifier, rows, sizes)
    assert len(sync._pending) == len(sizes)
    a, b = only(counted.flush()), only(sync.flush())
    assert (a.rows, a.requests) == (b.rows, b.requests) == (2000, len(sizes))
    assert comparable(a) == comparable(b)


def test_a_counting_thread_that_falls_behind_loses_no_row(
    classifier: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "WAKE_PENDING", 4)
    monkeypatch.setattr(telemetry, "MAX_PENDING", 8)
    monkeypatch.setattr(model_module, "POLL_EVERY", 1)
    window = TelemetryWindow("dev-1", window_rows=100, window_s=3600)
    telemetry._windows.discard(window)  # as if the counting thread were stuck
    feed(window, classifier, make_rows(250, seed=11), [10] * 25)
    assert len(window._pending) <= 9  # the requests drained it themselves: bounded
    assert [b.rows for b in window.collect()] == [100, 100]
    assert [b.rows for b in window.flush()] == [50]


def test_one_row_columns_count_as_the_same_values_in_a_dict(classifier: LoadedModel) -> None:
    """Rows of the schema's fast path (RowColumns, transposed in bulk) count as plain columns do."""
    schema = Schema(classifier.manifest.inputs)
    rows = make_rows(1200, seed=5)
    fast, plain = (TelemetryWindow("device-1", window_rows=10_000, seed=3) for _ in range(2))
    taken = 0
    for i in range(1200):
        record = {name: values[i] for name, values in rows.items()}
        try:
            batch = schema.parse_records(record)
        except InputError:  # the rows hold values the schema refuses, as clients send
            continue
        outputs = classifier.runtime.run(batch.feeds)
        if isinstance(batch.columns, RowColumns):
            taken += 1
        observe(fast, classifier, batch.columns, outputs, 0.001)
        observe(plain, classifier, {name: tuple(c) for name, c in batch.columns.items()}, outputs, 0.001)
        schema.release(batch)
    assert taken > 300  # many rows went the fast way, the rest the general one: mixed buffers
    ignore = {"batch_id", "window_start", "window_end"}
    assert only(fast.flush()).model_dump(exclude=ignore) == only(plain.flush()).model_dump(exclude=ignore)
