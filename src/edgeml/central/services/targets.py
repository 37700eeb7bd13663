"""Which bundle a device should run, from the signed channel pointers on the object store;
and the signed manifests, whose reference statistics drift is measured against.

The central node reads the same pointers devices read and checks them the same way
(signature against the key ring, expiry), then applies the agent's own
:func:`~edgeml.bundle.channels.choose`, so its answer and a device's offline fallback agree.
Pointers are reused for ``targets_cache_s`` seconds: a fleet asking at once costs one read
per channel, not one per device.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgeml.bundle.channels import CHANNELS, ChannelPointer, choose, pointer_key, verify_pointer
from edgeml.bundle.keys import KeyRing, open_signed
from edgeml.bundle.manifest import Manifest, manifest_key
from edgeml.errors import BundleRejected, ObjectNotFoundError, StoreError, TargetsUnavailable, UserError
from edgeml.store.base import ObjectStore

__all__ = ["Target", "TargetAnswer", "TargetResolver"]

log = logging.getLogger("edgeml.central.targets")


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str = Field(description="the channel the device follows: stable or canary")
    version: int
    serial: int = Field(description="the pointer's serial: devices refuse older ones")
    manifest_key: str = Field(description="store key of the manifest for the device's profile")
    manifest_sha256: str
    rollback_from: int | None = Field(None, description="set when the pointer is an explicit rollback")
    rollback_reason: str | None = None


class TargetAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str
    model: str
    profile: str
    group: str | None
    target: Target | None = Field(description="none: no channel names a bundle for this device")
    reason: str | None = Field(None, description="why there is no target")


class TargetResolver:
    """Verified channel pointers per model, cached briefly, and the choice per device."""

    def __init__(self, store: ObjectStore | None, keyring: Path | None, cache_s: float) -> None:
        self.store = store
        self.keyring = keyring
        self.cache_s = cache_s
        self._ring = KeyRing.from_dir(keyring) if keyring is not None else None  # fail at start-up
        self._cache: dict[str, tuple[float, dict[str, ChannelPointer]]] = {}
        self._manifests: dict[tuple[str, int, str], Manifest] = {}  # a published version never changes
        self._missing: dict[tuple[str, int, str], float] = {}  # when a manifest was last found missing
        self._lock = threading.Lock()

    def answer(self, device_id: str, model: str, profile: str, group: str | None) -> TargetAnswer:
        """Raises :class:`TargetsUnavailable` when the pointers cannot be read."""
        pointers = self.pointers(model)
        chosen = choose(pointers, device_id, group, profile)
        target = None
        if chosen is not None:
            ref = chosen.manifests[profile]
            target = Target(
                channel=chosen.channel,
                version=chosen.version,
                serial=chosen.serial,
                manifest_key=ref.key,
                manifest_sha256=ref.sha256,
                rollback_from=chosen.rollback.from_version if chosen.rollback else None,
                rollback_reason=chosen.rollback.reason if chosen.rollback else None,
            )
        return TargetAnswer(
            device_id=device_id,
            model=model,
            profile=profile,
            group=group,
            target=target,
            reason=None
            if target
            else f"no valid channel of {model} names a {profile} bundle for this device",
        )

    def pointers(self, model: str) -> dict[str, ChannelPointer]:
        """The model's channels whose pointers verify; a channel that does not is left out."""
        if self.store is None or self.keyring is None:
            raise TargetsUnavailable("central.yaml names no store and keyring, so there are no targets")
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(model)
            if cached is not None and now - cached[0] < self.cache_s:
                return cached[1]
        ring = self._reload_ring()
        pointers: dict[str, ChannelPointer] = {}
        for channel in CHANNELS:
            key = pointer_key(model, channel)
            try:
                data, signature = self.store.get(key), self.store.get(key + ".sig")
            except ObjectNotFoundError:
                continue
            except StoreError as exc:  # unreachable, credentials refused, ...
                raise TargetsUnavailable(f"cannot read {key} from {self.store.url}: {exc}") from exc
            try:
                pointers[channel] = verify_pointer(data, signature, ring, model=model, channel=channel)
            except BundleRejected as exc:  # devices refuse it too: it names no target
                log.warning("channel %s of %s is not usable: %s", channel, model, exc.message)
        with self._lock:
            self._cache[model] = (now, pointers)
        return pointers

    def forget(self, model: str) -> None:
        """Drop the model's cached pointers: the next read goes to the store."""
        with self._lock:
            self._cache.pop(model, None)

    def manifest(self, model: str, version: int, profile: str) -> Manifest | None:
        """The signed manifest of a version, or None when it cannot be read or does not verify.

        Only the signature is checked, not the expiry: an expired bundle's reference statistics
        still describe the telemetry its devices sent.
        """
        key = (model, version, profile)
        if key in self._manifests:
            return self._manifests[key]
        if self.store is None or self._ring is None:
            return None
        missed = self._missing.get(key)
        if missed is not None and time.monotonic() - missed < self.cache_s:
            return None
        where = manifest_key(model, version, profile)
        try:
            data, signature = self.store.get(where), self.store.get(where + ".sig")
            manifest = open_signed(data, signature, self._reload_ring(), Manifest, "manifest")
        except (StoreError, BundleRejected) as exc:
            if missed is None:  # once, not for every batch of that version
                log.warning("no usable manifest %s: %s", where, exc.message)
            with self._lock:
                self._missing[key] = time.monotonic()
            return None
        with self._lock:
            self._manifests[key] = manifest
            self._missing.pop(key, None)
        return manifest

    def retention(self) -> dict[str, int]:
        """Per model, the fewest ``retention_days`` its manifests read so far name (compaction's periods)."""
        with self._lock:
            manifests = list(self._manifests.values())
        periods: dict[str, int] = {}
        for m in manifests:
            if m.retention_days is not None:
                periods[m.model] = min(m.retention_days, periods.get(m.model, m.retention_days))
        return periods

    def cached_manifest(self, model: str, version: int, profile: str) -> Manifest | bool | None:
        """The manifest when it was read before; None: there is none to read; False: ask :meth:`manifest`."""
        key = (model, version, profile)
        found = self._manifests.get(key)
        if found is not None:
            return found
        if self.store is None or self._ring is None:
            return None
        missed = self._missing.get(key)
        return None if missed is not None and time.monotonic() - missed < self.cache_s else False

    def _reload_ring(self) -> KeyRing:
        """The key ring as it is now on disk (rotation adds keys); the last good one if it broke."""
        assert self.keyring is not None
        assert self._ring is not None
        try:
            self._ring = KeyRing.from_dir(self.keyring)
        except UserError as exc:
            log.error("key ring %s cannot be read (%s); using the one read before", self.keyring, exc.message)
        return self._ring
