"""An object store in process memory (``memory://``), for tests and throwaway runs."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from edgeml.errors import ObjectExistsError, ObjectNotFoundError
from edgeml.store.base import ObjectInfo, ObjectStore

__all__ = ["MemoryStore"]


class MemoryStore(ObjectStore):
    """Objects held in a dict; each ``put`` swaps in a complete value under a lock."""

    backend = "memory"

    def __init__(self, name: str = "") -> None:
        self._name = name
        self._objects: dict[str, tuple[bytes, ObjectInfo]] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"memory://{self._name}"

    def _put(self, key: str, stream: BinaryIO, content_type: str | None) -> ObjectInfo:
        data = stream.read()
        sha = hashlib.sha256(data).hexdigest()
        info = ObjectInfo(key, len(data), sha, sha[:32], datetime.now(UTC))
        with self._lock:
            self._objects[key] = (data, info)
        return info

    def _create(self, key: str, data: bytes, content_type: str | None) -> ObjectInfo:
        sha = hashlib.sha256(data).hexdigest()
        info = ObjectInfo(key, len(data), sha, sha[:32], datetime.now(UTC))
        with self._lock:
            if key in self._objects:
                raise ObjectExistsError(key, where=self.url)
            self._objects[key] = (data, info)
        return info

    def _get(self, key: str) -> tuple[bytes, ObjectInfo]:
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise ObjectNotFoundError(key, where=self.url) from None

    def _open(self, key: str, offset: int, length: int | None, chunk_size: int) -> Iterator[bytes]:
        data, _ = self._get(key)
        end = len(data) if length is None else min(len(data), offset + length)
        return (data[i : min(i + chunk_size, end)] for i in range(offset, end, chunk_size))

    def _stat(self, key: str) -> ObjectInfo:
        return self._get(key)[1]

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:
            infos = [info for key, (_, info) in self._objects.items() if key.startswith(prefix)]
        infos.sort(key=lambda info: info.key.encode("utf-8"))
        return iter(infos)

    def _delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)
