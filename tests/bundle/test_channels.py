"""Channel pointers: publish, promote, rollback, status; what devices accept and which they follow."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeml.bundle.channels import ChannelPointer, choose, in_cohort, pointer_key, verify_pointer
from edgeml.bundle.keys import KeyRing, Signer
from edgeml.bundle.rollout import promote, rollback, status
from edgeml.bundle.rollout import publish as publish_channel
from edgeml.errors import BundleRejected, UserError
from edgeml.store.base import ObjectStore

from .conftest import Publish


def read(store: ObjectStore, channel: str, ring: KeyRing, **kwargs: object) -> ChannelPointer:
    key = pointer_key("pump", channel)
    return verify_pointer(store.get(key), store.get(key + ".sig"), ring, **kwargs)  # type: ignore[arg-type]


def test_publish_names_every_profile_manifest_by_digest(
    publish: Publish, store: ObjectStore, signer: Signer, ring: KeyRing
) -> None:
    publish(1, profile="x86-64-generic")
    publish(1, profile="arm64-rpi4", seed=5)
    pointer = publish_channel(store, signer, "pump", 1, "stable")
    assert (pointer.serial, pointer.canary_percent, pointer.groups) == (1, 100, [])
    assert sorted(pointer.manifests) == ["arm64-rpi4", "x86-64-generic"]
    assert read(store, "stable", ring) == pointer
    ref = pointer.manifests["x86-64-generic"]
    assert hashlib.sha256(store.get(ref.key)).hexdigest() == ref.sha256


def test_a_version_without_bundles_is_refused(store: ObjectStore, signer: Signer) -> None:
    with pytest.raises(UserError, match="pump v7 has no bundle") as info:
        publish_channel(store, signer, "pump", 7, "stable")
    assert "edgeml bundle build models:/pump/7" in (info.value.hint or "")


def test_unknown_channel_and_bad_percent(publish: Publish, store: ObjectStore, signer: Signer) -> None:
    publish(1)
    with pytest.raises(UserError, match="unknown channel 'beta'"):
        publish_channel(store, signer, "pump", 1, "beta")
    with pytest.raises(UserError, match=r"outside 0\.\.100"):
        publish_channel(store, signer, "pump", 1, "canary", percent=120)


def test_versions_only_move_forward(
    publish: Publish, store: ObjectStore, signer: Signer, ring: KeyRing
) -> None:
    publish(1, seed=1)
    publish(2, seed=2)
    publish_channel(store, signer, "pump", 2, "stable")
    with pytest.raises(UserError, match="stable already serves pump v2; versions only move forward") as info:
        publish_channel(store, signer, "pump", 1, "stable")
    assert "rollout rollback pump --channel stable --to 1" in (info.value.hint or "")
    with pytest.raises(UserError, match="canary v1 would be older than stable v2"):
        publish_channel(store, signer, "pump", 1, "canary")
    again = publish_channel(store, signer, "pump", 2, "stable", groups=["north"])
    assert again.serial == 2  # same version, new terms: a new serial


def test_canary_then_promote(publish: Publish, store: ObjectStore, signer: Signer, ring: KeyRing) -> None:
    publish(1, seed=1)
    publish(2, seed=2)
    publish_channel(store, signer, "pump", 1, "stable")
    canary = publish_channel(store, signer, "pump", 2, "canary", groups=["north", "north"])
    assert (canary.version, canary.canary_percent, canary.groups) == (2, 10.0, ["north"])
    stable = promote(store, signer, "pump")
    assert (stable.version, stable.serial, stable.canary_percent, stable.groups) == (2, 2, 100.0, [])
    assert {c: p.version for c, p in status(store, "pump").items()} == {"stable": 2, "canary": 2}


def test_promote_without_canary(publish: Publish, store: ObjectStore, signer: Signer) -> None:
    with pytest.raises(UserError, match="no canary to promote"):
        promote(store, signer, "pump")


def test_rollback_is_explicit_signed_and_withdraws_a_newer_canary(
    publish: Publish, store: ObjectStore, signer: Signer, ring: KeyRing
) -> None:
    for version in (1, 2, 3):
        publish(version, seed=version)
    publish_channel(store, signer, "pump", 2, "stable")
    publish_channel(store, signer, "pump", 3, "canary", percent=50)
    seen = read(store, "stable", ring)
    changed = rollback(store, signer, "pump", "stable", 1, reason="bad drift on line 4")
    assert [p.channel for p in changed] == ["stable", "canary"]
    stable = read(store, "stable", ring, last_serial=seen.serial)
    assert stable.version == 1
    assert stable.serial == seen.serial + 1
    assert stable.rollback is not None
    assert (stable.rollback.from_version, stable.rollback.to_version) == (2, 1)
    assert stable.rollback.reason == "bad drift on line 4"
    assert read(store, "canary", ring).canary_percent == 0
    with pytest.raises(UserError, match="rollback goes to an older version"):
        rollback(store, signer, "pump", "stable", 1)
    with pytest.raises(UserError, match="no canary channel to roll back"):
        rollback(store, signer, "other", "canary", 1)


def test_an_old_pointer_replayed_is_refused(
    publish: Publish, store: ObjectStore, signer: Signer, ring: KeyRing
) -> None:
    publish(1, seed=1)
    publish(2, seed=2)
    publish_channel(store, signer, "pump", 1, "stable")
    key = pointer_key("pump", "stable")
    old_data, old_sig = store.get(key), store.get(key + ".sig")
    publish_channel(store, signer, "pump", 2, "stable")
    latest = read(store, "stable", ring)
    store.put(key, old_data)
    store.put(key + ".sig", old_sig)
    with pytest.raises(BundleRejected) as info:
        read(store, "stable", ring, last_serial=latest.serial)
    assert info.value.reason == "replay"
    assert "serial 1 is older than 2" in info.value.message


def test_expired_and_tampered_pointers(
    publish: Publish, store: ObjectStore, signer: Signer, ring: KeyRing
) -> None:
    publish(1)
    publish_channel(store, signer, "pump", 1, "stable", ttl_days=1)
    with pytest.raises(BundleRejected) as info:
        read(store, "stable", ring, now=datetime.now(UTC) + timedelta(days=2))
    assert info.value.reason == "expired"
    key = pointer_key("pump", "stable")
    store.put(key, store.get(key).replace(b'"canary_percent":100.0', b'"canary_percent":0.0'))
    with pytest.raises(BundleRejected) as info:
        read(store, "stable", ring)
    assert info.value.reason == "bad-signature"


def _pointer(percent: float, groups: list[str], channel: str = "canary", version: int = 2) -> ChannelPointer:
    return ChannelPointer(
        model="pump",
        channel=channel,
        serial=1,
        version=version,
        manifests={"x86-64-generic": {"key": "k", "sha256": "0" * 64}},  # type: ignore[dict-item]
        canary_percent=percent,
        groups=groups,
        created="2026-01-01T00:00:00+00:00",
        expires="2027-01-01T00:00:00+00:00",
        key_id="k",
    )


@given(st.text(min_size=1, max_size=30), st.floats(0, 100), st.floats(0, 100))
def test_raising_the_percent_only_adds_devices(device: str, low: float, high: float) -> None:
    low, high = sorted((low, high))
    if in_cohort(_pointer(low, []), device, None):
        assert in_cohort(_pointer(high, []), device, None)


def test_the_cohort_is_about_the_percent_and_the_groups() -> None:
    devices = [f"dev-{i}" for i in range(2000)]
    share = sum(in_cohort(_pointer(25, []), d, None) for d in devices) / len(devices)
    assert 0.21 < share < 0.29
    assert not in_cohort(_pointer(100, ["north"]), "dev-1", "south")
    assert in_cohort(_pointer(100, ["north"]), "dev-1", "north")
    assert not any(in_cohort(_pointer(0, []), d, None) for d in devices)


def test_choose_prefers_the_canary_for_its_cohort() -> None:
    stable = _pointer(100, [], channel="stable", version=1)
    canary = _pointer(100, ["north"])
    pointers = {"stable": stable, "canary": canary}
    assert choose(pointers, "dev-1", "north", "x86-64-generic") == canary
    assert choose(pointers, "dev-1", "south", "x86-64-generic") == stable
    assert choose(pointers, "dev-1", "north", "jetson-orin") is None  # no bundle for this profile
