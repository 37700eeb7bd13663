"""Signed objects are valid only in their context (TUF/Uptane "wrong software", "mix-and-match").

A good signature is not enough: another model's pointer copied over this one, the canary's
over the stable's, or a manifest of another model, version or profile placed at this path
must each fail, naming the field, in the library, in `bundle verify` and in `rollout verify`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.bundle.build import publish_bundle
from edgeml.bundle.channels import pointer_key, verify_pointer
from edgeml.bundle.keys import Signer, export_public, init_keys, load_signer
from edgeml.bundle.manifest import manifest_key
from edgeml.bundle.rollout import publish as publish_channel
from edgeml.bundle.verify import Context, fetch_bundle
from edgeml.cli import main
from edgeml.errors import BundleRejected
from edgeml.store.base import ObjectStore
from edgeml.store.local import LocalStore

from .conftest import make_manifest, write_model


def copy_signed(store: ObjectStore, source: str, target: str) -> None:
    """What a store writer without keys can do: put a genuinely signed document elsewhere."""
    store.put(target, store.get(source))
    store.put(target + ".sig", store.get(source + ".sig"))


def build(store: ObjectStore, signer: Signer, work: Path, model: str, version: int, profile: str) -> str:
    folder = work / f"{model}-{version}-{profile}"
    files = write_model(folder, version)
    manifest = make_manifest(files, version, model=model, profile=profile)
    return publish_bundle(store, signer, manifest, folder).key


@pytest.fixture
def home(clean_env: Path) -> Path:
    init_keys(clean_env)
    return clean_env


@pytest.fixture
def local(home: Path) -> LocalStore:
    return LocalStore(home / "store")  # the CLI's default store for this home


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())  # rich wraps long lines


def test_a_pointer_is_bound_to_its_model_and_channel(local: LocalStore, home: Path, tmp_path: Path) -> None:
    signer = load_signer(home)
    ring = signer.ring()
    for model in ("pump", "valve"):
        build(local, signer, tmp_path, model, 1, "x86-64-generic")
        publish_channel(local, signer, model, 1, "stable")
        publish_channel(local, signer, model, 1, "canary")
    key = pointer_key("pump", "stable")
    good = verify_pointer(local.get(key), local.get(key + ".sig"), ring, model="pump", channel="stable")
    assert (good.model, good.channel) == ("pump", "stable")

    copy_signed(local, pointer_key("valve", "stable"), key)
    with pytest.raises(BundleRejected) as wrong_model:
        verify_pointer(local.get(key), local.get(key + ".sig"), ring, model="pump", channel="stable")
    assert wrong_model.value.reason == "context-mismatch"
    assert "(field model)" in wrong_model.value.message
    assert "'valve'" in wrong_model.value.message

    copy_signed(local, pointer_key("pump", "canary"), key)
    with pytest.raises(BundleRejected) as wrong_channel:
        verify_pointer(local.get(key), local.get(key + ".sig"), ring, model="pump", channel="stable")
    assert "(field channel)" in wrong_channel.value.message


@pytest.mark.parametrize(
    ("field", "source"),
    [
        ("model", ("valve", 2, "x86-64-generic")),
        ("version", ("pump", 1, "x86-64-generic")),
        ("profile", ("pump", 2, "arm64-rpi4")),
    ],
)
def test_a_manifest_is_bound_to_its_model_version_and_profile(
    local: LocalStore,
    home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    source: tuple[str, int, str],
) -> None:
    signer = load_signer(home)
    build(local, signer, tmp_path, "pump", 2, "x86-64-generic")
    target = manifest_key("pump", 2, "x86-64-generic")
    code, out, _ = run(capsys, "bundle", "verify", "pump/2/x86-64-generic")
    assert (code, out.startswith("OK pump v2")) == (0, True)

    copy_signed(local, build(local, signer, tmp_path, *source), target)
    with pytest.raises(BundleRejected) as caught:
        fetch_bundle(local, target, signer.ring(), tmp_path / "staging")
    assert caught.value.reason == "context-mismatch"
    assert f"(field {field})" in caught.value.message
    assert not list((tmp_path / "staging").glob(".stage-*"))
    # what a pointer or a device expects is checked too, even at the manifest's own path
    own = manifest_key(*source)
    wanted = {"model": "pump", "version": 2, "profile": "x86-64-generic"}
    with pytest.raises(BundleRejected, match=rf"\(field {field}\)"):
        fetch_bundle(local, own, signer.ring(), tmp_path / "staging", context=Context(**wanted))  # type: ignore[arg-type]

    code, _, err = run(capsys, "bundle", "verify", "pump/2/x86-64-generic")
    assert code == 3
    assert f"(field {field})" in err
    assert "[context-mismatch]" in err


def test_bundle_verify_refuses_a_uri_that_is_not_model_version_profile(
    local: LocalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "bundle", "verify", "pump/latest/x86-64-generic")
    assert code == 2
    assert "MODEL/VERSION/PROFILE" in err
    code, _, err = run(capsys, "bundle", "verify", "bundles/pump/2/manifest.json")
    assert code == 3
    assert "not where manifests are published" in err


def test_rollout_verify_checks_pointers_and_the_bundles_they_name(
    local: LocalStore, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = load_signer(home)
    for model in ("pump", "valve"):
        build(local, signer, tmp_path, model, 1, "x86-64-generic")
        publish_channel(local, signer, model, 1, "stable")
    code, out, _ = run(capsys, "rollout", "verify", "pump")
    assert code == 0
    assert "OK pump stable: v1 (serial 1), 1 bundle(s) verified" in out
    copy_signed(local, pointer_key("valve", "stable"), pointer_key("pump", "stable"))
    code, _, err = run(capsys, "rollout", "verify", "pump")
    assert code == 3
    assert "(field model)" in err


def test_the_device_key_ring_need_not_be_the_publishers(
    local: LocalStore, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--keyring` verifies with what devices hold: a key not in it is a rejection (exit 3)."""
    signer = load_signer(home)
    build(local, signer, tmp_path, "pump", 1, "x86-64-generic")
    publish_channel(local, signer, "pump", 1, "stable")
    other = tmp_path / "other"
    init_keys(other)
    ring = tmp_path / "ring"
    export_public(other, ring)
    code, _, err = run(capsys, "rollout", "verify", "pump", "--keyring", str(ring))
    assert code == 3
    assert "[unknown-key]" in err
