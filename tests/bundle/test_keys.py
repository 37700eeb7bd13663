"""Signing keys: creation, rotation, permissions, key rings, signatures."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeml.bundle.keys import (
    KeyRing,
    canonical_json,
    export_public,
    init_keys,
    list_keys,
    load_signer,
    rotate_keys,
)
from edgeml.errors import BundleRejected, UserError


def test_init_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    info = init_keys(tmp_path)
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert load_signer(tmp_path).key_id == info.key_id
    assert [k.key_id for k in list_keys(tmp_path)] == [info.key_id]


def test_init_twice_is_refused(tmp_path: Path) -> None:
    init_keys(tmp_path)
    with pytest.raises(UserError, match="already exist") as info:
        init_keys(tmp_path)
    assert "rotate" in (info.value.hint or "")


def test_a_readable_private_key_is_refused(tmp_path: Path) -> None:
    info = init_keys(tmp_path)
    info.path.chmod(0o644)
    with pytest.raises(UserError, match="readable by others") as error:
        load_signer(tmp_path)
    assert "chmod 600" in (error.value.hint or "")


def test_no_key_yet(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no signing key"):
        load_signer(tmp_path)
    with pytest.raises(UserError, match="no signing key to rotate"):
        rotate_keys(tmp_path)


def test_rotation_signs_with_the_new_key_and_the_ring_keeps_both(tmp_path: Path) -> None:
    old = init_keys(tmp_path)
    old_signer = load_signer(tmp_path)
    new = rotate_keys(tmp_path)
    assert new.key_id != old.key_id
    signer = load_signer(tmp_path)
    assert signer.key_id == new.key_id
    assert [k.active for k in list_keys(tmp_path) if k.key_id == new.key_id] == [True]
    written = export_public(tmp_path, tmp_path / "ring")
    assert sorted(p.name for p in written) == sorted([f"{old.key_id}.pub", f"{new.key_id}.pub"])
    ring = KeyRing.from_dir(tmp_path / "ring")
    assert ring.verify(b"doc", old_signer.sign(b"doc")) == old.key_id  # bundles signed before rotation
    assert ring.verify(b"doc", signer.sign(b"doc")) == new.key_id
    # a device that has only the old ring refuses what the new key signed, naming the cure
    old_ring = KeyRing({old.key_id: old_signer.private.public_key()})
    with pytest.raises(BundleRejected) as info:
        old_ring.verify(b"doc", signer.sign(b"doc"))
    assert info.value.reason == "unknown-key"
    assert "new public key" in (info.value.hint or "")


def test_a_ring_file_claiming_another_id_is_refused(tmp_path: Path) -> None:
    info = init_keys(tmp_path)
    export_public(tmp_path, tmp_path / "ring")
    (tmp_path / "ring" / f"{info.key_id}.pub").rename(tmp_path / "ring" / "0123456789abcdef.pub")
    with pytest.raises(UserError, match="not the 0123456789abcdef its name claims"):
        KeyRing.from_dir(tmp_path / "ring")


def test_an_empty_or_missing_ring(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        KeyRing.from_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"holds no \*\.pub keys"):
        KeyRing.from_dir(tmp_path / "empty")


def test_a_ring_file_that_is_not_a_key(tmp_path: Path) -> None:
    (tmp_path / "ring").mkdir()
    (tmp_path / "ring" / "0123456789abcdef.pub").write_text("hello")
    with pytest.raises(UserError, match="not a PEM public key"):
        KeyRing.from_dir(tmp_path / "ring")


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"[]",
        b'{"algorithm": "rsa", "key_id": "k", "signature": "AA=="}',
        b'{"algorithm": "ed25519", "key_id": "k"}',
        b'{"algorithm": "ed25519", "key_id": "K", "signature": "not base64!"}',
    ],
)
def test_malformed_signature_documents(tmp_path: Path, document: bytes) -> None:
    init_keys(tmp_path)
    ring = KeyRing.from_home(tmp_path)
    kid = next(iter(ring.keys))
    with pytest.raises(BundleRejected) as info:
        ring.verify(b"doc", document.replace(b'"K"', json.dumps(kid).encode()))
    assert info.value.reason in ("bad-signature", "unknown-key")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_canonical_json_is_one_byte_string_per_document(document: object) -> None:
    data = canonical_json(document)
    assert canonical_json(json.loads(data)) == data


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError, match="Out of range"):
        canonical_json({"x": float("nan")})


def test_keys_never_appear_world_readable_even_briefly(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        info = init_keys(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
