"""The publisher verifies before it builds on state: `rollout publish|promote|rollback` refuse a
stored pointer that does not verify (unsigned, another channel's, an old one replayed, missing
while the audit trail says it was published) and a manifest that does not verify at its path;
`--recover` re-establishes the channel at a serial above any seen, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeml.audit import AuditLog
from edgeml.bundle.build import publish_bundle
from edgeml.bundle.channels import pointer_key, verify_pointer
from edgeml.bundle.keys import Signer, init_keys, load_signer
from edgeml.bundle.manifest import manifest_key
from edgeml.bundle.rollout import promote, publish, rollback
from edgeml.cli import main
from edgeml.errors import UserError
from edgeml.store.local import LocalStore

from .conftest import make_manifest, write_model

STABLE = pointer_key("pump", "stable")


@pytest.fixture
def home(clean_env: Path) -> Path:
    init_keys(clean_env)
    return clean_env


@pytest.fixture
def store(home: Path) -> LocalStore:
    return LocalStore(home / "store")


@pytest.fixture
def signer(home: Path, store: LocalStore, tmp_path: Path) -> Signer:
    """The publisher, with bundles v1..v4 of pump built and stable at v3 (serial 3)."""
    signer = load_signer(home)
    for version in (1, 2, 3, 4):
        folder = tmp_path / f"build-{version}"
        publish_bundle(store, signer, make_manifest(write_model(folder, version), version), folder)
    for version in (1, 2, 3):
        publish(store, signer, "pump", version, "stable")
    return signer


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def device_accepts(store: LocalStore, signer: Signer, last_serial: int) -> int:
    pointer = verify_pointer(
        store.get(STABLE), store.get(STABLE + ".sig"), signer.ring(), model="pump", channel="stable",
        last_serial=last_serial,
    )  # fmt: skip
    return pointer.serial


def test_a_planted_unsigned_pointer_is_refused_then_recovered_above_every_serial(
    store: LocalStore, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    planted = json.loads(store.get(STABLE)) | {"serial": 1, "version": 1}
    store.put(STABLE, json.dumps(planted).encode())  # the old .sig no longer matches: unsigned
    code, _, err = run(capsys, "rollout", "publish", "pump", "4")
    assert code == 2
    assert "the stable pointer of pump does not verify" in err
    assert "[bad-signature]" in err
    assert "--recover" in err
    assert json.loads(store.get(STABLE)) == planted  # nothing was written

    code, out, _ = run(capsys, "rollout", "publish", "pump", "4", "--recover", "--reason", "planted pointer")
    assert code == 0
    assert "pump stable: v4 (serial 4)" in out  # above the 3 the audit trail records, not 1 + 1
    assert device_accepts(store, signer, last_serial=3) == 4
    entry = AuditLog(store).entries()[-1]
    assert entry.action == "rollout.publish"
    assert entry.reason == "recover: planted pointer"
    assert entry.before["reason"] == "bad-signature"
    assert entry.after["serial"] == 4


def test_an_old_signed_pointer_replayed_is_refused(store: LocalStore, signer: Signer, tmp_path: Path) -> None:
    old = store.get(STABLE), store.get(STABLE + ".sig")
    publish(store, signer, "pump", 4, "stable")  # serial 4
    store.put(STABLE, old[0])
    store.put(STABLE + ".sig", old[1])  # genuine serial 3, replayed
    for act in (
        lambda: publish(store, signer, "pump", 4, "stable"),
        lambda: rollback(store, signer, "pump", "stable", 1),
    ):
        with pytest.raises(UserError, match=r"\[replay\]"):
            act()
    assert publish(store, signer, "pump", 4, "stable", recover=True).serial == 5


def test_another_channels_pointer_is_refused_by_promote(store: LocalStore, signer: Signer) -> None:
    publish(store, signer, "pump", 4, "canary")
    store.put(pointer_key("pump", "canary"), store.get(STABLE))
    store.put(pointer_key("pump", "canary") + ".sig", store.get(STABLE + ".sig"))
    with pytest.raises(UserError, match=r"\(field channel\)"):
        promote(store, signer, "pump")
    with pytest.raises(UserError, match=r"canary pointer of pump does not verify"):
        promote(store, signer, "pump", recover=True)  # the canary names what is promoted: never recovered


def test_a_deleted_pointer_is_not_restarted_at_serial_one(store: LocalStore, signer: Signer) -> None:
    store.delete(STABLE)
    store.delete(STABLE + ".sig")
    with pytest.raises(UserError, match="the audit trail records serial 3"):
        publish(store, signer, "pump", 4, "stable")
    assert publish(store, signer, "pump", 4, "stable", recover=True).serial == 4


def test_rollback_recovers_from_the_audit_trail_and_withdraws_a_broken_canary(
    store: LocalStore, signer: Signer
) -> None:
    publish(store, signer, "pump", 4, "canary", percent=50)
    store.put(STABLE + ".sig", b'{"algorithm": "ed25519", "key_id": ["x"], "signature": 1}')
    store.put(pointer_key("pump", "canary") + ".sig", b"[]")
    with pytest.raises(UserError, match="does not verify"):
        rollback(store, signer, "pump", "stable", 2)
    stable, canary = rollback(store, signer, "pump", "stable", 2, reason="bad v3", recover=True)
    assert stable.rollback is not None
    assert (stable.version, stable.rollback.from_version, stable.serial) == (2, 3, 4)
    assert (canary.channel, canary.canary_percent) == ("canary", 0)


def test_a_manifest_that_does_not_verify_at_its_path_is_never_named(
    store: LocalStore, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    v4 = manifest_key("pump", 4, "x86-64-generic")
    for suffix in ("", ".sig"):
        store.put(v4 + suffix, store.get(manifest_key("pump", 1, "x86-64-generic") + suffix))
    code, _, err = run(capsys, "rollout", "publish", "pump", "4")
    assert code == 2
    assert "(field version)" in err
    assert "edgeml bundle build" in err
    assert json.loads(store.get(STABLE))["version"] == 3


def test_status_names_a_pointer_that_does_not_verify(
    store: LocalStore, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "rollout", "status", "pump")
    assert (code, "pump stable: v3 (serial 3)" in out) == (0, True)
    store.put(STABLE + ".sig", b"not json")
    code, _, err = run(capsys, "rollout", "status", "pump")
    assert code == 3
    assert "pump stable does not verify" in err


def test_a_publication_cut_between_its_writes_is_carried_on(store: LocalStore, signer: Signer) -> None:
    """The publisher died after the new signature was written but before the pointer: the
    stored pair does not verify, but the signed publication in flight beside it does."""
    publish(store, signer, "pump", 4, "stable")
    after = store.get(STABLE), store.get(STABLE + ".sig")
    store.put(STABLE + ".next", after[0])
    store.put(STABLE + ".next.sig", after[1])
    old = json.loads(after[0]) | {"serial": 3, "version": 3}  # what was there before: now unsigned
    store.put(STABLE, json.dumps(old).encode())
    pointer = publish(store, signer, "pump", 4, "stable")  # no --recover needed
    assert pointer.serial == 5
    assert not store.exists(STABLE + ".next")
    assert device_accepts(store, signer, last_serial=4) == 5
    store.put(STABLE + ".next", b"{}")  # a planted one that does not verify helps nothing
    store.put(STABLE, json.dumps(old).encode())
    with pytest.raises(UserError, match="does not verify"):
        publish(store, signer, "pump", 4, "stable")
