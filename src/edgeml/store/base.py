"""The object-store interface every stage writes through.

Keys are ``/``-separated relative paths (``lake/sensors/part-0.parquet``). Every
``put`` is atomic: a reader sees the old object or the whole new one, never a part,
and a failed upload leaves nothing behind. Each object's sha256 is recorded when it
is written and returned by :meth:`ObjectStore.stat`, so readers can verify content.

Backends implement the ``_``-prefixed primitives; the public methods here check keys,
count metrics and hold the behaviour every backend shares, so it exists once.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from edgeml.errors import InvalidKeyError, ObjectNotFoundError, StoreError
from edgeml.observability import track_store_bytes, track_store_operation

__all__ = ["CHUNK_SIZE", "ObjectInfo", "ObjectStore", "Payload", "check_key", "check_prefix"]

CHUNK_SIZE = 1024 * 1024
#: What ``put`` accepts: bytes, an open binary stream, or the path of a local file.
Payload = bytes | BinaryIO | Path
#: Segment prefix reserved for a backend's in-flight temporary files.
TEMP_PREFIX = ".edgeml-tmp-"
#: Longest ``/``-separated segment: a file name on ext4, XFS, NTFS and most others, so that
#: every key valid in one backend is valid in all (a store can move from a folder to S3).
_MAX_SEGMENT_BYTES = 255
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the store knows of one object.

    ``sha256`` is always set by :meth:`ObjectStore.stat` and ``put``; listings may leave
    it ``None`` where the backend cannot return it cheaply (S3 listings carry no metadata).
    """

    key: str
    size: int
    sha256: str | None
    etag: str | None
    modified: datetime | None


def check_key(key: str) -> str:
    """Return ``key`` if it is a well-formed object key, else raise :class:`InvalidKeyError`."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("object key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > 1024:
        raise InvalidKeyError(f"object key is longer than 1024 bytes: {key[:60]!r}...")
    if key.startswith("/") or key.endswith("/"):
        raise InvalidKeyError(f"object key {key!r} must not start or end with '/'")
    if _BAD_CHARS.search(key):
        raise InvalidKeyError(f"object key {key!r} holds a control character or a backslash")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"object key {key!r} is not valid UTF-8") from exc
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKeyError(f"object key {key!r} has an empty, '.' or '..' segment")
        if len(part.encode("utf-8")) > _MAX_SEGMENT_BYTES:
            raise InvalidKeyError(
                f"object key {key[:60]!r}... has a segment longer than {_MAX_SEGMENT_BYTES} bytes "
                "(the file-name limit of local stores)"
            )
        if part.startswith(TEMP_PREFIX):
            raise InvalidKeyError(f"object key {key!r} uses the reserved prefix {TEMP_PREFIX!r}")
    return key


def check_prefix(prefix: str) -> str:
    """Validate a listing prefix: empty, or a key that may end in ``/``."""
    if prefix:
        stripped = prefix[:-1] if prefix.endswith("/") else prefix
        if not stripped:
            raise InvalidKeyError("listing prefix must not be '/'; use '' for everything")
        check_key(stripped)
    return prefix


def _as_stream(data: Payload) -> tuple[BinaryIO, bool]:
    """An open binary stream for ``data`` and whether the caller must close it."""
    if isinstance(data, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(data)), True
    if isinstance(data, Path):
        return data.open("rb"), True
    return data, False


class ObjectStore(ABC):
    """A flat namespace of objects addressed by key. Thread-safe for concurrent use."""

    #: short backend name used in metrics and messages ("local", "s3", "memory")
    backend: str = "abstract"

    @property
    @abstractmethod
    def url(self) -> str:
        """The URL this store was opened from."""

    # Backend primitives. Keys reaching them are already checked.

    @abstractmethod
    def _put(self, key: str, stream: BinaryIO, content_type: str | None) -> ObjectInfo:
        """Write everything ``stream`` yields under ``key``, atomically."""

    @abstractmethod
    def _create(self, key: str, data: bytes, content_type: str | None) -> ObjectInfo:
        """Write ``data`` under ``key`` only if no object is there, atomically; else ObjectExistsError."""

    @abstractmethod
    def _open(self, key: str, offset: int, length: int | None, chunk_size: int) -> Iterator[bytes]:
        """Return an iterator of chunks; raise ObjectNotFoundError now, not on first next()."""

    @abstractmethod
    def _stat(self, key: str) -> ObjectInfo: ...

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in key order (UTF-8 byte order, as S3 lists)."""

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    # Public API.

    def put(self, key: str, data: Payload, *, content_type: str | None = None) -> ObjectInfo:
        """Write ``data`` (bytes, a binary stream or a file path) atomically under ``key``."""
        check_key(key)
        stream, owned = _as_stream(data)
        try:
            with track_store_operation(self.backend, "put"):
                info = self._put(key, stream, content_type)
        finally:
            if owned:
                stream.close()
        track_store_bytes(self.backend, "up", info.size)
        return info

    def create(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Write ``data`` under ``key`` if nothing is there yet, else raise ObjectExistsError.

        The check and the write are one atomic step, even between processes or machines
        sharing the store: of two writers creating the same key, exactly one succeeds.
        """
        check_key(key)
        with track_store_operation(self.backend, "put"):
            info = self._create(key, data, content_type)
        track_store_bytes(self.backend, "up", info.size)
        return info

    def stream(
        self, key: str, *, offset: int = 0, length: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> Generator[bytes, None, None]:
        """Iterate over the object's bytes from ``offset``, at most ``length`` of them.

        Raises :class:`~edgeml.errors.ObjectNotFoundError` at the call, before any
        iteration, if ``key`` does not exist. An offset at or past the end yields nothing.
        Resumable downloads ask for ``offset=<bytes already on disk>``.
        """
        check_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must be non-negative")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        with track_store_operation(self.backend, "get"):
            chunks = self._open(key, offset, length, chunk_size)
        return self._count_down(chunks)

    def _count_down(self, chunks: Iterator[bytes]) -> Generator[bytes, None, None]:
        total = 0
        try:
            for chunk in chunks:
                total += len(chunk)
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # a reader that stops early must not leave the file or connection open
            track_store_bytes(self.backend, "down", total)

    def get(self, key: str) -> bytes:
        """The whole object. Use :meth:`stream` or :meth:`download` for big ones."""
        return b"".join(self.stream(key))

    def stat(self, key: str) -> ObjectInfo:
        """Size, sha256, ETag and modification time of one object."""
        check_key(key)
        with track_store_operation(self.backend, "stat"):
            return self._stat(key)

    def exists(self, key: str) -> bool:
        """Whether ``key`` names an object."""
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a plain string prefix), in key order."""
        check_prefix(prefix)
        with track_store_operation(self.backend, "list"):
            return self._list(prefix)

    def keys(self, prefix: str = "") -> builtins.list[str]:
        """Keys under ``prefix``, in key order."""
        return [info.key for info in self.list(prefix)]

    def delete(self, key: str) -> None:
        """Remove ``key``. Removing a missing key is not an error (as in S3)."""
        check_key(key)
        with track_store_operation(self.backend, "delete"):
            self._delete(key)

    def download(self, key: str, dest: Path) -> ObjectInfo:
        """Copy an object to a local file atomically, verifying its sha256 on the way."""
        info = self.stat(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{dest.name}.", dir=dest.parent)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self.stream(key):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if info.sha256 and digest.hexdigest() != info.sha256:
                raise StoreError(
                    f"{key}: downloaded content has sha256 {digest.hexdigest()}, "
                    f"the store recorded {info.sha256}; the object changed or is corrupt"
                )
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
