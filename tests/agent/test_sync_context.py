"""The agent's sync takes a signed pointer or manifest only in its context: this device's model,
the channel whose path it was read from, and the version and profile the pointer and the device
name. A mismatch is a counted rejection that leaves the device on its model and its replay
floor where it was."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from edgeml.bundle.channels import ChannelPointer, ManifestRef, pointer_key
from edgeml.bundle.keys import canonical_json
from edgeml.bundle.manifest import manifest_key
from edgeml.bundle.rollout import publish as publish_channel
from edgeml.observability import BUNDLE_VERIFICATIONS

from .conftest import DeviceConfig, Publisher
from .test_sync import make_syncer, serving


def copy_signed(publisher: Publisher, source: str, target: str) -> None:
    store = publisher.store
    store.put(target, store.get(source))
    store.put(target + ".sig", store.get(source + ".sig"))


def rejections(reason: str) -> float:
    return BUNDLE_VERIFICATIONS.labels(reason)._value.get()


def test_another_models_pointer_is_refused_and_leaves_the_replay_floor(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    publisher.release(1)
    syncer = make_syncer(publisher, device_config())
    assert syncer.run_once() == "installed v1 from stable"
    valve = dataclasses.replace(publisher, model="valve")
    valve.bundle(7)
    for _ in range(5):  # serial 5: it would be the floor if it were remembered
        publish_channel(valve.store, valve.signer, "valve", 7, "stable")
    key = pointer_key("pump", "stable")
    genuine = publisher.store.get(key), publisher.store.get(key + ".sig")
    copy_signed(publisher, pointer_key("valve", "stable"), key)

    before = rejections("context-mismatch")
    outcome = syncer.run_once()
    assert outcome.startswith("rejected: ")
    assert "(field model)" in outcome
    assert serving(syncer) == 1
    assert rejections("context-mismatch") == before + 1
    assert syncer.install.load_state().serials["stable"] == 1
    status = syncer.status()
    assert status["last_rejection"]["reason"] == "context-mismatch"
    assert status["version"] == 1

    publisher.store.put(key, genuine[0])  # the operator puts the genuine pointer back
    publisher.store.put(key + ".sig", genuine[1])
    publisher.release(3)  # serial 2 on pump's own channel, below valve's 5: not a replay here
    assert syncer.run_once() == "installed v3 from stable"
    assert syncer.install.load_state().serials["stable"] == 2


def test_the_canary_pointer_copied_over_stable_is_refused(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    publisher.release(1)
    publisher.bundle(2)
    for _ in range(3):
        publish_channel(publisher.store, publisher.signer, "pump", 2, "canary", percent=100)
    syncer = make_syncer(publisher, device_config(sync={"channels": ["stable"], "interval_s": 1}))
    assert syncer.run_once() == "installed v1 from stable"
    copy_signed(publisher, pointer_key("pump", "canary"), pointer_key("pump", "stable"))
    outcome = syncer.run_once()
    assert "(field channel)" in outcome
    assert serving(syncer) == 1
    assert syncer.install.load_state().serials["stable"] == 1


def sign_pointer(publisher: Publisher, version: int, key: str, serial: int) -> None:
    """A pointer the publisher's key signs naming the manifest now at ``key`` (as a fooled or
    buggy publisher would): the device must still check what that manifest is."""
    now = datetime.now(UTC)
    planted = publisher.store.get(key)
    pointer = ChannelPointer(
        model=publisher.model,
        channel="stable",
        serial=serial,
        version=version,
        manifests={"x86-64-generic": ManifestRef(key=key, sha256=hashlib.sha256(planted).hexdigest())},
        created=now.isoformat(timespec="seconds"),
        expires=(now + timedelta(days=1)).isoformat(timespec="seconds"),
        key_id=publisher.signer.key_id,
    )
    data = canonical_json(pointer.model_dump(mode="json"))
    target = pointer_key(publisher.model, "stable")
    publisher.store.put(target + ".sig", publisher.signer.sign(data))
    publisher.store.put(target, data)


@pytest.mark.parametrize(
    ("field", "model", "version", "profile"),
    [
        ("model", "valve", 2, "x86-64-generic"),
        ("version", "pump", 1, "x86-64-generic"),
        ("profile", "pump", 2, "arm64-rpi4"),
    ],
)
def test_a_manifest_of_another_model_version_or_profile_is_refused(
    publisher: Publisher, device_config: DeviceConfig, field: str, model: str, version: int, profile: str
) -> None:
    publisher.release(1)
    syncer = make_syncer(publisher, device_config())
    assert syncer.run_once() == "installed v1 from stable"
    other = dataclasses.replace(publisher, model=model)
    planted = other.bundle(version, seed=9, profile=profile).key
    target = manifest_key("pump", 2, "x86-64-generic")
    copy_signed(publisher, planted, target)
    sign_pointer(publisher, 2, target, serial=2)

    outcome = syncer.run_once()
    assert outcome.startswith("rejected: ")
    assert f"(field {field})" in outcome
    assert serving(syncer) == 1
    assert not list(syncer.install.staging.glob(".stage-*"))


def test_an_installed_bundle_of_another_model_or_profile_is_not_served(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    """A device reconfigured (or a state folder copied from another device) does not serve a
    bundle that is not for its model and profile, though the bundle verifies."""
    publisher.release(1)
    first = make_syncer(publisher, device_config())
    first.run_once()
    first.run_once()
    assert first.install.folder("current") is not None
    for overrides in ({"model": "valve"}, {"profile": "arm64-rpi4"}):
        again = make_syncer(publisher, device_config(**overrides))
        assert again.load_installed() is None
        assert again.holder.current is None
    assert make_syncer(publisher, device_config()).load_installed() is not None
