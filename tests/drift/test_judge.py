"""The judge of one chunk: the band as signed for chunks of its size, widened for smaller ones."""

from __future__ import annotations

import math

import pytest

from edgeml.bundle.manifest import CategoryCounts, ChunkBands, DriftThresholds, FeatureThreshold, Histogram
from edgeml.drift.judge import band_for, judge
from edgeml.drift.methods import js

REFERENCE = Histogram(edges=[0.0, 1.0, 2.0, 3.0], counts=[0, 300, 400, 300, 0], missing=5)
BAND = FeatureThreshold(method="js", upper=0.05, mean=0.02, std=0.01, chunks=10)


def test_a_chunk_of_the_signed_size_is_judged_by_the_band_as_signed() -> None:
    quiet = judge("x", BAND, REFERENCE, [0, 30, 40, 30, 0], 100, missing=3)
    assert quiet.value == pytest.approx(0.0)
    assert (quiet.upper, quiet.lower, quiet.alert) == (0.05, None, False)
    assert (quiet.rows, quiet.missing) == (100, 3)
    shifted = judge("x", BAND, REFERENCE, [0, 10, 40, 40, 10], 100)
    assert shifted.value == pytest.approx(float(js(REFERENCE.counts, [0, 10, 40, 40, 10])))
    assert shifted.alert


def test_a_smaller_chunk_gets_a_wider_band_and_a_larger_one_the_same() -> None:
    small = judge("x", BAND, REFERENCE, [0, 10, 40, 30, 20], 400)
    assert small.upper == pytest.approx(0.05 * math.sqrt(400 / 100))
    large = judge("x", BAND, REFERENCE, [0, 300, 400, 300, 0], 100)
    assert large.upper == 0.05


def test_a_lower_bound_alerts_below_it() -> None:
    band = FeatureThreshold(method="js", lower=0.01, upper=0.5, chunks=10)
    assert judge("x", band, REFERENCE, [0, 30, 40, 30, 0], 100).alert


def test_the_effect_size_floor_silences_a_breach_below_it() -> None:
    counts = [0, 25, 40, 35, 0]
    assert judge("x", BAND, REFERENCE, counts, 100).value == pytest.approx(0.055, abs=1e-3)
    assert judge("x", BAND, REFERENCE, counts, 100).alert
    assert not judge("x", BAND, REFERENCE, counts, 100, min_js=0.1).alert


def test_an_empty_chunk_has_no_value_and_no_alert() -> None:
    verdict = judge("x", BAND, REFERENCE, [0, 0, 0, 0, 0], 100, missing=7)
    assert (verdict.value, verdict.alert, verdict.rows, verdict.missing) == (None, False, 0, 7)


def test_chi2_alerts_on_its_critical_value_whatever_the_chunk_size() -> None:
    ref = CategoryCounts(values=["a", "b"], counts=[500, 500, 0])
    band = FeatureThreshold(method="chi2", alpha=0.05, chunks=10)
    same = judge("c", band, ref, [50, 50, 0], 1000)
    assert same.upper == pytest.approx(3.841, abs=1e-3)  # one degree of freedom
    assert not same.alert
    assert judge("c", band, ref, [80, 20, 0], 1000).alert
    assert judge("c", band, ref, [50, 40, 10], 1000).upper == pytest.approx(
        5.991, abs=1e-3
    )  # an unseen value


def test_counts_on_other_bins_are_refused() -> None:
    with pytest.raises(ValueError, match="3 counts on a reference of 5 bins"):
        judge("x", BAND, REFERENCE, [1, 2, 3], 100)


def _bands(upper: float) -> dict[str, FeatureThreshold]:
    return {"x": FeatureThreshold(method="js", upper=upper, chunks=10)}


def test_a_window_is_judged_by_the_band_of_the_largest_chunk_size_it_fills() -> None:
    thresholds = DriftThresholds(
        chunk_size=2000,
        features=_bands(0.02),
        smaller=[
            ChunkBands(chunk_size=100, features=_bands(0.09)),
            ChunkBands(chunk_size=500, features=_bands(0.04)),
        ],
    )
    assert band_for(thresholds, "x", 5000) == (thresholds.features["x"], 2000)
    assert band_for(thresholds, "x", 2000) == (thresholds.features["x"], 2000)
    assert band_for(thresholds, "x", 1999)[1] == 500  # type: ignore[index]
    assert band_for(thresholds, "x", 150)[1] == 100  # type: ignore[index]
    assert band_for(thresholds, "x", 40)[1] == 100  # type: ignore[index]  # then widened by the judge
    assert band_for(thresholds, "y", 5000) is None
