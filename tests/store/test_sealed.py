"""hipaa: the local store sealed (encrypted at rest): nothing readable on disk, and a sealed object
moved, truncated or edited on disk is refused, not served. (The whole store contract runs on a
sealed store too: tests/store/test_contract.py, ``local-sealed``.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeml.cli import main
from edgeml.errors import StoreConfigError, StoreError
from edgeml.store.local import LocalStore
from edgeml.store.sealed import CHUNK, MAGIC, enable_sealing

SECRET = b"patient 0042, diagnosis: rotator cuff tear; " * 4000  # three chunks


@pytest.fixture
def sealed(tmp_path: Path) -> LocalStore:
    enable_sealing(tmp_path / "store", tmp_path / "home")
    return LocalStore(tmp_path / "store")


def test_nothing_is_readable_on_disk(sealed: LocalStore) -> None:
    sealed.put("lake/p/part.parquet", SECRET)
    raw = (sealed.root / "lake" / "p" / "part.parquet").read_bytes()
    assert raw.startswith(MAGIC)
    assert b"patient" not in raw
    assert len(SECRET) > 2 * CHUNK
    assert sealed.get("lake/p/part.parquet") == SECRET
    info = sealed.stat("lake/p/part.parquet")
    assert info.size == len(SECRET)  # sizes and hashes are of the plaintext, as on every backend
    assert (
        sealed.stream("lake/p/part.parquet", offset=CHUNK - 3, length=10).__next__()
        == SECRET[CHUNK - 3 : CHUNK]
    )


def test_a_sealed_object_altered_on_disk_is_refused(sealed: LocalStore) -> None:
    sealed.put("a", SECRET)
    sealed.put("b", b"other")
    path = sealed.root / "a"
    os.replace(sealed.root / "b", sealed.root / "c")  # moved to another key
    with pytest.raises(StoreError, match="fails its authentication"):
        sealed.get("c")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # truncated
    with pytest.raises(StoreError, match="fails its authentication"):
        sealed.get("a")
    path.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])  # one bit flipped
    with pytest.raises(StoreError, match="fails its authentication"):
        sealed.get("a")


def test_an_object_from_before_sealing_is_named(tmp_path: Path) -> None:
    LocalStore(tmp_path / "store").put("old", b"clear")
    enable_sealing(tmp_path / "store", tmp_path / "home")
    with pytest.raises(StoreError, match="old is not sealed"):
        LocalStore(tmp_path / "store").get("old")


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    key = enable_sealing(tmp_path / "store", tmp_path / "home")
    key.chmod(0o644)
    with pytest.raises(StoreConfigError, match="readable by others"):
        LocalStore(tmp_path / "store")


def test_cli_store_seal(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "seal"]) == 0
    assert "is sealed from now on" in capsys.readouterr().out
    assert (clean_env / "keys" / "store.key").stat().st_mode & 0o077 == 0
    store = LocalStore(clean_env / "store")
    store.put("x", b"secret")
    assert b"secret" not in (clean_env / "store" / "x").read_bytes()
    assert main(["store", "seal"]) == 0  # sealed already: checked, nothing changed
    assert "0 object(s) sealed in place" in capsys.readouterr().out
    assert store.get("x") == b"secret"
