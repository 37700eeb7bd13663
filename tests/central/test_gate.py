"""Quality-gated rollout: real signed pointers on a store, real telemetry and labels in DuckDB.

The gate reads the canary's rule from its signed manifest, compares it with the stable
champion on the canary's groups, and rolls back or promotes through the signed, audited
rollout path; devices then see the pointers it wrote.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.conftest import Publisher, with_golden
from bundle.conftest import make_manifest, write_model
from central.conftest import ADMIN, bearer, make_config, running
from central.test_alerts import Webhook
from edgeml.audit import AuditLog
from edgeml.bundle.build import publish_bundle
from edgeml.bundle.channels import pointer_key
from edgeml.bundle.rollout import current, publish
from edgeml.central.alerts import Alerter
from edgeml.central.gate import ACTOR, QualityGate
from edgeml.central.services.targets import TargetResolver
from edgeml.errors import ConfigError
from edgeml.observability import REGISTRY
from edgeml.spec.models import CanaryGate
from edgeml.telemetry.db.store import DuckDBStore
from edgeml.telemetry.schema import CalibratedSums, FeatureTelemetry, FeedbackItem
from telemetry.batches import make_batch

GATE = CanaryGate(soak_s=60, margin=0.02, min_rows=200, min_labels=100)


@pytest.fixture
def receiver() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.stop()


def _release(publisher: Publisher, version: int, gate: CanaryGate | None = GATE) -> None:
    folder = publisher.work / f"build-{version}"
    manifest = with_golden(make_manifest(write_model(folder, version), version), folder)
    publish_bundle(publisher.store, publisher.signer, manifest.model_copy(update={"gate": gate}), folder)


@pytest.fixture
def fleet(publisher: Publisher, tmp_path: Path) -> Iterator[DuckDBStore]:
    """v1 on stable, v2 built; devices d-a (line-a) and d-b1, d-b2 (line-b) registered."""
    _release(publisher, 1)
    _release(publisher, 2)
    publish(publisher.store, publisher.signer, "pump", 1, "stable")
    with DuckDBStore(tmp_path / "telemetry.duckdb") as db:
        for device, group in (("d-a", "line-a"), ("d-b1", "line-b"), ("d-b2", "line-b")):
            db.register_device(group=group, profile="x86-64-generic", model="pump", device_id=device)
        yield db


def _canary(publisher: Publisher, percent: float = 100.0, groups: tuple[str, ...] = ("line-b",)) -> datetime:
    """v2 to the canary; returns when its pointer says it was published."""
    pointer = publish(
        publisher.store, publisher.signer, "pump", 2, "canary", percent=percent, groups=list(groups)
    )
    return datetime.fromisoformat(pointer.created)


def _telemetry(
    db: DuckDBStore, device: str, group: str, version: int, accuracy: float, rows: int, at: datetime
) -> None:
    """Batches of 50 rows whose calibrated sums expect ``accuracy``."""
    for i in range(rows // 50):
        batch = make_batch(
            device, group=group, version=version, rows=50, window_end=at + timedelta(seconds=i)
        )
        sums = CalibratedSums(sums={"ok": 35.0, "fault": 15.0}, expected_correct=50 * accuracy, rows=50)
        db.ingest(batch.model_copy(update={"calibration": sums}))


def _labels(db: DuckDBStore, device: str, version: int, accuracy: float, count: int) -> None:
    right = round(count * accuracy)
    db.add_feedback(
        [
            FeedbackItem(
                prediction_id=uuid.uuid4().hex,
                label="ok",
                predicted="ok" if i < right else "fault",
                model="pump",
                version=version,
                device_id=device,
            )
            for i in range(count)
        ],
        source="admin",
    )


def _gate(publisher: Publisher, db: DuckDBStore, alerter: Alerter | None = None) -> QualityGate:
    resolver = TargetResolver(publisher.store, publisher.ring, 60)
    return QualityGate(db, publisher.store, resolver, publisher.signer, alerter=alerter)


def _versions(publisher: Publisher) -> dict[str, int]:
    return {c: p.version for c in ("stable", "canary") if (p := current(publisher.store, "pump", c))}


def test_a_canary_below_the_champion_on_realized_accuracy_is_rolled_back(
    publisher: Publisher, fleet: DuckDBStore, receiver: Webhook
) -> None:
    _labels(fleet, "d-b1", 1, 0.90, 100)  # the champion on line-b before the canary took it over
    _canary(publisher)
    _labels(fleet, "d-b1", 2, 0.60, 150)
    with Alerter(receiver.url, backoff_s=0.01) as alerter:
        [decision] = _gate(publisher, fleet, alerter).evaluate(datetime.now(UTC) + timedelta(seconds=1))
    assert decision.action == "rollback"
    assert decision.metric == "realized"
    assert decision.canary.realized == pytest.approx(0.60)
    assert decision.champion.realized == pytest.approx(0.90)
    assert "canary v2 60.0%, champion v1 90.0%" in decision.reason
    # the canary channel now points back at v1, signed, saying why; devices follow it there
    pointer = current(publisher.store, "pump", "canary")
    assert pointer is not None
    assert pointer.version == 1
    assert pointer.rollback is not None
    assert (pointer.rollback.from_version, pointer.rollback.to_version) == (2, 1)
    assert _versions(publisher) == {"stable": 1, "canary": 1}
    entry = AuditLog(publisher.store).entries()[-1]
    assert (entry.actor, entry.action, entry.subject) == (ACTOR, "rollout.rollback", "pump/canary")
    assert entry.before["version"] == 2
    assert entry.after["version"] == 1
    assert "60.0%" in entry.reason
    [event] = receiver.bodies
    assert event["status"] == "event"
    assert event["alert"] == "canary_rollback"
    assert (event["version"], event["champion_version"], event["groups"]) == (2, 1, ["line-b"])
    assert REGISTRY.get_sample_value("edgeml_canary_actions_total", {"model": "pump", "action": "rollback"})
    # nothing is left to judge: a second round does nothing
    assert _gate(publisher, fleet).evaluate(datetime.now(UTC) + timedelta(seconds=2)) == []


def test_a_canary_that_holds_through_the_soak_is_promoted(publisher: Publisher, fleet: DuckDBStore) -> None:
    _labels(fleet, "d-b1", 1, 0.90, 100)
    started = _canary(publisher)
    _labels(fleet, "d-b2", 2, 0.89, 150)  # within the margin
    gate = _gate(publisher, fleet)
    [early] = gate.evaluate(datetime.now(UTC) + timedelta(seconds=1))
    assert early.action == "soak"
    assert "soaking" in early.reason
    assert _versions(publisher) == {"stable": 1, "canary": 2}
    [late] = gate.evaluate(started + timedelta(seconds=GATE.soak_s + 1))
    assert late.action == "promote"
    assert late.soaked_s >= GATE.soak_s
    assert _versions(publisher) == {"stable": 2, "canary": 2}
    stable = current(publisher.store, "pump", "stable")
    assert stable is not None
    assert stable.groups == []  # promotion is for every device
    assert stable.canary_percent == 100
    entry = AuditLog(publisher.store).entries()[-1]
    assert (entry.actor, entry.action, entry.subject) == (ACTOR, "rollout.promote", "pump/stable")
    assert gate.actions == [late]
    assert gate.evaluate(started + timedelta(seconds=GATE.soak_s + 2)) == []


def test_without_labels_the_label_free_estimate_decides(publisher: Publisher, fleet: DuckDBStore) -> None:
    now = datetime.now(UTC)
    _telemetry(fleet, "d-b1", "line-b", 1, 0.85, 300, now - timedelta(minutes=5))
    _canary(publisher)
    _telemetry(fleet, "d-b1", "line-b", 2, 0.70, 300, now + timedelta(seconds=2))
    [decision] = _gate(publisher, fleet).evaluate(now + timedelta(minutes=1))
    assert (decision.metric, decision.action) == ("estimated", "rollback")
    assert decision.canary.estimated == pytest.approx(0.70)
    assert decision.champion.estimated == pytest.approx(0.85)


def test_realized_accuracy_overrides_the_estimate_once_labels_suffice(
    publisher: Publisher, fleet: DuckDBStore
) -> None:
    now = datetime.now(UTC)
    _telemetry(fleet, "d-b1", "line-b", 1, 0.95, 300, now - timedelta(minutes=5))
    _labels(fleet, "d-b1", 1, 0.40, 100)  # the champion is confidently wrong on drifted readings
    _canary(publisher)
    _telemetry(fleet, "d-b1", "line-b", 2, 0.80, 300, now + timedelta(seconds=2))
    _labels(fleet, "d-b1", 2, 0.97, 150)
    [decision] = _gate(publisher, fleet).evaluate(now + timedelta(seconds=30))
    assert decision.metric == "realized"
    assert decision.action == "soak"  # the estimate alone would have rolled it back


def test_too_little_evidence_waits_even_past_the_soak(publisher: Publisher, fleet: DuckDBStore) -> None:
    _labels(fleet, "d-b1", 1, 0.90, 100)
    started = _canary(publisher)
    _labels(fleet, "d-b1", 2, 0.10, 20)  # terrible, but 20 labels prove nothing yet
    [decision] = _gate(publisher, fleet).evaluate(started + timedelta(hours=2))
    assert decision.action == "wait"
    assert decision.metric is None
    assert "not enough evidence" in decision.reason
    assert _versions(publisher) == {"stable": 1, "canary": 2}


def test_the_champion_is_judged_on_the_canary_groups_and_concurrently_when_it_can_be(
    publisher: Publisher, fleet: DuckDBStore
) -> None:
    _labels(fleet, "d-b1", 1, 0.50, 150)  # line-b before the canary: a bad hour
    _labels(fleet, "d-a", 1, 0.99, 400)  # line-a: not the canary's group
    _canary(publisher, percent=50)
    time.sleep(1.0)  # the pointer's time is to the second
    _labels(fleet, "d-b2", 1, 0.95, 160)  # line-b alongside the canary (half the devices)
    _labels(fleet, "d-b1", 2, 0.90, 150)
    [decision] = _gate(publisher, fleet).evaluate(datetime.now(UTC) + timedelta(seconds=1))
    assert decision.champion.labels == 160
    assert decision.champion.realized == pytest.approx(0.95)  # concurrent line-b, not line-a, not before
    assert decision.action == "rollback"


def test_the_rule_comes_from_the_canary_manifest(publisher: Publisher, fleet: DuckDBStore) -> None:
    _release(publisher, 3, CanaryGate(soak_s=0, margin=0.5, min_rows=10, min_labels=10))
    _labels(fleet, "d-b1", 1, 0.90, 100)
    publish(publisher.store, publisher.signer, "pump", 3, "canary", percent=100, groups=["line-b"])
    _labels(fleet, "d-b1", 3, 0.60, 20)  # 30 points below, inside this version's 50-point margin
    [decision] = _gate(publisher, fleet).evaluate(datetime.now(UTC) + timedelta(seconds=1))
    assert decision.gate.margin == 0.5
    assert decision.action == "promote"
    assert _versions(publisher) == {"stable": 3, "canary": 3}


def test_no_canary_a_withdrawn_one_or_no_champion_is_left_alone(
    publisher: Publisher, fleet: DuckDBStore
) -> None:
    gate = _gate(publisher, fleet)
    assert gate.evaluate() == []  # stable only
    publish(publisher.store, publisher.signer, "pump", 2, "canary", percent=0)
    assert gate.evaluate() == []  # withdrawn: no device follows it
    publisher.store.delete(pointer_key("pump", "stable"))
    publish(publisher.store, publisher.signer, "pump", 2, "canary", percent=100)
    assert gate.evaluate() == []  # nothing to compare with


def test_a_tampered_canary_pointer_is_not_acted_on(publisher: Publisher, fleet: DuckDBStore) -> None:
    _labels(fleet, "d-b1", 1, 0.90, 100)
    _canary(publisher)
    _labels(fleet, "d-b1", 2, 0.20, 150)
    key = pointer_key("pump", "canary")
    forged = json.loads(publisher.store.get(key)) | {"canary_percent": 50.0}
    publisher.store.put(key, json.dumps(forged).encode())
    assert _gate(publisher, fleet).evaluate(datetime.now(UTC) + timedelta(seconds=1)) == []
    assert not any(e.actor == ACTOR for e in AuditLog(publisher.store).entries())


def test_gate_config_names_what_it_needs(tmp_path: Path) -> None:
    from edgeml.central.config import load_central_config

    base = make_config(tmp_path / "c").model_dump(mode="json", exclude_none=True)
    path = tmp_path / "central.yaml"
    path.write_text(json.dumps(base | {"gate": {"enabled": True}}))
    with pytest.raises(ConfigError, match=r"gate\.enabled needs store, keyring, gate\.keys_home"):
        load_central_config(path)
    path.write_text(
        json.dumps(
            base
            | {
                "gate": {"enabled": True, "keys_home": str(tmp_path)},
                "store": {"url": "file:///tmp/x"},
                "keyring": str(tmp_path),
                "monitor": {"enabled": False},
            }
        )
    )
    with pytest.raises(ConfigError, match=r"needs monitor\.enabled"):
        load_central_config(path)


def test_the_running_node_promotes_a_canary_and_shows_it_on_v1_rollouts(
    publisher: Publisher, tmp_path: Path
) -> None:
    """End to end over HTTP: devices post telemetry, an operator posts labels, the node acts."""
    _release(publisher, 1)
    _release(publisher, 2, CanaryGate(soak_s=2, margin=0.02, min_rows=100, min_labels=100))
    publish(publisher.store, publisher.signer, "pump", 1, "stable")
    config = make_config(
        tmp_path / "central",
        store={"url": publisher.store.url},
        keyring=str(publisher.ring),
        monitor={"interval_s": 0.2, "window_s": 600, "min_rows": 1},
        gate={"enabled": True, "keys_home": str(publisher.home)},
    )
    with running(config) as central:
        token = central.register("d-b1", group="line-b")
        admin = bearer(ADMIN)

        def post_labels(version: int, accuracy: float) -> None:
            labels = [
                {
                    "prediction_id": uuid.uuid4().hex,
                    "label": "ok",
                    "predicted": "ok" if i < accuracy * 100 else "fault",
                    "model": "pump",
                    "version": version,
                    "device_id": "d-b1",
                }
                for i in range(100)  # the gate's min_labels: the champion's latest 100 are all of them
            ]
            central.client.post("/v1/feedback", json={"labels": labels}, headers=admin).raise_for_status()

        for i in range(4):  # binned as the test manifest's reference is
            batch = make_batch("d-b1", group="line-b", version=1, rows=50)
            features = {name: FeatureTelemetry(edges=[0.0], counts=[25, 25]) for name in ("a", "b")}
            answer = central.post(batch.model_copy(update={"features": features}), token)
            assert answer.status_code == 200, (i, answer.text)
        post_labels(1, 0.80)
        view = central.client.get("/v1/rollouts").json()
        assert view == {"enabled": True, "canaries": [], "actions": []}
        _canary(publisher)
        post_labels(2, 0.90)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            view = central.client.get("/v1/rollouts").json()
            if view["actions"]:
                break
            time.sleep(0.2)
        [action] = view["actions"]
        assert action["action"] == "promote"
        assert action["metric"] == "realized"
        assert action["canary"]["realized_accuracy"] == pytest.approx(0.90)
        assert action["champion"]["realized_accuracy"] == pytest.approx(0.80)
        assert _versions(publisher) == {"stable": 2, "canary": 2}
        # the device is told to move: its target is now v2 on stable
        target = central.client.get("/v1/targets/d-b1", headers=bearer(token))
        assert target.status_code == 200, target.text
        assert target.json()["target"]["version"] == 2
        # the fleet page shows the decision and the audit entry it left
        page = central.client.get("/").text
        assert '<table id="rollouts">' in page
        assert "<strong>promote</strong>" in page
        assert "central:quality-gate</td><td>rollout.promote</td><td>pump/stable</td><td>v1 → v2" in page
        metrics = central.client.get("/metrics").text
        assert (
            'edgeml_canary_accuracy_ratio{metric="realized",model="pump",side="canary",version="2"} 0.9'
            in metrics
        )


def test_a_sox_canary_that_holds_is_not_promoted_without_an_approval(
    publisher: Publisher, fleet: DuckDBStore, tmp_path: Path
) -> None:
    from edgeml.bundle.approval import approve
    from edgeml.bundle.keys import KeyRing, export_public, init_keys, load_signer

    folder = publisher.work / "build-3"
    manifest = with_golden(make_manifest(write_model(folder, 3), 3, compliance="sox"), folder)
    publish_bundle(publisher.store, publisher.signer, manifest.model_copy(update={"gate": GATE}), folder)
    pointer = publish(publisher.store, publisher.signer, "pump", 3, "canary", percent=100, groups=["line-b"])
    started = datetime.fromisoformat(pointer.created)
    _labels(fleet, "d-b1", 1, 0.90, 100)
    _labels(fleet, "d-b2", 3, 0.90, 150)
    init_keys(tmp_path / "carol")
    export_public(tmp_path / "carol", publisher.ring)  # the node's ring, as the devices hold it
    resolver = TargetResolver(publisher.store, publisher.ring, 60)
    gate = QualityGate(
        fleet, publisher.store, resolver, publisher.signer, approvers=KeyRing.from_dir(publisher.ring)
    )
    [held] = gate.evaluate(started + timedelta(seconds=GATE.soak_s + 1))
    assert held.action == "wait"
    assert "held for" in held.reason
    assert "could not promote: pump v3 is under compliance: sox" in held.reason
    assert "has no approval" in held.reason
    assert gate.latest == [held]
    assert gate.actions == []
    assert _versions(publisher) == {"stable": 1, "canary": 3}
    approve(publisher.store, load_signer(tmp_path / "carol"), "pump", 3, actor="cli:carol")
    [promoted] = gate.evaluate(started + timedelta(seconds=GATE.soak_s + 2))
    assert promoted.action == "promote"
    assert _versions(publisher) == {"stable": 3, "canary": 3}
