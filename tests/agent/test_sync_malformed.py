"""The agent's sync on malformed input (property-based): arbitrary JSON values in every field of
the pointer's signature, the pointer and the manifest (re-signed with the genuine key after the
change). A round never raises: it counts a rejection (metric and /agent/status say why) and
keeps serving the old model, or takes a change that is harmless."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle.test_malformed import paths, replaced, values_or_delete
from edgeml.agent.sync import Syncer
from edgeml.bundle.channels import pointer_key
from edgeml.bundle.keys import canonical_json
from edgeml.bundle.manifest import manifest_key
from edgeml.observability import BUNDLE_SWAPS, BUNDLE_VERIFICATIONS

from .conftest import DeviceConfig, Publisher
from .test_sync import make_syncer, serving

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
POINTER = pointer_key("pump", "stable")
MANIFEST = manifest_key("pump", 2, "x86-64-generic")


@pytest.fixture
def device(publisher: Publisher, device_config: DeviceConfig) -> tuple[Publisher, Syncer]:
    """A device serving v1; v2 is built (not published) for manifest changes."""
    publisher.release(1)
    syncer = make_syncer(publisher, device_config())
    assert syncer.run_once() == "installed v1 from stable"
    syncer.run_once()  # probation (0 s) over: v1 is the floor
    publisher.bundle(2)
    return publisher, syncer


def sign(publisher: Publisher, key: str, document: Any) -> bytes:
    data = canonical_json(document)
    publisher.store.put(key + ".sig", publisher.signer.sign(data))
    publisher.store.put(key, data)
    return data


def pointer_to(publisher: Publisher, version: int, manifest: bytes) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "format": 1,
        "model": "pump",
        "channel": "stable",
        "serial": 2,
        "version": version,
        "manifests": {
            "x86-64-generic": {
                "key": manifest_key("pump", version, "x86-64-generic"),
                "sha256": hashlib.sha256(manifest).hexdigest(),
            }
        },
        "canary_percent": 100.0,
        "groups": [],
        "created": now.isoformat(timespec="seconds"),
        "expires": (now + timedelta(days=1)).isoformat(timespec="seconds"),
        "key_id": publisher.signer.key_id,
        "rollback": None,
    }


def counts() -> dict[str, float]:
    found: dict[str, float] = {}
    for metric in (BUNDLE_VERIFICATIONS, BUNDLE_SWAPS):
        for sample in next(iter(metric.collect())).samples:
            if sample.name.endswith("_total"):
                found[f"{sample.name}:{sample.labels['outcome']}"] = sample.value
    return found


def check_round(syncer: Syncer, *, pointer_changed: bool = True) -> None:
    """One round on whatever is on the store now: never raises; a refusal keeps v1 and says why.

    When the pointer was changed, a refusal also leaves the replay floor where it was (a genuine
    pointer naming a bad manifest is remembered: it verified).
    """
    model = syncer.holder.current
    state = copy.deepcopy(syncer.state)
    before = counts()
    outcome = syncer.run_once()
    after = counts()
    if outcome.startswith("rejected: "):
        reason = syncer.status()["last_rejection"]["reason"]
        assert (
            after[f"edgeml_bundle_verifications_total:{reason}"]
            == before.get(f"edgeml_bundle_verifications_total:{reason}", 0) + 1
        )
        assert serving(syncer) == 1
        if pointer_changed:
            assert syncer.state.serials == state.serials  # a refused pointer never moves the floor
    elif "failed its smoke test" in outcome:
        assert after["edgeml_agent_swaps_total:smoke_test_failed"] > before.get(
            "edgeml_agent_swaps_total:smoke_test_failed", 0
        )
        assert serving(syncer) == 1
    else:
        assert outcome in ("up to date: v1", "installed v2 from stable") or outcome.startswith(
            ("no channel names", "v2 was refused")
        ), outcome
    # back to the device as it was, for the next example
    syncer.holder.swap(model)
    syncer.state = state
    syncer._probation_since = None


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_any_value_in_any_field_of_the_pointers_signature(
    device: tuple[Publisher, Syncer], data: st.DataObject
) -> None:
    publisher, syncer = device
    saved = publisher.store.get(POINTER + ".sig")
    field = data.draw(st.sampled_from(["algorithm", "key_id", "signature"]))
    value = data.draw(values_or_delete)
    publisher.store.put(POINTER + ".sig", json.dumps(replaced(json.loads(saved), (field,), value)).encode())
    try:
        check_round(syncer)
    finally:
        publisher.store.put(POINTER + ".sig", saved)


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_any_value_in_any_pointer_field(device: tuple[Publisher, Syncer], data: st.DataObject) -> None:
    publisher, syncer = device
    genuine = pointer_to(publisher, 2, publisher.store.get(MANIFEST))
    path = data.draw(st.sampled_from(paths(genuine, depth=3)))
    saved = publisher.store.get(POINTER), publisher.store.get(POINTER + ".sig")
    sign(publisher, POINTER, replaced(genuine, path, data.draw(values_or_delete)))
    try:
        check_round(syncer)
    finally:
        publisher.store.put(POINTER, saved[0])
        publisher.store.put(POINTER + ".sig", saved[1])


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_any_value_in_any_manifest_field(device: tuple[Publisher, Syncer], data: st.DataObject) -> None:
    publisher, syncer = device
    genuine = json.loads(publisher.store.get(MANIFEST))
    saved = {k: publisher.store.get(k) for k in (POINTER, POINTER + ".sig", MANIFEST, MANIFEST + ".sig")}
    path = data.draw(st.sampled_from(paths(genuine, depth=3)))
    manifest = sign(publisher, MANIFEST, replaced(genuine, path, data.draw(values_or_delete)))
    sign(publisher, POINTER, pointer_to(publisher, 2, manifest))  # the pointer vouches for it
    try:
        check_round(syncer, pointer_changed=False)
    finally:
        for key, value in saved.items():
            publisher.store.put(key, value)


def test_a_signed_manifest_whose_model_is_a_path_is_a_rejection(device: tuple[Publisher, Syncer]) -> None:
    publisher, syncer = device
    document = json.loads(publisher.store.get(MANIFEST)) | {"model": "../../x"}
    manifest = sign(publisher, MANIFEST, document)
    sign(publisher, POINTER, pointer_to(publisher, 2, manifest))
    outcome = syncer.run_once()
    assert outcome.startswith("rejected: ")
    assert "field model" in outcome
    assert syncer.status()["last_rejection"]["reason"] == "malformed"
    assert serving(syncer) == 1
    assert not list(syncer.install.staging.glob(".stage-*"))


def test_a_signature_whose_key_id_is_a_list_is_a_rejection_shown_in_status(
    device: tuple[Publisher, Syncer],
) -> None:
    """The case that froze devices: KeyRing.verify raised TypeError and the sync thread died."""
    publisher, syncer = device
    sig = json.loads(publisher.store.get(POINTER + ".sig")) | {"key_id": ["a", "b"]}
    publisher.store.put(POINTER + ".sig", json.dumps(sig).encode())
    outcome = syncer.run_once()
    assert outcome.startswith("rejected: ")
    assert "field key_id" in outcome
    status = syncer.status()
    assert status["last_rejection"]["reason"] == "bad-signature"
    assert status["last_outcome"] == outcome
    assert serving(syncer) == 1
