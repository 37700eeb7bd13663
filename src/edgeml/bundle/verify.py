"""Bundle verification: the checks a device runs before a model may touch its runtime.

In order: the manifest's signature against the key ring (before parsing anything), its
expiry, version monotonicity against the device's last version (an older version only
when a signed channel pointer carries an explicit rollback to it), every listed file's
name and type, then each blob streamed into a staging folder with its size and sha256
checked on the way (reading stops one byte past the declared size), and finally the ONNX
external-data references. Any failure raises :class:`~edgeml.errors.BundleRejected` and
removes the staging folder, so nothing from a rejected bundle is left behind.

Imports nothing heavy: the edge agent uses this module as is.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edgeml.bundle.keys import KeyRing, check_context, open_signed, timestamp
from edgeml.bundle.manifest import MODEL_FILES, FileEntry, Manifest, blob_key
from edgeml.bundle.onnx_refs import OnnxFormatError, external_locations
from edgeml.errors import BundleRejected, ObjectNotFoundError, StoreError
from edgeml.store.base import ObjectStore

__all__ = ["Context", "StagedBundle", "fetch_bundle", "verify_folder", "verify_manifest"]

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: clocks on devices drift; a manifest created this far in the future is still accepted
CLOCK_SKEW = timedelta(minutes=5)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _check_files(manifest: Manifest) -> None:
    allowed = MODEL_FILES[manifest.runtime]
    seen: set[str] = set()
    for entry in manifest.files:
        name = entry.path
        if not _SAFE_NAME.fullmatch(name) or ".." in name:
            raise BundleRejected(
                "unsafe-path", f"file path {name!r} is not a plain file name inside the bundle"
            )
        if name in seen:
            raise BundleRejected("malformed", f"file {name!r} is listed twice")
        seen.add(name)
        suffix = Path(name).suffix.lower()
        if suffix not in allowed:
            raise BundleRejected(
                "file-type",
                f"file {name!r} has type {suffix or '(none)'}; a {manifest.runtime} bundle carries only "
                f"{', '.join(sorted(allowed))}",
            )
    wanted = ".onnx" if manifest.runtime == "onnxruntime" else ".xml"
    if not any(f.path.endswith(wanted) for f in manifest.files):
        raise BundleRejected("malformed", f"the manifest lists no {wanted} model file")


def verify_manifest(
    data: bytes,
    signature: bytes,
    ring: KeyRing,
    *,
    now: datetime | None = None,
    min_version: int | None = None,
    rollback_to: int | None = None,
    context: Context | None = None,
) -> Manifest:
    """The manifest, once signature, context, expiry, version and file list are good.

    ``context`` is what the manifest must be (model, version, profile), as the path it was
    read from, the pointer that named it and the device say. ``min_version`` is the
    device's last accepted version: an older manifest is a replay unless ``rollback_to``
    (from a verified channel pointer) names exactly its version.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleRejected("malformed", f"manifest is {len(data):,} bytes; at most {MAX_MANIFEST_BYTES:,}")
    manifest = open_signed(data, signature, ring, Manifest, "manifest")
    if context is not None:
        context.check(manifest)
    now = now or datetime.now(UTC)
    if timestamp(manifest.expires, "manifest expires") <= now:
        raise BundleRejected(
            "expired",
            f"{manifest.model} v{manifest.version} expired at {manifest.expires}",
            hint="publish a fresh bundle (`edgeml bundle build`)",
        )
    if timestamp(manifest.created, "manifest created") > now + CLOCK_SKEW:
        raise BundleRejected(
            "not-yet-valid", f"manifest created {manifest.created}, in the future; check the clock"
        )
    if min_version is not None and manifest.version < min_version and manifest.version != rollback_to:
        raise BundleRejected(
            "replay",
            f"{manifest.model} v{manifest.version} is older than v{min_version}, the last this device "
            "accepted, and no signed rollback names it",
        )
    _check_files(manifest)
    return manifest


@dataclass(frozen=True)
class Context:
    """What a manifest must be where it is used; ``None`` fields are not checked.

    ``source`` says who expects it, for the message (``bundles/pump/3/x86/manifest.json``,
    ``the stable pointer``, ``this device``).
    """

    model: str | None = None
    version: int | None = None
    profile: str | None = None
    source: str = "its context"

    @classmethod
    def of_key(cls, key: str) -> Context | None:
        """The context a canonical manifest key names (``bundles/M/V/P/manifest.json``), if it is one."""
        match = _MANIFEST_KEY.fullmatch(key)
        if match is None:
            return None
        return cls(match["model"], int(match["version"]), match["profile"], source=f"the path {key}")

    def check(self, manifest: Manifest) -> None:
        check_context(
            "manifest",
            {
                "model": (manifest.model, self.model, self.source),
                "version": (manifest.version, self.version, self.source),
                "profile": (manifest.profile, self.profile, self.source),
            },
        )


_MANIFEST_KEY = re.compile(
    r"bundles/(?P<model>[^/]+)/(?P<version>[0-9]{1,10})/(?P<profile>[^/]+)/manifest\.json"
)


@dataclass(frozen=True)
class StagedBundle:
    """A verified bundle in its staging folder, ready for the atomic swap."""

    manifest: Manifest
    path: Path
    downloaded_bytes: int
    reused_bytes: int


def _stream_blob(store: ObjectStore, entry: FileEntry, part: Path) -> int:
    """Append the blob to ``part`` (resuming what is there); bytes downloaded. Checks size and digest."""
    have = part.stat().st_size if part.exists() else 0
    if have > entry.size:
        part.unlink()
        have = 0
    digest = hashlib.sha256()
    if have:
        with part.open("rb") as done:
            for chunk in iter(lambda: done.read(1024 * 1024), b""):
                digest.update(chunk)
    got = have
    # One byte past the declared size is enough to know the stored object is longer.
    chunks = store.stream(blob_key(entry.sha256), offset=have, length=entry.size - have + 1)
    with closing(chunks), part.open("ab") as out:
        for chunk in chunks:
            got += len(chunk)
            if got > entry.size:
                part.unlink()
                raise BundleRejected(
                    "too-long",
                    f"{entry.path}: the stored blob is longer than the {entry.size:,} bytes declared",
                )
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if got < entry.size:
        part.unlink()
        raise BundleRejected("truncated", f"{entry.path}: got {got:,} of the {entry.size:,} bytes declared")
    if digest.hexdigest() != entry.sha256:
        part.unlink()
        raise BundleRejected(
            "digest-mismatch",
            f"{entry.path}: content has sha256 {digest.hexdigest()}, the manifest says {entry.sha256}",
        )
    return got - have


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(store: ObjectStore, entry: FileEntry, dest: Path, cache: Path, attempts: int) -> int:
    """Place one verified file at ``dest``; bytes downloaded (0 when the cache had it)."""
    cached = cache / entry.sha256
    if cached.is_file() and cached.stat().st_size == entry.size and _hash_file(cached) == entry.sha256:
        _place(cached, dest)
        return 0
    part = cache / f"{entry.sha256}.part"
    downloaded = 0
    for attempt in range(attempts):
        try:
            downloaded += _stream_blob(store, entry, part)
            break
        except ObjectNotFoundError as exc:
            raise BundleRejected(
                "missing-blob", f"{entry.path}: blob {entry.sha256} is not in the store"
            ) from exc
        except (StoreError, OSError) as exc:  # transient: keep the partial file, resume from it
            if attempt == attempts - 1:
                raise BundleRejected("download-failed", f"{entry.path}: {exc}") from exc
            time.sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random()))  # noqa: S311 - jitter
    os.replace(part, cached)
    _place(cached, dest)
    return downloaded


def _place(cached: Path, dest: Path) -> None:
    try:
        os.link(cached, dest)  # blobs are immutable: a hard link costs nothing
    except OSError:
        shutil.copyfile(cached, dest)


def _check_contents(stage: Path, manifest: Manifest) -> None:
    names = {f.path for f in manifest.files}
    for entry in manifest.files:
        path = stage / entry.path
        with path.open("rb") as f:
            head = f.read(2)
        if head in _PICKLE_MAGIC:
            raise BundleRejected("file-type", f"{entry.path} is a Python pickle; bundles never carry one")
        if path.suffix == ".onnx":
            try:
                locations = external_locations(path.read_bytes())
            except OnnxFormatError as exc:
                raise BundleRejected("malformed", f"{entry.path} is not a valid ONNX model: {exc}") from exc
            for location in locations:
                if location not in names:
                    raise BundleRejected(
                        "unsafe-path",
                        f"{entry.path} reads external data from {location!r}, which is not a file of "
                        "this bundle",
                    )


def fetch_bundle(
    store: ObjectStore,
    manifest_key: str,
    ring: KeyRing,
    staging: Path,
    *,
    cache: Path | None = None,
    now: datetime | None = None,
    min_version: int | None = None,
    rollback_to: int | None = None,
    context: Context | None = None,
    sha256: str | None = None,
    attempts: int = 4,
) -> StagedBundle:
    """Verify a published bundle and stage its files under ``staging`` (same filesystem as the target).

    The manifest must be the one its key names (model, version, profile) and what
    ``context`` asks for; ``sha256`` (from a channel pointer) must be the digest of the very
    bytes read here, not of an earlier read. Blobs already in ``cache`` (a content-addressed
    folder) are linked, not downloaded; an interrupted download resumes from its partial
    file. On any failure the stage is removed.
    """
    at_key = Context.of_key(manifest_key)
    if at_key is None:
        raise BundleRejected(
            "context-mismatch",
            f"{manifest_key!r} is not where manifests are published "
            "(bundles/MODEL/VERSION/PROFILE/manifest.json)",
        )
    try:
        data = b"".join(store.stream(manifest_key, length=MAX_MANIFEST_BYTES + 1))
        signature = store.get(manifest_key + ".sig")
    except ObjectNotFoundError as exc:
        raise BundleRejected("missing", f"no bundle at {manifest_key} (or its signature)") from exc
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise BundleRejected(
            "digest-mismatch", f"{manifest_key} is not the manifest the channel pointer signed"
        )
    manifest = verify_manifest(
        data, signature, ring, now=now, min_version=min_version, rollback_to=rollback_to, context=context
    )
    at_key.check(manifest)
    staging.mkdir(parents=True, exist_ok=True)
    cache = cache or staging / ".blobs"
    cache.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".stage-{manifest.model}-{manifest.version}-", dir=staging))
    try:
        downloaded = reused = 0
        for entry in manifest.files:
            got = _fetch(store, entry, stage / entry.path, cache, attempts)
            downloaded += got
            reused += entry.size if got == 0 else 0
        _check_contents(stage, manifest)
        (stage / "manifest.json").write_bytes(data)
        (stage / "manifest.json.sig").write_bytes(signature)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return StagedBundle(manifest, stage, downloaded, reused)


def verify_folder(
    folder: Path, ring: KeyRing, *, now: datetime | None = None, context: Context | None = None
) -> Manifest:
    """Re-check a staged or installed bundle folder: signature, context, expiry, and every file's bytes."""
    try:
        data = (folder / "manifest.json").read_bytes()
        signature = (folder / "manifest.json.sig").read_bytes()
    except FileNotFoundError as exc:
        raise BundleRejected("missing", f"{folder} holds no manifest.json with its .sig") from exc
    manifest = verify_manifest(data, signature, ring, now=now, context=context)
    listed = {f.path for f in manifest.files} | {"manifest.json", "manifest.json.sig"}
    extra = sorted(p.name for p in folder.iterdir() if p.name not in listed)
    if extra:
        raise BundleRejected(
            "file-type", f"{folder} holds files the manifest does not list: {', '.join(extra)}"
        )
    for entry in manifest.files:
        path = folder / entry.path
        if not path.is_file():
            raise BundleRejected("missing", f"{entry.path} is missing from {folder}")
        if path.stat().st_size != entry.size:
            raise BundleRejected(
                "truncated", f"{entry.path} has {path.stat().st_size:,} bytes, not {entry.size:,}"
            )
        if _hash_file(path) != entry.sha256:
            raise BundleRejected(
                "digest-mismatch", f"{entry.path} does not have the sha256 the manifest lists"
            )
    _check_contents(folder, manifest)
    return manifest
