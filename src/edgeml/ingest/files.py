"""Resolve a file source's path or glob to concrete files and a filesystem to read them.

Three kinds of location, one answer (paths + a pyarrow filesystem):

- a local path or glob, relative to the spec file's folder;
- ``store://prefix/*.csv`` on the appliance's object store (local folder or S3);
- ``s3://bucket/prefix/*.csv`` on the configured S3/MinIO endpoint.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from edgeml.errors import UserError
from edgeml.settings import S3Settings, Settings
from edgeml.spec.models import FileSource, Spec
from edgeml.store import LocalStore, store_from_settings
from edgeml.store.s3 import S3Store, parse_endpoint

__all__ = ["ResolvedFiles", "glob_regex", "resolve_files"]

_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class ResolvedFiles:
    paths: list[str]
    filesystem: pafs.FileSystem | None  # None: the local filesystem
    total_bytes: int


def _s3_filesystem(s3: S3Settings) -> pafs.S3FileSystem:
    endpoint, secure = parse_endpoint(s3.endpoint, s3.secure)
    return pafs.S3FileSystem(
        access_key=s3.access_key.get_secret_value() if s3.access_key else None,
        secret_key=s3.secret_key.get_secret_value() if s3.secret_key else None,
        endpoint_override=endpoint,
        scheme="https" if secure else "http",
        region=s3.region,
        connect_timeout=s3.timeout_s,
        request_timeout=s3.timeout_s,
    )


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as local paths mean it: ``*`` and ``?`` stay within a folder, ``**/`` spans folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append(
                "[^" + re.escape(body[1:]) + "]" if body.startswith("!") else "[" + re.escape(body) + "]"
            )
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _split_glob(pattern: str) -> tuple[str, str]:
    """('lake/pumps/', '*.csv') — the literal prefix before the first wildcard, and the rest."""
    match = _GLOB.search(pattern)
    if match is None:
        return pattern, ""
    cut = pattern.rfind("/", 0, match.start()) + 1
    return pattern[:cut], pattern[cut:]


def _from_store(store: LocalStore | S3Store, pattern: str, what: str) -> ResolvedFiles:
    prefix, rest = _split_glob(pattern)
    matcher = glob_regex(pattern)
    infos = [i for i in store.list(prefix) if not rest or matcher.fullmatch(i.key)]
    if not rest:
        infos = [i for i in infos if i.key == pattern]
    if not infos:
        raise UserError(f"{what}: no files match {pattern!r} in {store.url}")
    total = sum(i.size for i in infos)
    if isinstance(store, LocalStore) and store.sealed:  # ciphertext on disk: read through the key
        from edgeml.store.arrowfs import sealed_filesystem

        return ResolvedFiles([i.key for i in infos], sealed_filesystem(store), total)
    if isinstance(store, LocalStore):
        return ResolvedFiles([str(store.root / i.key) for i in infos], None, total)
    paths = [f"{store.bucket}/{store.prefix}{i.key}" for i in infos]
    return ResolvedFiles(paths, _s3_filesystem(store.settings), total)


def resolve_files(source: FileSource, spec: Spec, settings: Settings) -> ResolvedFiles:
    """Concrete files for ``source``; a user error when nothing matches."""
    what = f"source {source.name!r}"
    path = source.path
    if path.startswith("store://"):
        store = store_from_settings(settings)
        assert isinstance(store, LocalStore | S3Store), "file sources need a local or S3 store"
        return _from_store(store, path.removeprefix("store://").lstrip("/"), what)
    if path.startswith("s3://"):
        bucket, _, key_pattern = path.removeprefix("s3://").partition("/")
        return _from_store(S3Store(bucket, settings.store.s3), key_pattern, what)
    if "://" in path:
        raise UserError(f"{what}: unsupported location {path!r}; use a path, store:// or s3://")
    pattern = spec.resolve_path(path)
    files = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        raise UserError(
            f"{what}: no files match {pattern}",
            hint="check the path in the spec; relative paths are relative to the spec file's folder",
        )
    return ResolvedFiles(files, None, sum(Path(p).stat().st_size for p in files))
