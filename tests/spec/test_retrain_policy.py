"""The spec's `retrain:` section: defaults that keep the node's old behaviour, and its errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeml.cli import main
from edgeml.spec import load_spec
from spec.test_loader import EXAMPLES, dump, example, issues_after, only


def test_the_defaults_retrain_on_drift_with_a_ten_minute_wait_after_a_failure() -> None:
    policy = load_spec(EXAMPLES / "pump-faults.yaml").retrain
    assert policy.triggers.drift is True
    assert (policy.triggers.accuracy_drop, policy.triggers.schedule, policy.triggers.label_volume) == (
        None,
        None,
        None,
    )
    assert policy.holds.failure_cooldown == timedelta(minutes=10)
    assert policy.holds.cooldown is None
    assert policy.holds.no_new_data is True
    assert (policy.holds.budget.per_day, policy.holds.budget.per_week) == (None, None)


def test_every_field_parses(tmp_path: Path) -> None:
    data = example("pump-faults")
    data["retrain"] = {
        "triggers": {"drift": False, "accuracy_drop": 0.05, "schedule": "7d", "label_volume": 500},
        "holds": {"cooldown": "6h", "failure_cooldown": 30, "no_new_data": False, "budget": {"per_day": 2}},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(dump(data))
    policy = load_spec(path).retrain
    assert policy.triggers.schedule == timedelta(days=7)
    assert policy.holds.cooldown == timedelta(hours=6)
    assert policy.holds.failure_cooldown == timedelta(seconds=30)
    assert policy.holds.budget.per_day == 2


def _set(*path: str, value: Any) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        node = data.setdefault("retrain", {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("path", "value", "where", "says"),
    [
        (("triggers", "accuracy_drop"), 1.5, "retrain.triggers.accuracy_drop", "must be ≤ 1.0, got 1.5"),
        (("triggers", "accuracy_drop"), 0, "retrain.triggers.accuracy_drop", "must be > 0"),
        (("triggers", "schedule"), "weekly", "retrain.triggers.schedule", "is not a duration"),
        (("triggers", "label_volume"), 0, "retrain.triggers.label_volume", "must be ≥ 1, got 0"),
        (("holds", "cooldown"), "-5m", "retrain.holds.cooldown", "must be positive"),
        (("holds", "budget", "per_day"), 0, "retrain.holds.budget.per_day", "must be ≥ 1, got 0"),
        (("holds", "budget"), {"per_day": 5, "per_week": 3}, "retrain.holds.budget", "per_day (5) is more"),
        (("triggers", "drif"), True, "retrain.triggers.drif", "drift"),
    ],
)
def test_a_bad_value_names_its_field(path: tuple[str, ...], value: Any, where: str, says: str) -> None:
    issue = only(issues_after("pump-faults", _set(*path, value=value)))
    assert issue.path == where
    assert says in issue.message


def test_an_accuracy_trigger_needs_a_classifier() -> None:
    issue = only(issues_after("pump-power", _set("triggers", "accuracy_drop", value=0.05)))
    assert issue.path == "retrain.triggers.accuracy_drop"
    assert "a regression model has no accuracy to drop" in issue.message


def test_spec_check_refuses_a_bad_policy_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = example("pump-faults")
    data["retrain"] = {"holds": {"budget": {"per_day": 5, "per_week": 3}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["spec", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "retrain.holds.budget" in err
    assert "per_day (5) is more than per_week (3)" in err


def test_the_summary_has_the_policy_in_one_line() -> None:
    from edgeml.spec.summary import retrain_line

    spec = load_spec(EXAMPLES / "pump-faults.yaml")
    assert retrain_line(spec) == "on drift; 10m after a failure"
    policy = spec.retrain.model_copy(
        update={
            "triggers": spec.retrain.triggers.model_copy(
                update={"label_volume": 500, "schedule": timedelta(days=7)}
            ),
            "holds": spec.retrain.holds.model_copy(
                update={"budget": spec.retrain.holds.budget.model_copy(update={"per_day": 2})}
            ),
        }
    )
    assert retrain_line(spec.model_copy(update={"retrain": policy})) == (
        "on drift, 500 new labels, every 1w; 10m after a failure, ≤ 2/day"
    )
