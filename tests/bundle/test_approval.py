"""Separation of duties: an approval of the canary's version, signed by a second key, is what a device
under sox checks before following ``stable``; the publisher's own key cannot give one, and an approval
of other bundles, another version, an expired one or a missing one is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgeml.audit import AuditLog
from edgeml.bundle.approval import Approval, approval_key, approve, fetch_approval, verify_approval
from edgeml.bundle.channels import ChannelPointer
from edgeml.bundle.keys import KeyRing, Signer, canonical_json, init_keys, load_signer
from edgeml.bundle.rollout import current, promote, rollback
from edgeml.bundle.rollout import publish as publish_channel
from edgeml.cli import main
from edgeml.errors import BundleRejected, UserError
from edgeml.store.base import ObjectStore

from .conftest import Publish


@pytest.fixture
def approver(tmp_path: Path) -> Signer:
    init_keys(tmp_path / "approver")
    return load_signer(tmp_path / "approver")


def _canary(publish: Publish, store: ObjectStore, signer: Signer) -> ChannelPointer:
    publish(1, seed=1)
    publish(2, seed=2)
    publish_channel(store, signer, "pump", 1, "stable")
    publish_channel(store, signer, "pump", 2, "canary", percent=10)
    return promote(store, signer, "pump")  # the stable pointer a device would read


def _both(signer: Signer, approver: Signer) -> KeyRing:
    return KeyRing({k.key_id: k.private.public_key() for k in (signer, approver)})


def test_a_second_key_approves_and_the_device_check_passes(
    publish: Publish, store: ObjectStore, signer: Signer, approver: Signer
) -> None:
    stable = _canary(publish, store, signer)
    approval = approve(store, approver, "pump", 2, actor="cli:carol", reason="CAB-9")
    assert approval.publisher_key_id == signer.key_id
    assert approval.key_id == approver.key_id
    assert fetch_approval(store, _both(signer, approver), stable) == approval
    entry = AuditLog(store).entries()[-1]
    assert (entry.actor, entry.action, entry.reason) == ("cli:carol", "rollout.approve", "CAB-9")


def test_the_publishers_key_cannot_approve(publish: Publish, store: ObjectStore, signer: Signer) -> None:
    _canary(publish, store, signer)
    with pytest.raises(UserError, match=r"separation of duties: key \w+ published pump v2's canary"):
        approve(store, signer, "pump", 2, actor="cli:alice")
    assert not store.exists(approval_key("pump", 2))


def test_only_the_version_on_canary_can_be_approved(
    publish: Publish, store: ObjectStore, signer: Signer, approver: Signer
) -> None:
    _canary(publish, store, signer)
    with pytest.raises(UserError, match="cannot approve pump v1: its canary channel runs v2"):
        approve(store, approver, "pump", 1, actor="cli:carol")


def _forged(approval: Approval, key: Signer, **changes: object) -> tuple[bytes, bytes]:
    data = canonical_json(approval.model_copy(update=changes).model_dump(mode="json"))
    return data, key.sign(data)


def test_the_device_refuses_what_does_not_match(
    publish: Publish, store: ObjectStore, signer: Signer, approver: Signer
) -> None:
    stable = _canary(publish, store, signer)
    ring = _both(signer, approver)
    approval = approve(store, approver, "pump", 2, actor="cli:carol")
    cases = {
        "approved by the key that published it": _forged(approval, signer, key_id=signer.key_id),
        "the approval is for pump v1": _forged(approval, approver, version=1),
        "names bundles the approval does not": _forged(
            approval, approver, manifests=dict.fromkeys(approval.manifests, "0" * 64)
        ),
        "the approval expired": _forged(
            approval, approver, expires=(datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        ),
    }
    for message, (data, signature) in cases.items():
        with pytest.raises(BundleRejected, match=message) as caught:
            verify_approval(data, signature, ring, stable)
        assert caught.value.reason == "unapproved"
    # signed by a key the device does not trust
    with pytest.raises(BundleRejected, match="unapproved"):
        fetch_approval(store, KeyRing({signer.key_id: signer.private.public_key()}), stable)
    # edited after signing
    data = store.get(approval_key("pump", 2)).replace(b"cli:carol", b"cli:mallory")
    with pytest.raises(BundleRejected, match="unapproved"):
        verify_approval(data, store.get(approval_key("pump", 2) + ".sig"), ring, stable)


def test_no_approval_is_refused_with_the_command_to_give_one(
    publish: Publish, store: ObjectStore, signer: Signer, approver: Signer
) -> None:
    stable = _canary(publish, store, signer)
    with pytest.raises(BundleRejected, match="pump v2 on stable has no approval") as caught:
        fetch_approval(store, _both(signer, approver), stable)
    assert caught.value.hint is not None
    assert "edgeml rollout approve pump 2" in caught.value.hint


def test_cli_rollout_approve(clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeml.store import LocalStore

    from .conftest import make_manifest, write_model

    assert main(["keys", "init"]) == 0
    signer = load_signer(clean_env)
    store = LocalStore(clean_env / "store")
    from edgeml.bundle.build import publish_bundle

    for version in (1, 2):
        folder = tmp_path / f"m{version}"
        publish_bundle(store, signer, make_manifest(write_model(folder, version), version), folder)
    publish_channel(store, signer, "pump", 2, "canary")
    capsys.readouterr()
    assert main(["rollout", "approve", "pump", "2", "--keys", str(clean_env), "--reason", "self"]) == 2
    assert "separation of duties" in capsys.readouterr().err
    assert main(["--home", str(tmp_path / "carol"), "keys", "init"]) == 0
    code = main(["rollout", "approve", "pump", "2", "--keys", str(tmp_path / "carol"), "--reason", "CAB-9"])
    assert code == 0
    assert "pump v2 approved for stable by key" in capsys.readouterr().out
    assert store.exists(approval_key("pump", 2))


def test_promote_of_a_sox_version_needs_a_second_keys_approval(
    publish: Publish, store: ObjectStore, signer: Signer, approver: Signer
) -> None:
    publish(2, seed=2, compliance="sox")
    canary = publish_channel(store, signer, "pump", 2, "canary", percent=10)
    approvers = _both(signer, approver)  # the devices' ring: the publisher's key is in it too
    with pytest.raises(UserError, match="no approvers' key ring was given") as caught:
        promote(store, signer, "pump")
    assert caught.value.hint is not None
    assert "edgeml rollout approve" in caught.value.hint
    for move in (
        lambda: promote(store, signer, "pump", approvers=approvers),
        lambda: publish_channel(store, signer, "pump", 2, "stable", approvers=approvers),
    ):
        with pytest.raises(UserError, match=r"pump v2 is under compliance: sox .* has no approval"):
            move()
    # an approval signed by the publisher's own key is no approval, whatever ring is given
    forged = Approval(
        model="pump",
        version=2,
        manifests={p: ref.sha256 for p, ref in canary.manifests.items()},
        publisher_key_id=canary.key_id,
        key_id=signer.key_id,
        approved_by="cli:alice",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        expires=(datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="seconds"),
    )
    data = canonical_json(forged.model_dump(mode="json"))
    store.put(approval_key("pump", 2) + ".sig", signer.sign(data))
    store.put(approval_key("pump", 2), data)
    with pytest.raises(UserError, match="pump v2 is under compliance: sox"):
        promote(store, signer, "pump", approvers=approvers)
    assert current(store, "pump", "stable") is None
    approve(store, approver, "pump", 2, actor="cli:carol", reason="CAB-9")
    assert promote(store, signer, "pump", approvers=approvers).version == 2
    entry = AuditLog(store).entries()[-1]
    assert (entry.action, entry.subject) == ("rollout.promote", "pump/stable")


def _cli_sox_versions(
    home: Path, tmp_path: Path, versions: tuple[int, ...]
) -> tuple[ObjectStore, Signer, Path]:
    """As an operator sets it up with the CLI: ``home``'s key publishes sox ``versions`` of pump; a
    second key (carol's, under ``tmp_path``) may approve; the devices' ring trusts both."""
    from edgeml.bundle.build import publish_bundle
    from edgeml.bundle.keys import export_public
    from edgeml.store import LocalStore

    from .conftest import make_manifest, write_model

    assert main(["keys", "init"]) == 0
    signer = load_signer(home)
    store = LocalStore(home / "store")
    for version in versions:
        folder = tmp_path / f"m{version}"
        publish_bundle(
            store, signer, make_manifest(write_model(folder, version), version, compliance="sox"), folder
        )
    assert main(["--home", str(tmp_path / "carol"), "keys", "init"]) == 0
    ring = tmp_path / "devices-ring"
    export_public(home, ring)
    export_public(tmp_path / "carol", ring)
    return store, signer, ring


def test_cli_promote_of_a_sox_version_exits_2_until_approved(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, signer, ring = _cli_sox_versions(clean_env, tmp_path, (2,))
    publish_channel(store, signer, "pump", 2, "canary")
    capsys.readouterr()
    assert main(["rollout", "promote", "pump"]) == 2
    assert "no approvers' key ring" in capsys.readouterr().err
    assert main(["rollout", "promote", "pump", "--approvers", str(ring)]) == 2
    err = capsys.readouterr().err
    assert "pump v2 is under compliance: sox" in err
    assert "edgeml rollout approve pump 2" in err
    assert main(["rollout", "approve", "pump", "2", "--keys", str(tmp_path / "carol")]) == 0
    assert main(["rollout", "promote", "pump", "--approvers", str(ring)]) == 0
    stable = current(store, "pump", "stable")
    assert stable is not None
    assert stable.version == 2


def test_stable_rolls_back_only_to_a_sox_version_a_second_key_approved(
    publish: Publish, store: ObjectStore, signer: Signer, approver: Signer
) -> None:
    for version in (1, 2, 3):
        publish(version, seed=version, compliance="sox")
    approvers = _both(signer, approver)
    publish_channel(store, signer, "pump", 1, "canary", percent=10)
    first = approve(store, approver, "pump", 1, actor="cli:carol")
    promote(store, signer, "pump", approvers=approvers)
    publish_channel(store, signer, "pump", 2, "canary", percent=10)  # v2: never approved
    publish_channel(store, signer, "pump", 3, "canary", percent=10)
    approve(store, approver, "pump", 3, actor="cli:carol")
    promote(store, signer, "pump", approvers=approvers)
    trail = len(AuditLog(store).entries())

    with pytest.raises(UserError, match="no approvers' key ring was given"):
        rollback(store, signer, "pump", "stable", 2, reason="alarms")
    with pytest.raises(UserError, match=r"pump v2 is under compliance: sox .* has no approval") as caught:
        rollback(store, signer, "pump", "stable", 2, reason="alarms", approvers=approvers)
    assert caught.value.hint is not None
    assert "edgeml rollout approve pump 2" in caught.value.hint
    # the publisher's own key is no approver, whatever ring is given
    with pytest.raises(UserError, match="pump v2 is under compliance: sox"):
        rollback(store, signer, "pump", "stable", 2, approvers=KeyRing(signer.ring().keys))
    stable = current(store, "pump", "stable")
    assert stable is not None
    assert (stable.version, stable.rollback) == (3, None)
    assert len(AuditLog(store).entries()) == trail  # refused before anything was written

    # the canary goes back freely; once v2 is approved there, stable follows it back
    assert rollback(store, signer, "pump", "canary", 2, reason="check v2")[0].version == 2
    approve(store, approver, "pump", 2, actor="cli:carol", reason="CAB-10")
    back = rollback(store, signer, "pump", "stable", 2, reason="alarms", actor="cli:bob", approvers=approvers)
    assert [p.version for p in back] == [2]
    entry = AuditLog(store).entries()[-1]
    assert (entry.actor, entry.action, entry.subject) == ("cli:bob", "rollout.rollback", "pump/stable")

    # an approval given before counts for a rollback though it expired since, as devices judge it
    data, signature = _forged(first, approver, expires=(datetime.now(UTC) - timedelta(days=1)).isoformat())
    store.put(approval_key("pump", 1) + ".sig", signature)
    store.put(approval_key("pump", 1), data)
    assert rollback(store, signer, "pump", "stable", 1, approvers=approvers)[0].version == 1


def test_cli_rollback_of_stable_to_an_unapproved_sox_version_exits_2(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, signer, ring = _cli_sox_versions(clean_env, tmp_path, (1, 2))
    publish_channel(store, signer, "pump", 1, "canary")
    publish_channel(store, signer, "pump", 2, "canary")
    assert main(["rollout", "approve", "pump", "2", "--keys", str(tmp_path / "carol")]) == 0
    assert main(["rollout", "promote", "pump", "--approvers", str(ring)]) == 0
    capsys.readouterr()

    assert main(["rollout", "rollback", "pump", "--to", "1", "--approvers", str(ring)]) == 2
    err = capsys.readouterr().err
    assert "pump v1 is under compliance: sox" in err
    assert "edgeml rollout approve pump 1" in err
    assert "Traceback" not in err
    stable = current(store, "pump", "stable")
    assert stable is not None
    assert stable.version == 2

    assert main(["rollout", "rollback", "pump", "--channel", "canary", "--to", "1"]) == 0  # canary: free
    assert main(["rollout", "approve", "pump", "1", "--keys", str(tmp_path / "carol")]) == 0
    assert (
        main(["rollout", "rollback", "pump", "--to", "1", "--approvers", str(ring), "--reason", "alarms"])
        == 0
    )
    stable = current(store, "pump", "stable")
    assert stable is not None
    assert stable.rollback is not None
    assert (stable.version, stable.rollback.from_version) == (1, 2)
