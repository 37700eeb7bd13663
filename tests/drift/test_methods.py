"""The distances on counts equal the scipy functions NannyML calls; chi2 decides as NannyML's p-value."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, wasserstein_distance

from edgeml.drift.methods import chi2, distance, hellinger, js, wasserstein

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("bins", [2, 5, 30])
def test_js_is_scipys_base_2_distance_row_by_row(bins: int) -> None:
    ref = RNG.integers(0, 50, size=bins)
    chunks = RNG.integers(0, 50, size=(6, bins))
    got = js(ref, chunks)
    want = [jensenshannon(ref / ref.sum(), c / c.sum(), base=2) for c in chunks]
    assert got == pytest.approx(want, abs=1e-12)


def test_a_bin_empty_in_the_reference_adds_in_proportion_so_two_outside_bins_equal_one() -> None:
    # telemetry counts below and above the reference range apart; NannyML adds them into one bin
    ref = np.array([0, 40, 60, 0])
    cur = np.array([5, 30, 50, 15])
    merged_ref, merged_cur = np.array([40, 60, 0]), np.array([30, 50, 20])
    assert js(ref, cur) == pytest.approx(js(merged_ref, merged_cur), abs=1e-12)
    assert hellinger(ref, cur) == pytest.approx(hellinger(merged_ref, merged_cur), abs=1e-12)


def test_identical_shares_are_zero_and_disjoint_ones_are_one() -> None:
    assert js(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(0)
    assert js(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1)
    assert hellinger(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1)


def test_an_empty_chunk_has_no_value() -> None:
    assert np.isnan(js(np.array([1, 2]), np.array([0, 0])))
    assert np.isnan(chi2(np.array([1, 2]), np.array([0, 0]), 0.05)[0])


@pytest.mark.parametrize("categories", [2, 3, 8])
def test_chi2_alerts_exactly_when_scipys_p_value_is_below_alpha(categories: int) -> None:
    for _ in range(40):
        ref = RNG.integers(20, 200, size=categories)
        cur = RNG.integers(20, 200, size=categories)
        statistic, critical = chi2(ref, cur, 0.05)
        # Yates' correction at one degree of freedom, as NannyML's call gets it
        want_stat, p_value, _, _ = chi2_contingency(np.stack([ref, cur], axis=1))
        assert statistic == pytest.approx(want_stat)
        assert (statistic > critical) == (p_value < 0.05)


def test_chi2_leaves_out_categories_absent_on_both_sides() -> None:
    assert chi2(np.array([50, 0, 50]), np.array([40, 0, 60]), 0.05) == chi2(
        np.array([50, 50]), np.array([40, 60]), 0.05
    )


def test_wasserstein_on_fine_bins_is_close_to_scipys_on_the_values() -> None:
    ref_values = RNG.normal(0, 1, 20_000)
    cur_values = RNG.normal(0.3, 1.2, 5_000)
    edges = np.linspace(ref_values.min(), ref_values.max(), 1001)
    cur_inside = np.clip(cur_values, edges[0], edges[-1])  # the binned form counts outsiders at the ends

    def counts(values: np.ndarray) -> np.ndarray:
        return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)

    got = float(wasserstein(counts(ref_values), counts(cur_inside), edges))
    assert got == pytest.approx(wasserstein_distance(ref_values, cur_inside), rel=0.01)
    assert float(distance("wasserstein", counts(ref_values), counts(cur_inside), edges)) == got


def test_wasserstein_needs_edges() -> None:
    with pytest.raises(ValueError, match="edges"):
        distance("wasserstein", np.array([1, 2]), np.array([2, 1]))
