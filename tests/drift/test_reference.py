"""Reference statistics: NannyML's bins and bands, counted with the agent's binning functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drift.conftest import dataset, nml
from edgeml.bundle.manifest import CategoryCounts, Histogram
from edgeml.bundle.reference import bin_counts, category_counts
from edgeml.drift.reference import (
    build_reference,
    chunk_bounds,
    column_kind,
    continuous_edges,
    default_chunk_size,
    model_inputs_reference,
)


def test_continuous_bins_are_doanes_with_the_reference_maximum_inside() -> None:
    values = np.array([1.0, 2, 2, 3, 5, 8, 13, 21, 52, 52, 52])  # a capped feature: many rows at the max
    edges = continuous_edges(values)
    want = np.histogram_bin_edges(values, bins="doane")
    assert edges[:-1] == pytest.approx(want[:-1].tolist())
    assert edges[-1] > want[-1] == 52
    counts, missing = bin_counts(edges, values)
    assert counts[0] == counts[-1] == 0  # nothing below or above the reference range
    assert counts[1:-1] == np.histogram(values, bins=want)[0].tolist()
    assert missing == 0


def test_wasserstein_gets_a_thousand_equal_bins_and_no_values_no_bins() -> None:
    edges = continuous_edges(np.arange(100.0), "wasserstein")
    assert len(edges) == 1001
    assert np.diff(edges[:-1]) == pytest.approx(np.full(999, 99 / 1000))
    assert continuous_edges(np.array([np.nan, np.nan])) == []


def test_column_kinds_follow_nannymls_dtype_rule() -> None:
    frame = pd.DataFrame(
        {"f": [1.5, 2.0], "i": [1, 2], "s": ["a", "b"], "b": [True, False], "c": ["x", "y"]}
    ).astype({"c": "category", "s": "string"})
    kinds = {name: column_kind(frame[name]) for name in frame.columns}
    assert kinds == {
        "f": "continuous",
        "i": "continuous",
        "s": "categorical",
        "b": "categorical",
        "c": "categorical",
    }
    assert column_kind(pd.Series(pd.to_datetime(["2024-01-01"]))) is None


def test_chunks_are_consecutive_with_a_smaller_last_one() -> None:
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(8, 4) == [(0, 4), (4, 8)]
    with pytest.raises(ValueError, match="at least 1"):
        chunk_bounds(8, 0)


def test_the_bundle_chunk_size_is_a_tenth_of_the_rows_within_bounds() -> None:
    assert [default_chunk_size(n) for n in (100, 20_000, 10**6)] == [50, 2000, 5000]


def test_reference_counts_are_what_the_agents_functions_count() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "x": np.where(rng.random(500) < 0.1, np.nan, rng.normal(size=500)),
            "c": pd.Series(rng.choice(["a", "b", "c", None], size=500), dtype="string"),
        }
    )
    histograms, thresholds = build_reference(frame, 100)
    x, c = histograms["x"], histograms["c"]
    assert isinstance(x, Histogram)
    assert isinstance(c, CategoryCounts)
    assert (x.counts, x.missing) == bin_counts(x.edges, frame["x"].to_numpy())
    items = [None if v is pd.NA else v for v in frame["c"].tolist()]
    assert c.values == ["a", "b", "c"]
    assert (c.counts, c.missing) == category_counts(c.values, items)
    assert thresholds.chunk_size == 100
    assert {n: f.chunks for n, f in thresholds.features.items()} == {"x": 5, "c": 5}


@pytest.mark.parametrize("method", ["jensen_shannon", "hellinger"])
def test_bands_equal_nannymls_on_its_synthetic_binary_set(method: str) -> None:
    reference, _ = dataset("binary")
    columns = ["distance_from_office", "salary_range", "tenure", "wfh_prev_workday", "workday"]
    ours = "js" if method == "jensen_shannon" else "hellinger"
    _, thresholds = build_reference(reference[columns], 5000, methods=dict.fromkeys(columns, ours))
    calc = nml.UnivariateDriftCalculator(
        column_names=columns, chunk_size=5000, continuous_methods=[method], categorical_methods=[method]
    ).fit(reference)
    for name in columns:
        fitted = next(m for m in calc._column_to_models_mapping[name] if m.column_name == method)
        assert thresholds.features[name].upper == pytest.approx(fitted.upper_threshold_value, rel=1e-9), name
        assert thresholds.features[name].lower is None is fitted.lower_threshold_value
        assert thresholds.features[name].chunks == 10


def test_chi2_carries_alpha_not_a_band_and_a_method_must_fit_the_kind() -> None:
    frame = pd.DataFrame({"c": ["a", "b"] * 50, "x": np.arange(100.0)})
    _, thresholds = build_reference(frame, 10, methods={"c": "chi2"})
    assert thresholds.features["c"].method == "chi2"
    assert thresholds.features["c"].alpha == 0.05
    assert thresholds.features["c"].upper is None
    with pytest.raises(ValueError, match="does not apply to categorical column 'c'"):
        build_reference(frame, 10, methods={"c": "wasserstein"})
    with pytest.raises(ValueError, match="neither a number nor a category"):
        build_reference(pd.DataFrame({"t": pd.to_datetime(["2024-01-01"] * 3)}), 1)


def test_model_inputs_count_text_by_length_and_categories_over_their_allowed_values() -> None:
    inputs = pd.DataFrame(
        {
            "temp": [20.0, 21.5, None, 23.0] * 25,
            "mode": ["eco", "eco", "boost", None] * 25,
            "note": ["ok", None, "check valve", ""] * 25,
        }
    )
    features, thresholds = model_inputs_reference(
        inputs,
        numeric=["temp"],
        categorical=["mode"],
        text=["note"],
        allowed={"mode": ["eco", "boost", "off"]},
    )
    mode, note = features["mode"], features["note"]
    assert isinstance(mode, CategoryCounts)
    assert mode.values == ["eco", "boost", "off"]
    assert mode.counts == [50, 25, 0, 0]
    assert mode.missing == 25
    assert isinstance(note, Histogram)
    assert note.missing == 0
    assert bin_counts(note.edges, np.array([2.0, 0, 11, 0] * 25))[0] == note.counts
    assert thresholds.chunk_size == 50
    assert set(thresholds.features) == {"temp", "mode", "note"}


def test_a_bundle_also_signs_bands_for_smaller_chunks_wider_as_they_shrink() -> None:
    rng = np.random.default_rng(5)
    inputs = pd.DataFrame({"temp": rng.normal(20, 2, 20_000)})
    _, thresholds = model_inputs_reference(inputs, numeric=["temp"], categorical=[], text=[], allowed={})
    assert thresholds.chunk_size == 2000
    assert [b.chunk_size for b in thresholds.smaller] == [100, 200, 500, 1000]
    uppers = [b.features["temp"].upper for b in thresholds.smaller] + [thresholds.features["temp"].upper]
    assert uppers == sorted(uppers, reverse=True)
    assert [b.features["temp"].chunks for b in thresholds.smaller] == [200, 100, 40, 20]
