"""Object stores: one interface, local-directory, S3/MinIO and in-memory backends.

Open one from a URL with :func:`open_store`:

- ``file:///var/lib/edgeml/store`` -> :class:`LocalStore`
- ``s3://bucket/optional/prefix``  -> :class:`S3Store` (endpoint and credentials from settings)
- ``memory://name``                -> :class:`MemoryStore`
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from edgeml.errors import StoreConfigError
from edgeml.store.base import ObjectInfo, ObjectStore, check_key
from edgeml.store.local import LocalStore
from edgeml.store.memory import MemoryStore

if TYPE_CHECKING:
    from edgeml.settings import S3Settings, Settings

__all__ = [
    "LocalStore",
    "MemoryStore",
    "ObjectInfo",
    "ObjectStore",
    "check_key",
    "open_store",
    "store_from_settings",
]


def open_store(url: str, s3: S3Settings | None = None) -> ObjectStore:
    """Open the store named by ``url``. Opening does no network I/O."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StoreConfigError(f"store URL {url!r}: file URLs must be local (file:///path)")
        return LocalStore(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        from edgeml.settings import S3Settings
        from edgeml.store.s3 import S3Store

        return S3Store(parts.netloc, s3 or S3Settings(), prefix=unquote(parts.path))
    if parts.scheme == "memory":
        return MemoryStore(parts.netloc)
    if not parts.scheme:
        return LocalStore(Path(url))
    raise StoreConfigError(
        f"store URL {url!r} has an unknown scheme {parts.scheme!r}",
        hint="use file:///path, s3://bucket[/prefix] or memory://",
    )


def store_from_settings(settings: Settings) -> ObjectStore:
    """The store the settings point at (default: a folder under the appliance home)."""
    return open_store(settings.store_url, settings.store.s3)
