"""hipaa minimum-count suppression: no cell of 1..k-1 rows leaves a device, and drift still shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.test_telemetry import classifier_manifest, feed, only, write_classifier
from edgeml.agent.model import LoadedModel
from edgeml.agent.suppress import merge_categories, merge_ordered, spread
from edgeml.agent.telemetry import TelemetryWindow
from edgeml.bundle.manifest import CategoryCounts, Histogram, Manifest
from edgeml.drift.judge import judge
from edgeml.drift.reference import build_reference

K = 10
counts_lists = st.lists(st.integers(0, 40), min_size=1, max_size=25)


def _totals(counts: list[int], groups: list[list[int]]) -> list[int]:
    return [sum(counts[i] for i in g) for g in groups]


@given(counts_lists, st.integers(2, 30))
def test_every_merged_group_is_empty_or_holds_k_rows(counts: list[int], k: int) -> None:
    for merge in (merge_ordered, merge_categories):
        groups = merge(counts, k)
        assert sorted(i for g in groups for i in g) == list(range(len(counts)))  # a partition
        if sum(counts) >= k:
            assert all(t == 0 or t >= k for t in _totals(counts, groups)), (merge, groups)
        else:  # fewer than k rows in all: nothing finer than the total
            assert len([t for t in _totals(counts, groups) if t]) <= 1
    ordered = merge_ordered(counts, k)
    assert all(g == list(range(g[0], g[-1] + 1)) for g in ordered)  # bins merge with neighbours only


@given(counts_lists, st.integers(2, 30), st.data())
def test_spreading_keeps_each_groups_total_and_follows_the_reference(
    counts: list[int], k: int, data: st.DataObject
) -> None:
    reference = data.draw(st.lists(st.integers(0, 500), min_size=len(counts), max_size=len(counts)))
    groups = merge_ordered(counts, k)
    out = spread(counts, groups, reference)
    assert _totals(out, groups) == _totals(counts, groups)
    for g in groups:
        total, ref = sum(counts[i] for i in g), sum(reference[i] for i in g)
        for i in g:  # within one of rounding of the reference's share
            share = total * (reference[i] / ref if ref else 1 / len(g))
            assert abs(out[i] - share) < 1


# --- through a device's window ---------------------------------------------------------------


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(shift, 1.0, n),
            "site": rng.choice(["north", "south"], n, p=[0.9, 0.1] if not shift else [0.5, 0.5]),
        }
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Any]:
    files = write_classifier(tmp_path_factory.mktemp("classifier"))
    frame = _frame(6000, seed=1)
    hists, thresholds = build_reference(frame, 300, kinds={"a": "continuous", "site": "categorical"})
    return files[0].parent, hists, thresholds


def _model(reference: tuple[Path, dict[str, Any], Any], compliance: str, k: int | None) -> LoadedModel:
    folder, hists, _ = reference
    base = classifier_manifest([folder / "model.onnx"], compliance=compliance)
    features = {**base.reference.features, **hists}
    ref = base.reference.model_copy(update={"features": features})
    manifest: Manifest = base.model_copy(update={"reference": ref, "min_bin_count": k})
    return LoadedModel(folder, manifest)


def _window(model: LoadedModel, frame: pd.DataFrame) -> Any:
    n = len(frame)
    rows = {
        "a": frame["a"].tolist(),
        "b": [0.5] * n,
        "site": frame["site"].tolist(),
        "note": ["ok"] * n,
        "email": ["x@y.example"] * n,
    }
    window = TelemetryWindow("dev-1", window_rows=100_000, seed=0)
    feed(window, model, rows, [n])
    return only(window.flush())


def _small_cells(batch: Any) -> list[tuple[str, int]]:
    cells = [(n, c) for n, f in batch.features.items() for c in f.counts]
    cells += [(k, c) for k, h in batch.scores.items() for c in h.counts]
    cells += [("prediction", c) for c in batch.predictions.values()]
    return [(n, c) for n, c in cells if 0 < c < K]


def test_a_hipaa_window_has_no_small_cells_and_one_person_is_invisible_inside_a_group(
    reference: tuple[Path, dict[str, Any], Any],
) -> None:
    plain, hipaa = _model(reference, "none", None), _model(reference, "hipaa", K)
    frame = _frame(120, seed=2)
    raw = _window(plain, frame)
    assert _small_cells(raw)  # without suppression, the tails of 120 rows hold a few rows each
    batch = _window(hipaa, frame)
    for name, f in batch.features.items():  # the same rows, only regrouped
        assert sum(f.counts) == sum(raw.features[name].counts)
        assert f.missing == raw.features[name].missing
    assert sum(batch.predictions.values()) == sum(raw.predictions.values())
    # every merged group holds >= k rows, so each spread cell is a share of k or more, not a person
    a = batch.features["a"].counts
    groups = merge_ordered(raw.features["a"].counts, K)
    assert all(sum(raw.features["a"].counts[i] for i in g) >= K for g in groups if len(g) > 1)
    assert a != raw.features["a"].counts

    # the highest value moves to the next bin down: the raw counts tell, the suppressed ones do not
    top = frame["a"].idxmax()
    edges = reference[1]["a"].edges
    below = max(e for e in edges if e < frame.loc[top, "a"])
    moved = frame.copy()
    moved.loc[top, "a"] = below - 1e-9
    assert _window(plain, moved).features["a"].counts != raw.features["a"].counts
    assert _window(hipaa, moved).features["a"].counts == a


def test_drift_is_still_flagged_on_suppressed_windows(reference: tuple[Path, dict[str, Any], Any]) -> None:
    _, hists, thresholds = reference
    hipaa = _model(reference, "hipaa", K)

    def verdicts(frame: pd.DataFrame) -> dict[str, bool]:
        batch = _window(hipaa, frame)
        out = {}
        for name in ("a", "site"):
            ref: Histogram | CategoryCounts = hists[name]
            band = thresholds.features[name]
            out[name] = judge(name, band, ref, batch.features[name].counts, thresholds.chunk_size).alert
        return out

    assert verdicts(_frame(300, seed=3)) == {"a": False, "site": False}
    assert verdicts(_frame(300, seed=4, shift=1.0)) == {"a": True, "site": True}
