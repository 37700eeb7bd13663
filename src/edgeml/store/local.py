"""An object store in a local directory (``file:///var/lib/edgeml/store``).

Atomic writes: content goes to a temporary file in the destination's own folder,
is fsynced, renamed over the key, and the folder is fsynced, so a crash leaves the
old object or the new one, never a torn file. Folders emptied by ``delete`` are
pruned so that listings and later keys stay clean.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from edgeml.errors import (
    InvalidKeyError,
    ObjectExistsError,
    ObjectNotFoundError,
    StoreConfigError,
    StoreError,
)
from edgeml.store.base import CHUNK_SIZE, TEMP_PREFIX, ObjectInfo, ObjectStore
from edgeml.store.sealed import Sealer, sealer_for

__all__ = ["LocalStore"]

#: How often ``put`` re-creates a folder that concurrent deletes keep pruning.
_PREPARE_ATTEMPTS = 20


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


class _Hashing:
    """A stream read through, hashing what passes."""

    def __init__(self, stream: BinaryIO, digest: Any) -> None:
        self.stream, self.digest = stream, digest

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data


class LocalStore(ObjectStore):
    """Objects as files under ``root``; the key is the relative path."""

    backend = "local"

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreConfigError(
                    f"cannot create store folder {self.root}: {exc.strerror}",
                    hint="choose a writable folder (store.url / EDGEML_STORE_URL)",
                ) from exc
        elif not self.root.is_dir():
            raise StoreConfigError(f"store folder {self.root} does not exist")
        self._sealer: Sealer | None = sealer_for(self.root)  # encrypted at rest (store/sealed.py)

    @property
    def url(self) -> str:
        return self.root.as_uri()

    @property
    def sealed(self) -> bool:
        """Whether objects are encrypted at rest here (their files are no use read directly)."""
        return self._sealer is not None

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _info(self, key: str, path: Path, sha256: str | None) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(
            key=key,
            size=st.st_size if self._sealer is None else self._sealer.plain_size(st.st_size),
            sha256=sha256,
            etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
            modified=datetime.fromtimestamp(st.st_mtime, UTC),
        )

    def _object_on_the_way(self, folder: Path) -> bool:
        """Whether a file (an object) sits where ``folder`` or one of its parents should be."""
        while folder != self.root:
            if folder.is_file():
                return True
            folder = folder.parent
        return False

    def _temp_file(self, key: str, path: Path) -> tuple[int, str]:
        """Create the key's folder and a temporary file in it.

        A concurrent ``delete`` may prune the folder between the two steps (or while
        ``mkdir`` runs, which then fails as if a file were in the way), so both are retried.
        """
        for _ in range(_PREPARE_ATTEMPTS):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as exc:
                if self._object_on_the_way(path.parent):
                    raise InvalidKeyError(
                        f"object key {key!r} passes through an existing object; in a local store "
                        "a key cannot also be the folder of other keys"
                    ) from exc
                continue  # a folder was pruned under us: make it again
            except FileNotFoundError:
                continue  # a parent was pruned between mkdir's steps
            if path.is_dir():
                raise InvalidKeyError(f"object key {key!r} is already a folder of other keys")
            try:
                return tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
            except FileNotFoundError:
                continue  # the folder was pruned between mkdir and mkstemp
        raise StoreError(f"{key}: its folder kept disappearing under concurrent deletes")

    def _prune(self, folder: Path) -> None:
        """Remove ``folder`` and its parents up to the root while they are empty."""
        while folder != self.root:
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent

    def _put(self, key: str, stream: BinaryIO, content_type: str | None) -> ObjectInfo:
        path = self._path(key)
        tmp, sha = self._write_temp(key, path, stream)
        try:
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            self._prune(path.parent)
            raise
        return self._info(key, path, sha)

    def _create(self, key: str, data: bytes, content_type: str | None) -> ObjectInfo:
        path = self._path(key)
        tmp, sha = self._write_temp(key, path, io.BytesIO(data))
        try:
            os.link(tmp, path)  # unlike a rename, fails when the name is taken
            _fsync_dir(path.parent)
        except FileExistsError:
            raise ObjectExistsError(key, where=self.url) from None
        finally:
            tmp.unlink(missing_ok=True)
        return self._info(key, path, sha)

    def _write_temp(self, key: str, path: Path, stream: BinaryIO) -> tuple[Path, str]:
        """``stream`` in a synced temporary file next to ``path``; the file and its sha256."""
        fd, tmp_name = self._temp_file(key, path)
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                if self._sealer is not None:
                    self._sealer.seal(key, _Hashing(stream, digest), out)
                while self._sealer is None and (chunk := stream.read(CHUNK_SIZE)):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
        except BaseException:
            tmp.unlink(missing_ok=True)
            self._prune(path.parent)  # a failed put leaves no folder behind either
            raise
        return tmp, digest.hexdigest()

    def _open(self, key: str, offset: int, length: int | None, chunk_size: int) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(key, where=self.url) from exc
        if self._sealer is not None:
            return self._unseal(self._sealer, key, fh, offset, length, chunk_size)
        return self._read(fh, offset, length, chunk_size)

    @staticmethod
    def _unseal(
        sealer: Sealer, key: str, fh: BinaryIO, offset: int, length: int | None, chunk_size: int
    ) -> Iterator[bytes]:
        with fh:
            for plain in sealer.open(key, fh, os.fstat(fh.fileno()).st_size, offset, length):
                for at in range(0, len(plain), chunk_size):
                    yield plain[at : at + chunk_size]

    @staticmethod
    def _read(fh: BinaryIO, offset: int, length: int | None, chunk_size: int) -> Iterator[bytes]:
        with fh:
            fh.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = fh.read(want)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def _stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key, where=self.url)
        if self._sealer is None:
            return self._info(key, path, _sha256_file(path))
        digest = hashlib.sha256()
        for chunk in self._open(key, 0, None, CHUNK_SIZE):
            digest.update(chunk)
        return self._info(key, path, digest.hexdigest())

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only the folder the prefix points into, not the whole store.
        head, _, _ = prefix.rpartition("/")
        start = self._path(head) if head else self.root
        if not start.is_dir():
            return iter(())
        keys: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX)]
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append((key, path))
        keys.sort(key=lambda item: item[0].encode("utf-8"))
        return self._infos(keys)

    def _infos(self, keys: list[tuple[str, Path]]) -> Iterator[ObjectInfo]:
        for key, path in keys:
            try:
                yield self._info(key, path, None)
            except FileNotFoundError:
                continue  # deleted while we listed

    def _delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return
        self._prune(path.parent)
