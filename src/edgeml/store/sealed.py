"""Sealed objects: the local store's encryption at rest (hipaa), AES-256-GCM in chunks.

A sealed file is ``MAGIC`` then chunks of at most ``CHUNK`` plaintext bytes, each stored as a random
12-byte nonce and its ciphertext with the 16-byte tag. Each chunk's associated data binds it to its
object key, its index and whether it is the last, so chunks cannot be moved between objects or
re-ordered, and a truncated file fails to open. Chunks make ranged reads (resumable downloads)
decrypt only the chunks they touch, and the plaintext size follows from the file size alone.

A store is sealed when ``<store folder>.sealed.json`` (beside the folder, so no listing shows it)
names a key file: 32 random bytes, mode 0600, kept in the appliance home (``keys/store.key``).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edgeml.errors import StoreConfigError, StoreError

__all__ = [
    "CHUNK",
    "MAGIC",
    "Sealer",
    "enable_sealing",
    "seal_with_new_key",
    "sealer_for",
    "sealing_key",
    "sealing_key_file",
]

MAGIC = b"EDGEMLS1"
CHUNK = 64 * 1024
_NONCE = 12
_TAG = 16
_STORED = CHUNK + _NONCE + _TAG


def _marker(root: Path) -> Path:
    return root.with_name(root.name + ".sealed.json")


def seal_with_new_key(target: Path, key_file: Path) -> Path:
    """Mark ``target`` (a folder or file) sealed with ``key_file``, made (32 random bytes, 0600) if new."""
    key_file.parent.mkdir(parents=True, exist_ok=True)
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
    _marker(target).write_text(json.dumps({"key_file": str(key_file.resolve())}), encoding="utf-8")
    return key_file


def sealing_key_file(target: Path) -> Path | None:
    """The key file ``target`` is sealed with (its marker names it), or None when it is not sealed."""
    marker = _marker(target)
    if not marker.is_file():
        return None
    return Path(json.loads(marker.read_text(encoding="utf-8"))["key_file"])


def sealing_key(target: Path, what: str) -> bytes | None:
    """The 256-bit key ``target`` is sealed with (its marker names the file), or None when it is not."""
    key_file = sealing_key_file(target)
    if key_file is None:
        return None
    try:
        mode = stat.S_IMODE(key_file.stat().st_mode)
        key = key_file.read_bytes()
    except OSError as exc:
        raise StoreConfigError(
            f"{what} {target} is sealed with {key_file}, which cannot be read: {exc}"
        ) from exc
    if mode & 0o077:
        raise StoreConfigError(
            f"{what} key {key_file} is readable by others (mode {mode:04o})", hint=f"chmod 600 {key_file}"
        )
    if len(key) != 32:
        raise StoreConfigError(f"{what} key {key_file} is not a 256-bit key")
    return key


def enable_sealing(root: Path, home: Path) -> Path:
    """Seal the store at ``root`` from now on with a new key under ``home``; the key file."""
    return seal_with_new_key(root, home / "keys" / "store.key")


def sealer_for(root: Path) -> Sealer | None:
    """The sealer of the store at ``root``, or None when it is not sealed."""
    key = sealing_key(root, "store")
    return None if key is None else Sealer(key)


def _fill(stream: Any) -> bytes:
    """A whole chunk, or what is left: a socket-like stream hands out less per read."""
    buffer = bytearray()
    while len(buffer) < CHUNK and (data := stream.read(CHUNK - len(buffer))):
        buffer += data
    return bytes(buffer)


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(key: str, index: int, last: bool) -> bytes:
        return f"{key}\x00{index}\x00{int(last)}".encode()

    def seal(self, key: str, stream: Any, out: BinaryIO) -> None:
        """Write ``stream`` sealed into ``out``."""
        out.write(MAGIC)
        index, chunk = 0, _fill(stream)
        while True:
            following = _fill(stream) if len(chunk) == CHUNK else b""
            last = not following
            nonce = secrets.token_bytes(_NONCE)
            out.write(nonce + self._aead.encrypt(nonce, chunk, self._aad(key, index, last)))
            if last:
                return
            index, chunk = index + 1, following

    @staticmethod
    def plain_size(stored: int) -> int:
        body = stored - len(MAGIC)
        chunks = max(1, -(-body // _STORED))
        return body - chunks * (_NONCE + _TAG)

    def open(self, key: str, fh: BinaryIO, stored: int, offset: int, length: int | None) -> Iterator[bytes]:
        """Plaintext bytes ``offset`` .. ``offset + length`` of the sealed file ``fh``."""
        if fh.read(len(MAGIC)) != MAGIC:
            raise StoreError(f"{key} is not sealed: written before the store was, or altered")
        size = self.plain_size(stored)
        end = size if length is None else min(size, offset + length)
        chunks = max(1, -(-size // CHUNK))
        for index in range(offset // CHUNK, chunks):
            start = index * CHUNK
            if start >= end and not (size == 0 and index == 0):
                return
            fh.seek(len(MAGIC) + index * _STORED)
            record = fh.read(_STORED)
            try:
                plain = self._aead.decrypt(
                    record[:_NONCE], record[_NONCE:], self._aad(key, index, index == chunks - 1)
                )
            except InvalidTag:
                raise StoreError(f"{key} fails its authentication: altered, truncated or moved") from None
            yield plain[max(offset - start, 0) : end - start]
