"""Separation of duties on the device: under sox a ``stable`` pointer is followed only with a second
key's signed approval of exactly its bundles; without one it is a counted rejection and the old model
keeps serving. Canary pointers need none."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bundle.conftest import make_manifest, write_model
from edgeml.bundle.approval import Approval, approval_key, approve
from edgeml.bundle.build import publish_bundle
from edgeml.bundle.keys import KeyRing, Signer, canonical_json, export_public, init_keys, load_signer
from edgeml.bundle.rollout import promote, rollback
from edgeml.bundle.rollout import publish as publish_channel
from edgeml.observability import BUNDLE_VERIFICATIONS

from .conftest import DeviceConfig, Publisher, with_golden
from .test_sync import make_syncer, serving


@pytest.fixture
def approver(publisher: Publisher, tmp_path: Path) -> Signer:
    """A second person's key; its public half joins the ring the devices (and promote) trust."""
    home = tmp_path / "approver"
    init_keys(home)
    export_public(home, publisher.ring)
    return load_signer(home)


def sox_bundle(publisher: Publisher, version: int) -> None:
    folder = publisher.work / f"sox-{version}"
    manifest = with_golden(make_manifest(write_model(folder, version), version), folder)
    publish_bundle(
        publisher.store, publisher.signer, manifest.model_copy(update={"compliance": "sox"}), folder
    )


def approved_stable(publisher: Publisher, approver: Signer, version: int) -> None:
    """sox ``version`` on a canary no test device follows, approved, promoted to stable."""
    sox_bundle(publisher, version)
    publish_channel(publisher.store, publisher.signer, "pump", version, "canary", percent=100, groups=["lab"])
    approve(publisher.store, approver, "pump", version, actor="cli:carol", reason="CAB-9")
    promote(publisher.store, publisher.signer, "pump", approvers=KeyRing.from_dir(publisher.ring))


def rejected(reason: str) -> float:
    return BUNDLE_VERIFICATIONS.labels(reason)._value.get()


def test_a_sox_stable_pointer_is_followed_only_with_an_approval(
    publisher: Publisher, approver: Signer, device_config: DeviceConfig
) -> None:
    publisher.release(1)
    syncer = make_syncer(publisher, device_config())
    assert syncer.run_once() == "installed v1 from stable"
    approved_stable(publisher, approver, 2)
    key = approval_key("pump", 2)
    genuine = {name: publisher.store.get(name) for name in (key, key + ".sig")}
    for name in genuine:
        publisher.store.delete(name)

    before = rejected("unapproved")
    outcome = syncer.run_once()
    assert outcome == "rejected: pump v2 on stable has no approval (approvals/pump/2.json) [unapproved]"
    assert serving(syncer) == 1
    assert rejected("unapproved") == before + 1
    status = syncer.status()
    assert status["last_rejection"]["reason"] == "unapproved"
    assert "has no approval" in status["last_rejection"]["message"]
    assert status["refused"] == []  # refused until approved, not for ever
    assert not list(syncer.install.staging.glob(".stage-*"))

    # the publisher approving its own release is no approval
    forged = Approval.model_validate_json(genuine[key]).model_copy(update={"key_id": publisher.signer.key_id})
    data = canonical_json(forged.model_dump(mode="json"))
    publisher.store.put(key + ".sig", publisher.signer.sign(data))
    publisher.store.put(key, data)
    assert (
        syncer.run_once() == "rejected: pump v2 on stable: approved by the key that published it [unapproved]"
    )
    assert serving(syncer) == 1

    for name, value in genuine.items():
        publisher.store.put(name, value)
    assert syncer.run_once() == "installed v2 from stable"
    assert serving(syncer) == 2


def test_a_sox_canary_needs_no_approval_and_other_stable_pointers_none_either(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    publisher.release(1)
    sox_bundle(publisher, 2)
    publish_channel(publisher.store, publisher.signer, "pump", 2, "canary", percent=100, groups=["line-a"])
    on_canary = make_syncer(publisher, device_config("dev-a", group="line-a"))
    on_stable = make_syncer(publisher, device_config("dev-b", group="line-b"))
    assert on_canary.run_once() == "installed v2 from canary"
    assert on_stable.run_once() == "installed v1 from stable"  # compliance none: no approval asked


def short_approval(publisher: Publisher, approver: Signer, version: int, seconds: int = 2) -> datetime:
    """An approval of the canary's ``version`` that runs out in ``seconds``; returns when."""
    approval = approve(publisher.store, approver, "pump", version, actor="cli:carol")
    expires = datetime.now(UTC) + timedelta(seconds=seconds)
    short = approval.model_copy(update={"expires": expires.isoformat(timespec="seconds")})
    data = canonical_json(short.model_dump(mode="json"))
    key = approval_key("pump", version)
    publisher.store.put(key + ".sig", approver.sign(data))
    publisher.store.put(key, data)
    return datetime.fromisoformat(short.expires)


def wait_past(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.1)


def test_an_approval_counts_as_of_the_promotion_not_of_the_device_s_first_sync(
    publisher: Publisher, approver: Signer, device_config: DeviceConfig
) -> None:
    """An approval is to be acted on within its period; a device that joins after it ran out still
    follows the stable pointer signed while it held."""
    publisher.release(1)
    sox_bundle(publisher, 2)
    publish_channel(publisher.store, publisher.signer, "pump", 2, "canary", percent=100, groups=["lab"])
    expires = short_approval(publisher, approver, 2)
    promote(publisher.store, publisher.signer, "pump", approvers=KeyRing.from_dir(publisher.ring))
    wait_past(expires)
    late = make_syncer(publisher, device_config("dev-late"))
    assert late.run_once() == "installed v2 from stable"


def test_a_rollback_goes_back_to_an_approved_version_only(
    publisher: Publisher, approver: Signer, device_config: DeviceConfig
) -> None:
    """A rollback returns to a version approved before, however long ago; never to one no second
    key approved."""
    sox_bundle(publisher, 1)
    publish_channel(publisher.store, publisher.signer, "pump", 1, "canary", percent=100, groups=["lab"])
    expires = short_approval(publisher, approver, 1)
    promote(publisher.store, publisher.signer, "pump", approvers=KeyRing.from_dir(publisher.ring))
    approved_stable(publisher, approver, 2)
    syncer = make_syncer(publisher, device_config())
    assert syncer.run_once() == "installed v2 from stable"
    wait_past(expires)
    approvers = KeyRing.from_dir(publisher.ring)
    rollback(publisher.store, publisher.signer, "pump", "stable", 1, reason="INC-4", approvers=approvers)
    assert syncer.run_once() == "installed v1 from stable"
    for name in (approval_key("pump", 1), approval_key("pump", 1) + ".sig"):
        publisher.store.delete(name)
    fresh = make_syncer(publisher, device_config("dev-fresh"))
    assert fresh.run_once().startswith("rejected: pump v1 on stable has no approval")
    assert serving(fresh) is None
