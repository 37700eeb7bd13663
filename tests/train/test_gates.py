"""Quality gates: thresholds with their shortfall, and beating the champion by a margin."""

from __future__ import annotations

import pytest

from edgeml.spec.models import Gates, Threshold
from edgeml.train.gates import FIELD_MIN_ROWS, Evidence, judge


def gates(margin: float = 0.0, **bounds: Threshold) -> Gates:
    return Gates(thresholds=bounds, champion_margin=margin)


def test_no_gates_pass() -> None:
    verdict = judge(Gates(), "f1_macro", "max", {"f1_macro": 0.1}, None)
    assert verdict.passed
    assert verdict.results == []
    assert verdict.failures == []


@pytest.mark.parametrize("value", [0.7, 0.71, 1.0])
def test_min_threshold_passes_at_or_above(value: float) -> None:
    verdict = judge(gates(f1_macro=Threshold(min=0.7)), "f1_macro", "max", {"f1_macro": value}, None)
    assert verdict.passed
    assert [r.passed for r in verdict.results] == [True]
    assert verdict.results[0].detail == f"f1_macro {value:.4f} within bounds"


def test_min_threshold_fails_with_the_shortfall() -> None:
    verdict = judge(gates(f1_macro=Threshold(min=0.7)), "f1_macro", "max", {"f1_macro": 0.65}, None)
    assert not verdict.passed
    (failure,) = verdict.failures
    assert failure.name == "f1_macro ≥ 0.7"
    assert failure.detail == "f1_macro 0.6500 is below 0.7 by 0.0500"


@pytest.mark.parametrize("value", [0.2, 1.5])
def test_max_threshold_passes_at_or_below(value: float) -> None:
    assert judge(gates(rmse=Threshold(max=1.5)), "rmse", "min", {"rmse": value}, None).passed


def test_max_threshold_fails_with_the_excess() -> None:
    verdict = judge(gates(rmse=Threshold(max=1.5)), "rmse", "min", {"rmse": 1.75}, None)
    (failure,) = verdict.failures
    assert failure.name == "rmse ≤ 1.5"
    assert failure.detail == "rmse 1.7500 is above 1.5 by 0.2500"


@pytest.mark.parametrize(("value", "passed"), [(0.5, True), (0.05, False), (0.95, False)])
def test_min_and_max_together(value: float, passed: bool) -> None:
    verdict = judge(gates(r2=Threshold(min=0.1, max=0.9)), "rmse", "min", {"r2": value}, None)
    assert verdict.passed is passed


def test_missing_metric_fails_its_gate() -> None:
    verdict = judge(gates(roc_auc=Threshold(min=0.8)), "f1_macro", "max", {"f1_macro": 0.9}, None)
    (failure,) = verdict.failures
    assert failure.name == "roc_auc threshold"
    assert failure.detail == "roc_auc was not measured"


def test_every_gate_is_checked_none_stops_early() -> None:
    verdict = judge(
        gates(0.01, f1_macro=Threshold(min=0.9), accuracy=Threshold(min=0.5), roc_auc=Threshold(min=0.9)),
        "f1_macro",
        "max",
        {"f1_macro": 0.8, "accuracy": 0.85},
        ("3", {"f1_macro": 0.85}),
    )
    assert [(r.name, r.passed) for r in verdict.results] == [
        ("f1_macro ≥ 0.9", False),
        ("accuracy threshold", True),
        ("roc_auc threshold", False),
        ("beats champion", False),
    ]
    assert len(verdict.failures) == 3


# --------------------------------------------------------------------------- champion


@pytest.mark.parametrize(
    ("mine", "champion", "margin", "passed"),
    [
        (0.90, 0.80, 0.05, True),  # clear win
        (0.84, 0.80, 0.05, False),  # better, but not by the margin
        (0.80, 0.80, 0.0, True),  # a tie passes without margin
        (0.79, 0.80, 0.0, False),  # worse
    ],
)
def test_champion_higher_is_better(mine: float, champion: float, margin: float, passed: bool) -> None:
    verdict = judge(gates(margin), "f1_macro", "max", {"f1_macro": mine}, ("4", {"f1_macro": champion}))
    (result,) = verdict.results
    assert result.name == "beats champion"
    assert result.passed is passed
    assert result.detail.startswith(
        f"f1_macro {mine:.4f} vs champion v4 {champion:.4f} (margin {margin:g}, tolerance 0)"
    )
    if passed:
        assert "short by" not in result.detail
    else:
        assert result.detail.endswith(f": short by {champion + margin - mine:.4f}")


@pytest.mark.parametrize(
    ("mine", "champion", "margin", "passed"),
    [
        (1.00, 1.20, 0.1, True),  # lower error by more than the margin
        (1.15, 1.20, 0.1, False),  # lower, not by the margin
        (1.20, 1.20, 0.0, True),
        (1.30, 1.20, 0.0, False),  # higher error
    ],
)
def test_champion_lower_is_better(mine: float, champion: float, margin: float, passed: bool) -> None:
    verdict = judge(gates(margin), "rmse", "min", {"rmse": mine}, ("2", {"rmse": champion}))
    (result,) = verdict.results
    assert result.passed is passed
    assert "vs champion v2" in result.detail
    if not passed:
        assert result.detail.endswith(f": short by {mine - (champion - margin):.4f}")


def test_champion_margin_works_against_a_min_metric_in_the_right_direction() -> None:
    """A min metric must get *lower* by the margin: a higher value never beats the champion."""
    verdict = judge(gates(0.1), "rmse", "min", {"rmse": 1.25}, ("1", {"rmse": 1.2}))
    assert not verdict.passed  # 1.25 would pass if the margin were added as for a max metric


@pytest.mark.parametrize(("mine", "theirs"), [({}, {"f1_macro": 0.8}), ({"f1_macro": 0.8}, {})])
def test_champion_metric_missing_fails(mine: dict[str, float], theirs: dict[str, float]) -> None:
    verdict = judge(Gates(), "f1_macro", "max", mine, ("7", theirs))
    (failure,) = verdict.failures
    assert failure.name == "beats champion"
    assert failure.detail == "f1_macro missing for the comparison"


def test_no_champion_no_champion_gate() -> None:
    verdict = judge(gates(0.5), "f1_macro", "max", {"f1_macro": 0.1}, None)
    assert verdict.passed
    assert verdict.results == []


def test_beating_the_champion_by_exactly_the_margin_passes_despite_rounding() -> None:
    from edgeml.spec.models import Gates
    from edgeml.train.gates import judge

    # 0.8 + 0.05 is 0.8500000000000001 in binary floating point.
    verdict = judge(
        Gates(champion_margin=0.05), "f1_macro", "max", {"f1_macro": 0.85}, ("1", {"f1_macro": 0.8})
    )
    assert verdict.passed, verdict.results


@pytest.mark.parametrize(
    ("mine", "tolerance", "passed"),
    [(0.80, 0.0, True), (0.79, 0.0, False), (0.79, 0.02, True), (0.77, 0.02, False)],
)
def test_champion_tolerance_accepts_a_small_shortfall_only(
    mine: float, tolerance: float, passed: bool
) -> None:
    lenient = Gates(champion_tolerance=tolerance)
    verdict = judge(
        lenient, "f1_macro", "max", {"f1_macro": mine}, ("4", {"f1_macro": 0.80}), holdout_rows=120
    )
    (result,) = verdict.results
    assert result.passed is passed
    assert f"on 120 holdout rows (margin 0, tolerance {tolerance:g})" in result.detail
    rmse = judge(lenient, "rmse", "min", {"rmse": 1.0 + (0.8 - mine)}, ("4", {"rmse": 1.0}))
    assert rmse.passed is passed  # a min metric: the tolerance lets it be that much higher


def test_the_field_labels_are_a_second_comparison_on_the_same_rows() -> None:
    field = Evidence("field labels", 40, {"f1_macro": 0.50}, {"f1_macro": 0.70})
    few = Evidence("field labels", FIELD_MIN_ROWS - 1, {"f1_macro": 0.0}, {"f1_macro": 1.0})
    verdict = judge(Gates(), "f1_macro", "max", {"f1_macro": 0.9}, ("3", {"f1_macro": 0.8}), evidence=[field])
    assert [(r.name, r.passed) for r in verdict.results] == [
        ("beats champion", True),
        ("beats champion on field labels", False),
    ]
    assert verdict.failures[0].detail == (
        "f1_macro 0.5000 vs champion v3 0.7000 on 40 field labels rows (margin 0, tolerance 0): "
        "short by 0.2000"
    )
    assert judge(
        Gates(), "f1_macro", "max", {"f1_macro": 0.9}, ("3", {"f1_macro": 0.8}), evidence=[few]
    ).passed
    assert judge(Gates(), "f1_macro", "max", {"f1_macro": 0.9}, None, evidence=[field]).passed  # no champion
