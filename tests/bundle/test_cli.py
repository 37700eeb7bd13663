"""`edgeml keys`, `edgeml bundle verify|show` and `edgeml rollout` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeml.bundle.build import publish_bundle
from edgeml.bundle.keys import load_signer
from edgeml.bundle.manifest import blob_key
from edgeml.cli import main
from edgeml.store.local import LocalStore

from .conftest import make_manifest, write_model


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def published(clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> LocalStore:
    """An appliance home with a key and bundles v1 and v2 of `pump` on its store."""
    assert run(capsys, "keys", "init")[0] == 0
    store = LocalStore(clean_env / "store")
    signer = load_signer(clean_env)
    for version in (1, 2):
        folder = tmp_path / f"build{version}"
        publish_bundle(store, signer, make_manifest(write_model(folder, version), version), folder)
    return store


def test_keys_commands(clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keys", "init")
    assert code == 0
    assert "(mode 0600)" in out
    code, _, err = run(capsys, "keys", "init")
    assert code == 2
    assert "already exist" in err
    assert "keys rotate" in err
    assert run(capsys, "keys", "rotate")[0] == 0
    code, out, _ = run(capsys, "keys", "list")
    assert code == 0
    assert out.count("keys/") == 2
    assert out.strip().splitlines()[-1].endswith("active")
    code, out, _ = run(capsys, "keys", "export-public", "--out", str(tmp_path / "ring"))
    assert code == 0
    assert len(list((tmp_path / "ring").glob("*.pub"))) == 2


def test_verify_passes_then_fails_with_the_reason(
    published: LocalStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = tmp_path / "ring"
    assert run(capsys, "keys", "export-public", "--out", str(ring))[0] == 0
    code, out, _ = run(capsys, "bundle", "verify", "pump/2/x86-64-generic", "--keyring", str(ring))
    assert code == 0
    assert out.startswith("OK pump v2 (x86-64-generic)")
    code, _, err = run(capsys, "bundle", "verify", "pump/1/x86-64-generic", "--min-version", "2")
    assert code == 3
    assert "[replay]" in err
    manifest = json.loads(published.get("bundles/pump/2/x86-64-generic/manifest.json"))
    weights = manifest["files"][1]["sha256"]
    published.put(blob_key(weights), published.get(blob_key(weights))[::-1])
    code, _, err = run(capsys, "bundle", "verify", "pump/2/x86-64-generic", "--keyring", str(ring))
    assert code == 3
    assert "[digest-mismatch]" in err
    assert "model.onnx.data" in err


def test_verify_a_local_bundle_folder(
    published: LocalStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeml.bundle.keys import KeyRing
    from edgeml.bundle.verify import fetch_bundle

    staged = fetch_bundle(
        published,
        "bundles/pump/1/x86-64-generic/manifest.json",
        KeyRing.from_home(published.root.parent),
        tmp_path / "s",
    )
    code, out, _ = run(capsys, "bundle", "verify", str(staged.path))
    assert code == 0
    assert "OK pump v1" in out
    (staged.path / "evil.pkl").write_bytes(b"\x80\x04.")
    code, _, err = run(capsys, "bundle", "verify", str(staged.path))
    assert code == 3
    assert "evil.pkl" in err


def test_bundle_show_prints_the_manifest(published: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "bundle", "show", "pump/1/x86-64-generic")
    assert code == 0
    assert json.loads(out)["version"] == 1


def test_rollout_commands(published: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rollout", "status", "pump")
    assert code == 0
    assert "no channels yet" in out
    code, out, _ = run(capsys, "rollout", "publish", "pump", "1")
    assert code == 0
    assert "pump stable: v1 (serial 1) to 100% of all groups" in out
    code, out, _ = run(
        capsys,
        "rollout",
        "publish",
        "pump",
        "2",
        "--channel",
        "canary",
        "--percent",
        "25",
        "--group",
        "north",
    )
    assert code == 0
    assert "pump canary: v2 (serial 1) to 25% of north" in out
    code, out, _ = run(capsys, "rollout", "promote", "pump")
    assert code == 0
    assert "pump stable: v2 (serial 2)" in out
    code, _, err = run(capsys, "rollout", "publish", "pump", "1")
    assert code == 2
    assert "versions only move forward" in err
    code, out, _ = run(capsys, "rollout", "rollback", "pump", "--to", "1", "--reason", "drift")
    assert code == 0
    assert "ROLLBACK from v2 (drift)" in out
    code, out, _ = run(capsys, "rollout", "status", "pump", "--json")
    status = json.loads(out)
    assert status["stable"]["version"] == 1
    assert status["stable"]["rollback"]["from_version"] == 2
    assert status["canary"]["canary_percent"] == 0


@pytest.mark.parametrize("group", ["keys", "bundle", "rollout"])
def test_every_option_is_explained(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([group, "--help"]) == 0
    assert capsys.readouterr().out.strip()
