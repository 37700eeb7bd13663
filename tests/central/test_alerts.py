"""Alerts against a real webhook receiver on 127.0.0.1; retraining as a real local job."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.conftest import Publisher
from edgeml.audit import AuditLog
from edgeml.central.alerts import ACCURACY_ALERT, DRIFT_ALERT, Alerter, Signal, accuracy_signal, drift_signals
from edgeml.central.drift import DriftReport, FeatureDrift, MethodScore
from edgeml.central.performance import AccuracyEstimate
from edgeml.central.retrain import current_retraining, submit_retraining
from edgeml.observability import REGISTRY
from edgeml.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "edgeml" / "examples"


class Webhook:
    """A webhook receiver: answers from a script of (status, delay), then 200; keeps every body."""

    def __init__(self) -> None:
        self.script: deque[tuple[int, float]] = deque()
        self.bodies: list[dict[str, Any]] = []
        self.answered: list[int] = []
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    status, delay = owner.script.popleft() if owner.script else (200, 0.0)
                    owner.bodies.append(body)
                    owner.answered.append(status)
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.stop()


class Clock:
    """A clock the test moves by hand (the Alerter's repeat interval is minutes to hours)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _signal(firing: bool, feature: str = "car_value", group: str = "line-1") -> Signal:
    return Signal(
        alert=DRIFT_ALERT,
        model="car-loan",
        version=3,
        group=group,
        feature=feature,
        firing=firing,
        values={"js": 0.4 if firing else 0.01},
        thresholds={"js": 0.03},
    )


def _sent(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("edgeml_alerts_sent_total", {"kind": kind, "outcome": outcome}) or 0.0


def test_retries_until_the_receiver_takes_it(webhook: Webhook) -> None:
    webhook.script.extend([(503, 0.0), (500, 0.0), (429, 0.0)])
    before = _sent("firing", "ok")
    with Alerter(webhook.url, retries=3, backoff_s=0.01) as alerter:
        [delivery] = alerter.process([_signal(True)])
    assert delivery.ok
    assert delivery.attempts == 4
    assert webhook.answered == [503, 500, 429, 200]
    body = webhook.bodies[-1]
    assert body["alert"] == DRIFT_ALERT
    assert body["status"] == "firing"
    assert (body["model"], body["version"], body["group"], body["feature"]) == (
        "car-loan",
        3,
        "line-1",
        "car_value",
    )
    assert body["values"] == {"js": 0.4}
    assert body["thresholds"] == {"js": 0.03}
    assert body["fingerprint"] == _signal(True).fingerprint == _signal(False).fingerprint
    assert body["started_at"]
    assert body["ended_at"] is None
    assert _sent("firing", "ok") == before + 1


def test_a_slow_receiver_times_out_and_is_retried(webhook: Webhook) -> None:
    webhook.script.append((200, 1.0))
    with Alerter(webhook.url, retries=2, backoff_s=0.01, timeout_s=0.2) as alerter:
        [delivery] = alerter.process([_signal(True)])
    assert delivery.ok
    assert delivery.attempts == 2
    assert len(webhook.bodies) == 2


def test_firing_is_sent_once_repeated_after_the_interval_and_resolved_once(webhook: Webhook) -> None:
    clock = Clock()
    with Alerter(webhook.url, repeat_after_s=3600, clock=clock) as alerter:
        assert [d.status for d in alerter.process([_signal(True), _signal(False, "loan_length")])] == [
            "firing"
        ]
        clock.now += 600
        assert alerter.process([_signal(True)]) == []  # still firing: not sent again
        assert [s.feature for s in alerter.firing] == ["car_value"]
        clock.now += 3000
        assert [d.status for d in alerter.process([_signal(True)])] == ["firing"]  # the reminder
        assert alerter.process([]) == []  # not evaluated: nothing changes
        [resolved] = alerter.process([_signal(False)])
        assert resolved.status == "resolved"
        assert resolved.ok
        assert alerter.process([_signal(False)]) == []  # resolved once
        assert alerter.firing == []
    statuses = [b["status"] for b in webhook.bodies]
    assert statuses == ["firing", "firing", "resolved"]
    assert len({b["fingerprint"] for b in webhook.bodies}) == 1
    assert webhook.bodies[0]["started_at"] == webhook.bodies[2]["started_at"]
    assert webhook.bodies[2]["ended_at"] is not None


def test_a_failed_delivery_is_tried_again_at_the_next_evaluation(webhook: Webhook) -> None:
    webhook.script.extend([(503, 0.0)] * 3)
    before = _sent("firing", "failed")
    with Alerter(webhook.url, retries=2, backoff_s=0.01) as alerter:
        [failed] = alerter.process([_signal(True)])
        assert not failed.ok
        assert failed.attempts == 3
        assert failed.error == "HTTP 503"
        assert _sent("firing", "failed") == before + 1
        [again] = alerter.process([_signal(True)])
        assert again.ok
        assert alerter.process([_signal(True)]) == []


def test_a_refusal_is_not_retried(webhook: Webhook) -> None:
    webhook.script.append((400, 0.0))
    with Alerter(webhook.url, retries=3, backoff_s=0.01) as alerter:
        [refused] = alerter.process([_signal(True)])
        assert not refused.ok
        assert refused.attempts == 1
        # it cleared before anyone heard it fired: no resolve message either
        assert alerter.process([_signal(False)]) == []
    assert webhook.answered == [400]


def test_an_unreachable_receiver_fails_cleanly() -> None:
    hook = Webhook()
    url = hook.url
    hook.stop()  # nothing listens there any more
    with Alerter(url, retries=1, backoff_s=0.01, timeout_s=0.5) as alerter:
        [delivery] = alerter.process([_signal(True)])
    assert not delivery.ok
    assert delivery.attempts == 2
    assert "ConnectError" in (delivery.error or "")


def test_signals_from_drift_and_accuracy_results() -> None:
    score = MethodScore(method="js", value=0.4, threshold=0.03, breached=True)
    report = DriftReport(
        model="car-loan",
        version=3,
        group="line-1",
        start=datetime(2025, 3, 1, tzinfo=UTC),
        end=datetime(2025, 3, 1, 1, tzinfo=UTC),
        rows=5000,
        features=[
            FeatureDrift(
                feature="car_value",
                kind="feature",
                method="js",
                value=0.4,
                threshold=0.03,
                breached=True,
                rows=5000,
                reference_rows=50000,
                missing=0,
                out_of_range=0,
                counts=[1],
                reference_counts=[1],
                scores=[score],
            )
        ],
    )
    [signal] = drift_signals(report)
    assert signal.firing
    assert signal.values == {"js": 0.4, "rows": 5000.0}
    assert signal.thresholds == {"js": 0.03}
    assert signal.fingerprint == _signal(True).fingerprint
    estimate = AccuracyEstimate(
        model="car-loan",
        version=3,
        group=None,
        rows=5000,
        estimated=0.91,
        reference=0.95,
        tolerance=0.02,
        drop=0.04,
        alarm=True,
        classes=[],
    )
    acc = accuracy_signal(estimate)
    assert acc.alert == ACCURACY_ALERT
    assert acc.firing
    assert acc.feature is None
    assert acc.thresholds["accuracy"] == pytest.approx(0.93)


# --- retraining ------------------------------------------------------------------------------


@pytest.fixture
def appliance(tmp_path: Path) -> tuple[Settings, Path, str]:
    """A home whose store holds one snapshot of the pump-faults dataset."""
    from edgeml.ingest.lake import take_snapshot
    from edgeml.spec import load_spec
    from edgeml.store import store_from_settings

    settings = Settings(home=tmp_path / "home")
    spec_path = EXAMPLES / "pump-faults.yaml"
    snapshot = take_snapshot(store_from_settings(settings), load_spec(spec_path))
    return settings, spec_path, snapshot.id


def _jobs(outcome: str) -> float:
    return REGISTRY.get_sample_value("edgeml_retrain_jobs_total", {"outcome": outcome}) or 0.0


def _wait_done(name: str, settings: Settings, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = current_retraining(name, settings)
        assert job is not None
        if job.state not in ("pending", "running"):
            return job.state
        time.sleep(0.05)
    raise AssertionError("the job did not finish")


def test_retraining_runs_one_local_job_at_a_time(
    appliance: tuple[Settings, Path, str], tmp_path: Path
) -> None:
    settings, spec_path, snapshot = appliance
    gate = tmp_path / "go"
    # stands in for the pipeline: runs until the test lets it finish, and sees the settings it is given
    script = (
        "import os, pathlib, sys, time\n"
        f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.02)\n"
        "print(os.environ['EDGEML_HOME'], os.environ['EDGEML_STORE_URL'], os.environ['EDGEML_AUDIT_ACTOR'])\n"
    )
    submitted, succeeded = _jobs("submitted"), _jobs("succeeded")
    first = submit_retraining(
        spec_path, settings, "an-older-snapshot", entrypoint=[sys.executable, "-c", script]
    )
    assert first.submitted
    assert first.job.backend == "local"
    assert first.job.snapshot == snapshot
    assert first.job.since_snapshot == "an-older-snapshot"
    assert _jobs("submitted") == submitted + 1
    # while it runs, another trigger gets the running job back
    again = submit_retraining(
        spec_path, settings, "an-older-snapshot", entrypoint=[sys.executable, "-c", script]
    )
    assert not again.submitted
    assert again.job.job_id == first.job.job_id
    assert again.job.state == "running"
    assert _jobs("submitted") == submitted + 1
    gate.touch()
    assert _wait_done("pump-faults", settings) == "succeeded"
    assert _jobs("succeeded") == succeeded + 1
    assert current_retraining("pump-faults", settings).state == "succeeded"  # type: ignore[union-attr]
    assert _jobs("succeeded") == succeeded + 1  # counted once
    assert first.job.log is not None
    assert Path(first.job.log).read_text().split() == [
        str(settings.home),
        settings.store_url,
        f"central:retrain:{first.job.job_id}",  # what the job publishes is audited as its doing
    ]

    failing = submit_retraining(
        spec_path, settings, "an-older-snapshot", entrypoint=[sys.executable, "-c", "raise SystemExit(3)"]
    )
    assert failing.submitted
    assert failing.job.job_id != first.job.job_id
    failed = _jobs("failed")
    assert _wait_done("pump-faults", settings) == "failed"
    assert _jobs("failed") == failed + 1


def test_the_default_command_is_the_pipeline_to_the_canary_of_the_drifted_groups(
    appliance: tuple[Settings, Path, str],
) -> None:
    settings, spec_path, _ = appliance
    # the real entry point: on a store with nothing landed, the pipeline fails fast and says why
    job = submit_retraining(spec_path, settings, "an-older-snapshot", groups=["line-a"]).job
    assert job.entrypoint == [
        str(Path(sys.executable).with_name("edgeml")),
        "pipeline",
        "run",
        str(spec_path),
        "--since-snapshot",
        "an-older-snapshot",
        "--channel",
        "canary",
        "--percent",
        "100",
        "--group",
        "line-a",
    ]
    assert _wait_done("pump-faults", settings, timeout=90) == "failed"
    assert job.log is not None
    assert "error: source 'history': no files match 'landing/pumps/*.csv'" in Path(job.log).read_text()


def test_stopping_ends_the_local_jobs_this_process_started(
    appliance: tuple[Settings, Path, str],
) -> None:
    from edgeml.central.retrain import stop_local_jobs

    settings, spec_path, _ = appliance
    forever = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"]
    job = submit_retraining(spec_path, settings, "an-older-snapshot", entrypoint=forever).job
    assert job.pid is not None
    assert stop_local_jobs(settings) == [job.job_id]
    with pytest.raises(ProcessLookupError):
        os.kill(job.pid, 0)  # gone, and reaped
    assert current_retraining("pump-faults", settings).state == "stopped"  # type: ignore[union-attr]
    assert stop_local_jobs(settings) == []


def test_drift_of_a_version_already_superseded_does_not_retrain(
    appliance: tuple[Settings, Path, str], publisher: Publisher, tmp_path: Path
) -> None:
    """After v2 reached the canary, v1's drifted telemetry still in the window must not start a job."""
    from types import SimpleNamespace

    from central.conftest import make_config
    from edgeml.central.retrain import stop_local_jobs
    from edgeml.central.services.retraining import retrainer
    from edgeml.central.services.targets import TargetResolver

    settings, spec_path, snapshot = appliance
    publisher.model = "pump-faults"
    publisher.release(1)
    publisher.release(2, "canary", percent=100, groups=["line-b"])
    config = make_config(tmp_path / "central", retrain={"spec": str(spec_path)})
    retrain = retrainer(config, settings, TargetResolver(publisher.store, publisher.ring, 0))
    assert retrain is not None

    def drifted(version: int) -> Any:
        return SimpleNamespace(
            model="pump-faults", version=version, group="line-b", snapshot=snapshot, drifted=["temperature"]
        )

    retrain.round([drifted(1)])
    assert current_retraining("pump-faults", settings) is None
    retrain.round([drifted(2)])  # the newest version drifting: that one is retrained on what landed since
    job = current_retraining("pump-faults", settings)
    assert job is not None
    assert job.since_snapshot == snapshot
    assert job.entrypoint[-2:] == ["--group", "line-b"]
    stop_local_jobs(settings)
    entry = AuditLog(publisher.store).entries()[-1]
    assert (entry.actor, entry.action, entry.subject) == ("central:auto", "retrain.submit", "pump-faults")
    assert entry.after == {
        "job": job.job_id,
        "since_snapshot": snapshot,
        "groups": ["line-b"],
        "trigger": "drift",
    }
    assert entry.reason == "v2 drifted in line-b: temperature"


def test_new_labels_are_landed_and_retrain_a_version_whose_data_was_retrained_on(
    appliance: tuple[Settings, Path, str], publisher: Publisher, tmp_path: Path
) -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from central.conftest import make_config, running
    from edgeml.central.retrain import stop_local_jobs
    from edgeml.central.services.retraining import retrainer
    from edgeml.central.services.targets import TargetResolver
    from edgeml.ingest.lake import list_snapshots
    from edgeml.telemetry.schema import FeedbackItem, LoggedPrediction, PredictionLogBatch

    settings, spec_path, snapshot = appliance
    publisher.model = "pump-faults"
    publisher.release(1)
    config = make_config(tmp_path / "central", retrain={"spec": str(spec_path)})
    drifted = SimpleNamespace(
        model="pump-faults", version=1, group="line-a", snapshot=snapshot, drifted=["temperature"]
    )
    with running(config) as central:
        resolver = TargetResolver(publisher.store, publisher.ring, 0)
        retrain = retrainer(config, settings, resolver, central.store)
        assert retrain is not None
        retrain.round([drifted])
        first = current_retraining("pump-faults", settings)
        assert first is not None
        assert (first.labels_snapshot, first.new_labels) == (None, False)
        assert "--since-snapshot" in first.entrypoint
        stop_local_jobs(settings)
        retrain.round([drifted])  # the same data again, no labels: nothing new to train on
        assert current_retraining("pump-faults", settings).job_id == first.job_id  # type: ignore[union-attr]

        central.register("dev-1", group="line-a", model="pump-faults")
        row = LoggedPrediction(
            prediction_id="p1",
            model="pump-faults",
            version=1,
            at=datetime.now(UTC),
            inputs={"temperature": 71.5},
            prediction="ok",
        )
        central.store.add_predictions(
            PredictionLogBatch(device_id="dev-1", batch_id="0" * 32, predictions=[row])
        )
        central.store.add_labels([FeedbackItem(prediction_id="p1", label="overheating")], source="admin")
        retrain.round([drifted])  # new labels are new data: landed, and a job trains on them
        second = current_retraining("pump-faults", settings)
        assert second is not None
        assert second.job_id != first.job_id
        assert second.new_labels
        assert "--since-snapshot" not in second.entrypoint
        stop_local_jobs(settings)
        retrain.round([drifted])  # those labels were trained on (the job's end aside): no third job
        assert current_retraining("pump-faults", settings).job_id == second.job_id  # type: ignore[union-attr]
    (landed,) = list_snapshots(publisher.store, "pump-faults.labels")
    assert landed.rows == 1
    assert second.labels_snapshot == landed.id
