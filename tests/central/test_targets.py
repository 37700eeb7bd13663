"""Targets follow the signed channel pointers, as a device reading them itself would."""

from __future__ import annotations

from pathlib import Path

from agent.conftest import Publisher
from edgeml.bundle.channels import choose
from edgeml.bundle.rollout import publish, rollback, status

from .conftest import ADMIN, Central, bearer, make_config, running


def config_for(publisher: Publisher) -> dict[str, object]:
    return {"store": {"url": publisher.store.url}, "keyring": str(publisher.ring)}


def target(central: Central, device: str, token: str) -> dict[str, object] | None:
    answer = central.client.get(f"/v1/targets/{device}", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    found: dict[str, object] | None = answer.json()["target"]
    return found


def test_targets_follow_publish_canary_and_rollback(publisher: Publisher, tmp_path: Path) -> None:
    with running(make_config(tmp_path / "central", **config_for(publisher))) as central:
        a = central.register("dev-a", group="line-a")
        b = central.register("dev-b", group="line-b")
        assert target(central, "dev-a", a) is None  # nothing published yet

        publisher.release(1)
        first = target(central, "dev-a", a)
        assert first is not None
        assert (first["channel"], first["version"]) == ("stable", 1)
        assert first["manifest_key"] == "bundles/pump/1/x86-64-generic/manifest.json"

        publisher.bundle(2)
        publish(publisher.store, publisher.signer, "pump", 2, "canary", percent=100, groups=["line-a"])
        canary, stable = target(central, "dev-a", a), target(central, "dev-b", b)
        assert canary is not None
        assert stable is not None
        assert (canary["channel"], canary["version"]) == ("canary", 2)
        assert (stable["channel"], stable["version"]) == ("stable", 1)
        # the same choice the agent makes from the pointers
        pointers = status(publisher.store, "pump")
        chosen = choose(pointers, "dev-a", "line-a", "x86-64-generic")
        assert chosen is not None
        assert chosen.version == canary["version"]

        publisher.bundle(3)
        publish(publisher.store, publisher.signer, "pump", 3, "stable")
        rollback(publisher.store, publisher.signer, "pump", "stable", 1, reason="bad accuracy")
        back = target(central, "dev-b", b)
        assert back is not None
        assert (back["version"], back["rollback_from"], back["rollback_reason"]) == (1, 3, "bad accuracy")
        assert target(central, "dev-a", a) == back  # the rollback withdrew the canary (v2 < v3)
    # registrations and rollouts are on the audit trail, intact
    from edgeml.audit import AuditLog

    trail = AuditLog(publisher.store)
    actions = [(e.actor, e.action, e.subject) for e in trail.entries()]
    assert actions[:2] == [("central", "device.register", "dev-a"), ("central", "device.register", "dev-b")]
    assert ("cli:" in actions[-1][0], actions[-1][1]) == (True, "rollout.withdraw")
    assert trail.verify() == []


def test_targets_auth_and_a_tampered_pointer(publisher: Publisher, tmp_path: Path) -> None:
    publisher.release(1)
    with running(make_config(tmp_path / "central", **config_for(publisher))) as central:
        a = central.register("dev-a")
        central.register("dev-b")
        assert central.client.get("/v1/targets/dev-a").status_code == 401
        assert central.client.get("/v1/targets/dev-b", headers=bearer(a)).status_code == 403
        by_admin = central.client.get("/v1/targets/dev-b", headers=bearer(ADMIN))
        assert by_admin.json()["target"]["version"] == 1
        assert central.client.get("/v1/targets/nobody", headers=bearer(ADMIN)).status_code == 404

        key = "channels/pump/stable.json"
        publisher.store.put(key, publisher.store.get(key).replace(b'"version":1', b'"version":9'))
        refused = central.client.get("/v1/targets/dev-a", headers=bearer(a))
        assert refused.status_code == 200
        assert refused.json()["target"] is None  # a device would refuse that pointer too


def test_without_a_store_targets_are_503(central: Central) -> None:
    token = central.register("dev-a")
    answer = central.client.get("/v1/targets/dev-a", headers=bearer(token))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "2"
