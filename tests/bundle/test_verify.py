"""Every tampered variant of a published bundle is rejected with its reason, leaving nothing staged.

Each test runs against a local folder store and the real S3-protocol server (see conftest).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edgeml.bundle.build import WEIGHTS_FILE, _entry, publish_bundle
from edgeml.bundle.keys import KeyRing, Signer, canonical_json, init_keys, load_signer
from edgeml.bundle.manifest import FileEntry, blob_key
from edgeml.bundle.verify import fetch_bundle, verify_folder, verify_manifest
from edgeml.errors import BundleRejected
from edgeml.store.base import ObjectStore

from .conftest import Publish, make_manifest, write_model


def assert_clean(staging: Path) -> None:
    """Nothing of a rejected bundle stays: no stage folder, no partial download, no unverified blob."""
    assert not list(staging.glob(".stage-*"))
    cache = staging / ".blobs"
    for path in cache.iterdir() if cache.exists() else []:
        assert not path.name.endswith(".part"), path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def rejected(store: ObjectStore, key: str, ring: KeyRing, staging: Path, **kwargs: object) -> BundleRejected:
    with pytest.raises(BundleRejected) as info:
        fetch_bundle(store, key, ring, staging, **kwargs)  # type: ignore[arg-type]
    assert_clean(staging)
    return info.value


def test_a_good_bundle_stages_verified_and_runs(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    import onnxruntime as ort

    result = publish(1)
    assert {f.path for f in result.manifest.files} == {"model.onnx", WEIGHTS_FILE}
    staged = fetch_bundle(store, result.key, ring, tmp_path / "staging")
    assert staged.manifest == result.manifest
    assert staged.downloaded_bytes == sum(f.size for f in result.manifest.files)
    assert sorted(p.name for p in staged.path.iterdir()) == [
        "manifest.json",
        "manifest.json.sig",
        "model.onnx",
        WEIGHTS_FILE,
    ]
    assert verify_folder(staged.path, ring) == result.manifest
    session = ort.InferenceSession(str(staged.path / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"a": np.ones((1, 1)), "b": np.ones((1, 1))})[0]
    assert out.shape == (1, 1)


def test_a_flipped_byte_in_a_blob(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    result = publish(1)
    weights = next(f for f in result.manifest.files if f.path == WEIGHTS_FILE)
    data = bytearray(store.get(blob_key(weights.sha256)))
    data[len(data) // 2] ^= 0x01
    store.put(blob_key(weights.sha256), bytes(data))
    error = rejected(store, result.key, ring, tmp_path / "staging")
    assert error.reason == "digest-mismatch"
    assert WEIGHTS_FILE in error.message


def test_a_blob_swapped_in_from_another_version(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    v1, v2 = publish(1, seed=1), publish(2, seed=2)
    w1 = next(f for f in v1.manifest.files if f.path == WEIGHTS_FILE)
    w2 = next(f for f in v2.manifest.files if f.path == WEIGHTS_FILE)
    assert w1.sha256 != w2.sha256
    assert w1.size == w2.size
    store.put(blob_key(w2.sha256), store.get(blob_key(w1.sha256)))
    assert rejected(store, v2.key, ring, tmp_path / "staging").reason == "digest-mismatch"


def test_an_old_manifest_replayed(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    old = publish(3, seed=1)
    publish(4, seed=2)
    error = rejected(store, old.key, ring, tmp_path / "staging", min_version=4)
    assert error.reason == "replay"
    assert "v3 is older than v4" in error.message
    # the same version again is fine (a device re-verifying what it runs), and so is a signed rollback
    fetch_bundle(store, old.key, ring, tmp_path / "staging", min_version=3)
    fetch_bundle(store, old.key, ring, tmp_path / "staging", min_version=4, rollback_to=3)


def test_an_expired_manifest(publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path) -> None:
    created = datetime.now(UTC) - timedelta(days=10)
    result = publish(1, created=created, expires=created + timedelta(days=9))
    error = rejected(store, result.key, ring, tmp_path / "staging")
    assert error.reason == "expired"
    assert "expired at" in error.message


def test_a_manifest_from_the_future(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    result = publish(1, created=datetime.now(UTC) + timedelta(hours=2))
    assert rejected(store, result.key, ring, tmp_path / "staging").reason == "not-yet-valid"


def _other_signer(tmp_path: Path) -> Signer:
    home = tmp_path / "attacker"
    init_keys(home)
    return load_signer(home)


def test_an_unknown_key(store: ObjectStore, ring: KeyRing, tmp_path: Path) -> None:
    stranger = _other_signer(tmp_path)
    folder = tmp_path / "build"
    result = publish_bundle(store, stranger, make_manifest(write_model(folder, 0)), folder)
    error = rejected(store, result.key, ring, tmp_path / "staging")
    assert error.reason == "unknown-key"
    assert stranger.key_id in error.message


def test_a_manifest_resigned_by_a_key_not_in_the_ring(
    publish: Publish, store: ObjectStore, ring: KeyRing, signer: Signer, tmp_path: Path
) -> None:
    """An attacker edits the manifest and signs it with their key, claiming ours."""
    result = publish(1)
    doc = json.loads(store.get(result.key))
    doc["metrics"]["holdout_rmse"] = 0.0
    data = canonical_json(doc)
    stranger = _other_signer(tmp_path)
    forged = json.loads(stranger.sign(data))
    forged["key_id"] = signer.key_id
    store.put(result.key, data)
    store.put(result.key + ".sig", canonical_json(forged))
    error = rejected(store, result.key, ring, tmp_path / "staging")
    assert error.reason == "bad-signature"


def test_an_edited_manifest_under_the_original_signature(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    result = publish(1)
    store.put(result.key, store.get(result.key).replace(b'"version":1', b'"version":9'))
    assert rejected(store, result.key, ring, tmp_path / "staging").reason == "bad-signature"


def test_a_stream_longer_than_declared(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    result = publish(1)
    weights = next(f for f in result.manifest.files if f.path == WEIGHTS_FILE)
    store.put(blob_key(weights.sha256), store.get(blob_key(weights.sha256)) + b"\0" * 10_000)
    error = rejected(store, result.key, ring, tmp_path / "staging")
    assert error.reason == "too-long"
    assert f"{weights.size:,} bytes declared" in error.message


def test_a_truncated_blob(publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path) -> None:
    result = publish(1)
    weights = next(f for f in result.manifest.files if f.path == WEIGHTS_FILE)
    store.put(blob_key(weights.sha256), store.get(blob_key(weights.sha256))[:100])
    assert rejected(store, result.key, ring, tmp_path / "staging").reason == "truncated"


def test_a_missing_blob(publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path) -> None:
    result = publish(1)
    store.delete(blob_key(result.manifest.files[0].sha256))
    assert rejected(store, result.key, ring, tmp_path / "staging").reason == "missing-blob"


def _publish_with_files(store: ObjectStore, signer: Signer, folder: Path, entries: list[FileEntry]) -> str:
    manifest = make_manifest(write_model(folder, 0)).model_copy(update={"files": entries})
    return publish_bundle(store, signer, manifest, folder).key


@pytest.mark.parametrize("name", ["../model.onnx", "..", "sub/model.onnx", "/etc/model.onnx", ".hidden.onnx"])
def test_a_path_leaving_the_bundle(
    store: ObjectStore, signer: Signer, ring: KeyRing, tmp_path: Path, name: str
) -> None:
    folder = tmp_path / "build"
    files = write_model(folder, 0)
    entries = [_entry(p) for p in files]
    entries[0] = entries[0].model_copy(update={"path": name})
    manifest = make_manifest(files).model_copy(update={"files": entries, "key_id": signer.key_id})
    data = canonical_json(manifest.model_dump(mode="json"))
    key = "bundles/pump/1/x86-64-generic/manifest.json"
    for entry, path in zip(entries, files, strict=True):
        store.put(blob_key(entry.sha256), path)
    store.put(key, data)
    store.put(key + ".sig", signer.sign(data))
    error = rejected(store, key, ring, tmp_path / "staging")
    assert error.reason == "unsafe-path"
    assert repr(name) in error.message


def test_a_pickle_file_listed(store: ObjectStore, signer: Signer, ring: KeyRing, tmp_path: Path) -> None:
    folder = tmp_path / "build"
    write_model(folder, 0, external=False)
    (folder / "model.pkl").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    manifest = make_manifest([folder / "model.onnx", folder / "model.pkl"])
    key = publish_bundle(store, signer, manifest, folder).key
    error = rejected(store, key, ring, tmp_path / "staging")
    assert error.reason == "file-type"
    assert "'model.pkl'" in error.message


def test_a_pickle_disguised_as_weights(
    store: ObjectStore, signer: Signer, ring: KeyRing, tmp_path: Path
) -> None:
    folder = tmp_path / "build"
    write_model(folder, 0, external=False)
    (folder / WEIGHTS_FILE).write_bytes(pickle.dumps(object, protocol=4))
    manifest = make_manifest([folder / "model.onnx", folder / WEIGHTS_FILE])
    key = publish_bundle(store, signer, manifest, folder).key
    error = rejected(store, key, ring, tmp_path / "staging")
    assert error.reason == "file-type"
    assert "pickle" in error.message


@pytest.mark.parametrize("location", ["../../etc/passwd", "/dev/zero", "other.data"])
def test_onnx_external_data_leaving_the_bundle(
    store: ObjectStore, signer: Signer, ring: KeyRing, tmp_path: Path, location: str
) -> None:
    import onnx

    folder = tmp_path / "build"
    write_model(folder, 0)
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(folder / "model.onnx"))
    manifest = make_manifest([folder / "model.onnx", folder / WEIGHTS_FILE])
    key = publish_bundle(store, signer, manifest, folder).key
    error = rejected(store, key, ring, tmp_path / "staging")
    assert error.reason == "unsafe-path"
    assert repr(location) in error.message


def test_a_manifest_without_its_signature(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    result = publish(1)
    store.delete(result.key + ".sig")
    assert rejected(store, result.key, ring, tmp_path / "staging").reason == "missing"


def test_an_interrupted_download_resumes(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    result = publish(1)
    weights = next(f for f in result.manifest.files if f.path == WEIGHTS_FILE)
    staging = tmp_path / "staging"
    cache = staging / ".blobs"
    cache.mkdir(parents=True)
    first_half = store.get(blob_key(weights.sha256))[: weights.size // 2]
    (cache / f"{weights.sha256}.part").write_bytes(first_half)
    staged = fetch_bundle(store, result.key, ring, staging)
    total = sum(f.size for f in result.manifest.files)
    assert staged.downloaded_bytes == total - len(first_half)
    assert not list(cache.glob("*.part"))
    assert verify_folder(staged.path, ring) == result.manifest


def test_a_weights_only_change_moves_only_the_weights(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    v1, v2 = publish(1, seed=1), publish(2, seed=2)
    graph1, graph2 = (next(f for f in r.manifest.files if f.path == "model.onnx") for r in (v1, v2))
    weights2 = next(f for f in v2.manifest.files if f.path == WEIGHTS_FILE)
    assert graph1 == graph2
    assert v2.uploaded_bytes == weights2.size
    assert v2.reused_bytes == graph2.size
    staging = tmp_path / "staging"
    fetch_bundle(store, v1.key, ring, staging)
    staged = fetch_bundle(store, v2.key, ring, staging, min_version=1)
    assert staged.downloaded_bytes == weights2.size
    assert staged.reused_bytes == graph2.size


def test_verify_folder_finds_tampering_on_disk(
    publish: Publish, store: ObjectStore, ring: KeyRing, tmp_path: Path
) -> None:
    staged = fetch_bundle(store, publish(1).key, ring, tmp_path / "staging")
    (staged.path / "extra.py").write_text("import os")
    with pytest.raises(BundleRejected, match=r"does not list: extra\.py"):
        verify_folder(staged.path, ring)
    (staged.path / "extra.py").unlink()
    weights = staged.path / WEIGHTS_FILE
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[0] ^= 0xFF
    weights.unlink()  # a hard link to the cache: write a new file, as an attacker would
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleRejected) as info:
        verify_folder(staged.path, ring)
    assert info.value.reason == "digest-mismatch"


def test_verify_manifest_checks_the_signature_before_parsing(ring: KeyRing) -> None:
    with pytest.raises(BundleRejected) as info:
        verify_manifest(b"{not json", b'{"algorithm":"ed25519","key_id":"x","signature":"AA=="}', ring)
    assert info.value.reason == "unknown-key"
