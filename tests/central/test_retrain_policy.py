"""The retraining policy of the spec's `retrain:` section at the central node: each trigger fires,
each hold holds, and the decision says why — in the decision file, `edgeml central status` and
the fleet page.

Real parts: the spec file, a publisher's signed channel (the served version), the job as a real
local process (a short stand-in command instead of the pipeline), the audit log on the store, and
for labels the central node's DuckDB store with label landing into the lake. Round statuses are
what the monitor hands the policy (its drift and accuracy are computed in test_monitor.py).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from agent.conftest import Publisher
from central.conftest import ADMIN, bearer, make_config, running
from edgeml.audit import AuditLog
from edgeml.central.performance import AccuracyEstimate, RealizedAccuracy
from edgeml.central.retrain import current_retraining, stop_local_jobs
from edgeml.central.services.retraining import Retrainer, last_decision, retrainer
from edgeml.central.services.targets import TargetResolver
from edgeml.cli import main
from edgeml.settings import Settings
from edgeml.telemetry.schema import FeedbackItem, LoggedPrediction, PredictionLogBatch
from edgeml.telemetry.store import TelemetryStore

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "edgeml" / "examples"
MODEL = "pump-faults"
SNAP = "snap"  # the served version's snapshot (the publisher's manifests)
QUICK = [sys.executable, "-c", "pass"]
FOREVER = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"]
FAILS = [sys.executable, "-c", "raise SystemExit(3)"]


@dataclass
class Node:
    settings: Settings
    publisher: Publisher
    folder: Path

    def spec(self, **retrain: Any) -> Path:
        data = yaml.safe_load((EXAMPLES / f"{MODEL}.yaml").read_text())
        data["retrain"] = retrain
        path = self.folder / f"{MODEL}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def policy(
        self, entrypoint: list[str] = QUICK, db: TelemetryStore | None = None, **retrain: Any
    ) -> Retrainer:
        config = make_config(
            self.folder / "central",
            retrain={"spec": str(self.spec(**retrain)), "home": str(self.settings.home)},
        )
        resolver = TargetResolver(self.publisher.store, self.publisher.ring, 0)
        found = retrainer(config, self.settings, resolver, db, entrypoint=entrypoint)
        assert found is not None
        return found


@pytest.fixture
def node(tmp_path: Path, publisher: Publisher) -> Any:
    """v1 of pump-faults served on stable, and a home whose store has a snapshot of its data."""
    from edgeml.ingest.lake import take_snapshot
    from edgeml.spec import load_spec
    from edgeml.store import store_from_settings

    settings = Settings(home=tmp_path / "home")
    take_snapshot(store_from_settings(settings), load_spec(EXAMPLES / f"{MODEL}.yaml"))
    publisher.model = MODEL
    publisher.release(1)
    yield Node(settings, publisher, tmp_path)
    stop_local_jobs(settings)


def status(
    group: str = "line-a",
    drifted: tuple[str, ...] = (),
    estimate: AccuracyEstimate | None = None,
    realized: RealizedAccuracy | None = None,
    version: int = 1,
) -> Any:
    return SimpleNamespace(
        model=MODEL,
        version=version,
        group=group,
        snapshot=SNAP,
        drifted=list(drifted),
        estimate=estimate,
        realized=realized,
        nannyml=None,
    )


def estimate(estimated: float, reference: float = 0.93, group: str = "line-a") -> AccuracyEstimate:
    return AccuracyEstimate(
        model=MODEL,
        version=1,
        group=group,
        rows=500,
        estimated=estimated,
        reference=reference,
        tolerance=0.02,
        drop=reference - estimated,
        alarm=False,
        classes=[],
    )


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ended(settings: Settings) -> bool:
    job = current_retraining(MODEL, settings)
    return job is not None and job.state not in ("pending", "running")


# --- triggers ------------------------------------------------------------------------------------


def test_drift_fires_and_the_decision_the_job_and_the_audit_say_why(node: Node) -> None:
    policy = node.policy()
    decision = policy.round([status(drifted=("temperature",)), status("line-b")])
    assert decision.outcome == "retrained"
    assert decision.trigger == "drift"
    assert decision.reason == "retrained: v1 drifted in line-a: temperature"
    assert "drift: v1 drifted in line-a: temperature" in decision.triggers
    assert "schedule: off" in decision.triggers
    job = current_retraining(MODEL, node.settings)
    assert job is not None
    assert job.job_id == decision.job_id
    assert job.reason == "v1 drifted in line-a: temperature"
    assert last_decision(node.settings, MODEL) == decision
    entry = AuditLog(node.publisher.store).entries()[-1]
    assert (entry.action, entry.subject, entry.reason) == (
        "retrain.submit",
        MODEL,
        "v1 drifted in line-a: temperature",
    )
    assert entry.after is not None
    assert entry.after["trigger"] == "drift"
    assert entry.after["groups"] == ["line-a"]


def test_with_drift_off_a_drifted_version_waits(node: Node) -> None:
    decision = node.policy(triggers={"drift": False}).round([status(drifted=("temperature",))])
    assert (decision.outcome, decision.reason) == ("waiting", "waiting: no trigger fired")
    assert "drift: off" in decision.triggers
    assert current_retraining(MODEL, node.settings) is None


def test_realized_accuracy_with_enough_labels_outranks_the_estimate(node: Node) -> None:
    policy = node.policy(triggers={"accuracy_drop": 0.05, "accuracy_min_labels": 100})
    # 99 labels are too few: the estimate (0.92, 0.01 below) decides, and it is within the limit
    few = RealizedAccuracy(rows=99, correct=60, accuracy=60 / 99)
    decision = policy.round([status(estimate=estimate(0.92), realized=few)])
    assert decision.outcome == "waiting"
    assert "accuracy_drop: largest drop 0.010 ≤ 0.05" in decision.triggers
    enough = RealizedAccuracy(rows=200, correct=140, accuracy=0.7)
    decision = policy.round([status(estimate=estimate(0.92), realized=enough)])
    assert decision.outcome == "retrained"
    assert decision.reason == (
        "retrained: v1 realized accuracy 0.700 in line-a is 0.230 below its holdout 0.930 (> 0.05)"
    )


def test_an_estimated_drop_fires_for_the_groups_that_dropped(node: Node) -> None:
    policy = node.policy(triggers={"accuracy_drop": 0.05})
    decision = policy.round(
        [status("line-a", estimate=estimate(0.80)), status("line-b", estimate=estimate(0.91))]
    )
    assert decision.reason == (
        "retrained: v1 estimated accuracy 0.800 in line-a is 0.130 below its holdout 0.930 (> 0.05)"
    )
    job = current_retraining(MODEL, node.settings)
    assert job is not None
    entry = AuditLog(node.publisher.store).entries()[-1]
    assert entry.after is not None
    assert entry.after["groups"] == ["line-a"]


def test_without_calibrated_sums_nannyml_cbpe_is_the_estimate(node: Node) -> None:
    """v2 on the canary, its manifest's holdout accuracy the reference of NannyML's CBPE estimate."""
    from agent.conftest import with_golden
    from bundle.conftest import make_manifest, write_model
    from edgeml.bundle.build import publish_bundle
    from edgeml.bundle.rollout import publish as publish_channel
    from edgeml.central.monitor import NannyMLRun
    from edgeml.central.performance import NannyEstimate, NannyMLReport

    folder = node.folder / "build-2"
    manifest = make_manifest(write_model(folder, 2), 2, model=MODEL)
    manifest = with_golden(manifest.model_copy(update={"metrics": {"holdout_accuracy": 0.95}}), folder)
    publish_bundle(node.publisher.store, node.publisher.signer, manifest, folder)
    publish_channel(node.publisher.store, node.publisher.signer, MODEL, 2, "canary", percent=100)
    cbpe = NannyEstimate(estimator="CBPE", metric="accuracy", value=0.81, lower=0.9, upper=1.0, alert=True)
    run = NannyMLRun(datetime.now(UTC), NannyMLReport(rows=500, drift=[], performance=cbpe))
    policy = node.policy(triggers={"accuracy_drop": 0.1})
    old = status("line-b", estimate=estimate(0.5))  # v1, superseded by v2: left alone
    decision = policy.round([old, SimpleNamespace(**{**vars(status("line-a", version=2)), "nannyml": run})])
    assert decision.reason == (
        "retrained: v2 NannyML CBPE accuracy 0.810 in line-a is 0.140 below its holdout 0.950 (> 0.1)"
    )


def _predict_and_label(db: TelemetryStore, ids: range) -> None:
    rows = [
        LoggedPrediction(
            prediction_id=f"p{i}",
            model=MODEL,
            version=1,
            at=datetime.now(UTC),
            inputs={"temperature": 70.0 + i},
            prediction="ok",
        )
        for i in ids
    ]
    batch_id = f"{ids.start:032d}"
    db.add_predictions(PredictionLogBatch(device_id="dev-1", batch_id=batch_id, predictions=rows))
    db.add_labels([FeedbackItem(prediction_id=f"p{i}", label="overheating") for i in ids], source="admin")


def test_label_volume_fires_at_the_threshold_and_lands_the_labels(node: Node) -> None:
    from edgeml.ingest.lake import list_snapshots

    config = make_config(node.folder / "central")
    with running(config) as central:
        central.register("dev-1", group="line-a", model=MODEL)
        policy = node.policy(db=central.store, triggers={"drift": False, "label_volume": 3})
        _predict_and_label(central.store, range(2))
        decision = policy.round([])
        assert decision.outcome == "waiting"
        assert "label_volume: 2 of 3 new labels" in decision.triggers
        _predict_and_label(central.store, range(2, 3))
        decision = policy.round([])
        assert decision.reason == "retrained: 3 new labels ≥ 3"
        job = current_retraining(MODEL, node.settings)
        assert job is not None
        assert job.new_labels
        (landed,) = list_snapshots(node.publisher.store, f"{MODEL}.labels")
        assert (landed.rows, job.labels_snapshot) == (3, landed.id)
        wait_until(lambda: ended(node.settings))
        decision = policy.round([])  # those labels went into that job: the count starts again
        assert "label_volume: 0 of 3 new labels" in decision.triggers
        assert decision.outcome == "waiting"


def test_schedule_counts_from_the_build_then_from_the_last_job(node: Node) -> None:
    policy = node.policy(triggers={"schedule": "2h"})
    now = datetime.now(UTC)
    decision = policy.round([], now)
    assert decision.outcome == "waiting"
    assert "schedule: next in 2 h" in decision.triggers  # v1 was built just now
    decision = policy.round([], now + timedelta(hours=2, minutes=1))
    assert decision.outcome == "retrained"
    assert decision.reason.startswith("retrained: 2 h ")
    assert decision.reason.endswith(" since v1 was built (every 2 h)")
    wait_until(lambda: ended(node.settings))
    job = current_retraining(MODEL, node.settings)
    assert job is not None
    decision = policy.round([], job.submitted_at + timedelta(hours=1))
    assert decision.outcome == "waiting"
    assert "schedule: next in 1 h" in decision.triggers


# --- holds ---------------------------------------------------------------------------------------


def test_one_job_at_a_time(node: Node) -> None:
    policy = node.policy(entrypoint=FOREVER)
    first = policy.round([status(drifted=("temperature",))])
    decision = policy.round([status(drifted=("pressure",))])
    assert decision.outcome == "held"
    assert decision.reason == (
        f"held: job {first.job_id} is still running (one job at a time per dataset) "
        "(drift: v1 drifted in line-a: pressure)"
    )


def test_no_new_data_holds_a_version_retrained_on_until_labels_or_a_new_version(node: Node) -> None:
    policy = node.policy()
    first = policy.round([status(drifted=("temperature",))])
    wait_until(lambda: ended(node.settings))
    decision = policy.round([status(drifted=("temperature",))])
    assert decision.outcome == "held"
    assert decision.reason.startswith(
        f"held: no new data: v1's data (snapshot {SNAP}) went into job {first.job_id} and no field labels "
        "arrived since"
    )
    decision = node.policy(holds={"no_new_data": False}).round([status(drifted=("temperature",))])
    assert decision.outcome == "retrained"
    job = current_retraining(MODEL, node.settings)
    assert job is not None
    assert job.job_id == decision.job_id


def test_a_failed_job_waits_the_failure_cooldown_then_the_same_data_is_tried_again(node: Node) -> None:
    policy = node.policy(entrypoint=FAILS, holds={"failure_cooldown": "10m"})
    first = policy.round([status(drifted=("temperature",))])
    wait_until(lambda: ended(node.settings))
    job = current_retraining(MODEL, node.settings)
    assert job is not None
    assert job.state == "failed"
    assert job.ended_at is not None
    decision = policy.round([status(drifted=("temperature",))])
    assert decision.outcome == "held"
    assert decision.reason.startswith(
        f"held: job {first.job_id} failed on this data; it is tried again in 10 min (failure_cooldown 10 min)"
    )
    later = policy.round([status(drifted=("temperature",))], job.ended_at + timedelta(minutes=10, seconds=1))
    assert later.outcome == "retrained"


def test_cooldown_holds_any_trigger_between_two_jobs(node: Node) -> None:
    policy = node.policy(triggers={"schedule": "1s"}, holds={"cooldown": "1h"})
    first = policy.round([], datetime.now(UTC) + timedelta(seconds=2))
    assert first.outcome == "retrained"
    wait_until(lambda: ended(node.settings))
    job = current_retraining(MODEL, node.settings)
    assert job is not None
    decision = policy.round([], job.submitted_at + timedelta(minutes=56))
    assert decision.outcome == "held"
    assert decision.reason.startswith("held: cooldown 4 min left (of 1 h between jobs) (schedule: ")


def test_the_budget_holds_once_the_day_has_its_jobs(node: Node) -> None:
    policy = node.policy(triggers={"schedule": "1s"}, holds={"budget": {"per_day": 2}})
    for _ in range(2):
        assert policy.round([], datetime.now(UTC) + timedelta(seconds=2)).outcome == "retrained"
        wait_until(lambda: ended(node.settings))
    decision = policy.round([], datetime.now(UTC) + timedelta(seconds=2))
    assert decision.outcome == "held"
    assert decision.reason.startswith("held: budget 2 jobs/day reached; the next fits in ")
    next_day = policy.round([], datetime.now(UTC) + timedelta(days=1, seconds=1))
    assert next_day.outcome == "retrained"


# --- where the decision is shown -----------------------------------------------------------------


def test_the_monitor_round_runs_the_policy_and_status_and_page_show_it(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = node.spec(triggers={"schedule": "7d", "label_volume": 500}, holds={"budget": {"per_day": 2}})
    central_yaml = node.folder / "central" / "central.yaml"
    config = make_config(
        node.folder / "central",
        store={"url": node.publisher.store.url},
        keyring=str(node.publisher.ring),
        retrain={"spec": str(spec), "home": str(node.settings.home)},
        monitor={"interval_s": 3600},
    )
    central_yaml.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    with running(config) as central:
        monitor = central.app.state.central.monitor
        assert monitor is not None
        monitor.evaluate()  # no telemetry at all: the schedule and label volume are still weighed
        decision = last_decision(node.settings, MODEL)
        assert decision is not None
        assert decision.outcome == "waiting"
        assert "label_volume: 0 of 500 new labels" in decision.triggers
        assert "schedule: next in 7 d" in decision.triggers

        page = central.client.get("/", headers=bearer(ADMIN)).text
        assert "schedule: every 7 d since the last job" in page
        assert "budget: at most 2 jobs/day" in page
        assert "waiting: no trigger fired" in page
        assert "label_volume: 0 of 500 new labels" in page

        held = node.policy(entrypoint=FOREVER, triggers={"drift": True})
        held.round([status(drifted=("temperature",))])
        held.round([status(drifted=("pressure",))])
        page = central.client.get("/", headers=bearer(ADMIN)).text
        assert "held: job edgeml-retrain-pump-faults-" in page
        assert "v1 drifted in line-a: temperature" in page  # the running job's trigger

    assert main(["central", "status", "--config", str(central_yaml)]) == 0
    out = capsys.readouterr().out
    assert "trigger: drift: a drift breach" in out
    assert "hold: one job at a time per dataset" in out
    assert "last decision" in out
    assert "held: job edgeml-retrain-pump-faults-" in out
    assert "(triggered by v1 drifted in line-a: temperature)" in out
    assert main(["central", "status", "--config", str(central_yaml), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["last_decision"]["outcome"] == "held"
    assert shown["policy"]["triggers"]["drift"] is True
    assert shown["last_job"]["reason"] == "v1 drifted in line-a: temperature"
