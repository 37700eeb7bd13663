"""Seal the objects a local store already holds in clear, in place (``edgeml store seal``).

The store is marked sealed first (:func:`edgeml.store.sealed.enable_sealing`), so whatever is written
from then on is sealed, and readers refuse a clear object rather than serve it. Then each clear
object is sealed on its own: its sealed copy is written to a temporary file beside it, synced, read
back and checked against the clear file's sha256, and renamed over it (modification time kept, which
retention reads). An interrupted run leaves every object whole, clear or sealed, and the next run
finishes the clear ones; a run over a sealed store changes nothing. An object that starts as a
sealed one but does not open with the store's key is refused, naming it: the key is the wrong one,
or the object was altered.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeml.errors import StoreConfigError, StoreError
from edgeml.store.base import TEMP_PREFIX
from edgeml.store.local import LocalStore, _fsync_dir
from edgeml.store.sealed import MAGIC, Sealer, sealer_for

__all__ = ["SealStep", "seal_existing"]

#: the temporary files this module writes; an interrupted run's are removed by the next
_TEMP = f"{TEMP_PREFIX}seal-"
#: looks at an object a writer keeps replacing before giving up
_ATTEMPTS = 5


@dataclass(frozen=True)
class SealStep:
    key: str
    outcome: Literal["sealed", "already"]
    size: int


class _Hashing:
    def __init__(self, path: Path) -> None:
        self.file, self.digest = path.open("rb"), hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.digest.update(data)
        return data


def _plain_sha256(sealer: Sealer, key: str, path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in sealer.open(key, fh, os.fstat(fh.fileno()).st_size, 0, None):
            digest.update(chunk)
    return digest.hexdigest()


def _opens(sealer: Sealer, key: str, path: Path) -> bool:
    """Whether a file starting as a sealed object opens with ``sealer``'s key (its first chunk)."""
    with path.open("rb") as fh:
        try:
            next(iter(sealer.open(key, fh, os.fstat(fh.fileno()).st_size, 0, 1)), b"")
        except StoreError:
            return False
    return True


def _seal_one(sealer: Sealer, key: str, path: Path) -> SealStep | None:
    before = path.stat()
    tmp = path.with_name(f"{_TEMP}{hashlib.sha256(path.name.encode()).hexdigest()[:16]}")  # any name fits
    try:
        source = _Hashing(path)
        with source.file, tmp.open("wb") as out:
            sealer.seal(key, source, out)
            out.flush()
            os.fsync(out.fileno())
        if _plain_sha256(sealer, key, tmp) != source.digest.hexdigest():
            raise StoreError(f"{key}: its sealed copy reads back differently; the clear object is kept")
        now = path.stat()
        if (now.st_ino, now.st_mtime_ns, now.st_size) != (before.st_ino, before.st_mtime_ns, before.st_size):
            tmp.unlink()
            return None  # a writer replaced it meanwhile: look at it again
        os.chmod(tmp, 0o644)
        os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return SealStep(key, "sealed", before.st_size)


def _leftovers(root: Path) -> None:
    """Remove the temporary files an interrupted run left (never another writer's)."""
    for tmp in root.rglob(f"{_TEMP}*"):
        tmp.unlink(missing_ok=True)


def seal_existing(store: LocalStore) -> Iterator[SealStep]:
    """Seal every clear object of ``store`` (already marked sealed) in place, one step per object."""
    sealer = sealer_for(store.root)
    if sealer is None:
        raise StoreConfigError(f"{store.url} is not marked sealed: mark it first (enable_sealing)")
    _leftovers(store.root)
    for info in list(store.list()):
        key = info.key
        path = store.root.joinpath(*key.split("/"))
        for _ in range(_ATTEMPTS):
            try:
                step = _step(sealer, store, key, path)
            except FileNotFoundError:
                break  # deleted since the listing
            if step is not None:
                yield step
                break
        else:
            raise StoreError(f"{key} kept changing while it was sealed: stop the appliance's writers")


def _step(sealer: Sealer, store: LocalStore, key: str, path: Path) -> SealStep | None:
    with path.open("rb") as fh:
        head = fh.read(len(MAGIC))
    if head != MAGIC:
        return _seal_one(sealer, key, path)
    if _opens(sealer, key, path):
        return SealStep(key, "already", sealer.plain_size(path.stat().st_size))
    raise StoreConfigError(
        f"{key} in {store.url} is sealed but does not open with the store's key: the key is "
        "not the one it was sealed with, or the object was altered; nothing more was changed",
        hint="restore the store's key file (its path is in the .sealed.json beside the store folder)",
    )
