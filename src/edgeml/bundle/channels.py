"""Channel pointers: which bundle version a channel's devices should run.

A pointer is a signed JSON document at ``channels/<model>/<channel>.json`` naming the
version, each profile's manifest (key and sha256), the canary percent and device groups,
an expiry and a ``serial`` that grows with every publication. Devices remember the last
serial per channel, so an old pointer replayed is refused; versions only move forward
unless the pointer carries an explicit, signed rollback.

Reading and choosing live here (the agent uses them); publishing is in
:mod:`edgeml.bundle.rollout`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeml.bundle.keys import KeyRing, check_context, open_signed, timestamp
from edgeml.bundle.manifest import manifest_key
from edgeml.errors import BundleRejected
from edgeml.spec.types import Slug

__all__ = [
    "CHANNELS",
    "ChannelPointer",
    "ManifestRef",
    "Rollback",
    "choose",
    "in_cohort",
    "pointer_key",
    "verify_pointer",
]

CHANNELS = ("stable", "canary")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestRef(_Model):
    key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Rollback(_Model):
    from_version: int
    to_version: int
    reason: str = ""


class ChannelPointer(_Model):
    format: Literal[1] = 1
    model: Slug
    channel: Slug
    serial: int = Field(ge=1, description="grows by one with each publication on this channel")
    version: int = Field(ge=1, le=2**31 - 1)
    manifests: dict[Slug, ManifestRef] = Field(description="profile -> its manifest")
    canary_percent: float = Field(100.0, ge=0, le=100, description="share of matching devices that follow")
    groups: list[str] = Field(default_factory=list, description="device groups that follow; empty: all")
    created: str
    expires: str
    key_id: str
    rollback: Rollback | None = None


def pointer_key(model: str, channel: str) -> str:
    return f"channels/{model}/{channel}.json"


def verify_pointer(
    data: bytes,
    signature: bytes,
    ring: KeyRing,
    *,
    now: datetime | None = None,
    last_serial: int | None = None,
    model: str | None = None,
    channel: str | None = None,
    check_expiry: bool = True,
) -> ChannelPointer:
    """The pointer, once its signature, context, expiry and serial are good.

    ``model`` and ``channel`` are the context: the path it was read from and what the reader
    serves. Context comes before the serial, so another channel's pointer is a mismatch
    (and never moves this channel's replay floor). ``last_serial`` is the last one seen
    here; ``check_expiry=False`` is for the publisher, whose next pointer replaces an
    expired one.
    """
    pointer = open_signed(data, signature, ring, ChannelPointer, "channel pointer")
    where = f"channels/{model}/{channel}.json" if model and channel else "the reader"
    check_context(
        "channel pointer",
        {"model": (pointer.model, model, where), "channel": (pointer.channel, channel, where)},
    )
    for profile, ref in pointer.manifests.items():
        check_context(
            "channel pointer",
            {
                f"manifests.{profile}.key": (
                    ref.key,
                    manifest_key(pointer.model, pointer.version, profile),
                    f"its own model, version and profile {profile}",
                )
            },
        )
    if pointer.rollback is not None:
        check_context(
            "channel pointer",
            {"rollback.to_version": (pointer.rollback.to_version, pointer.version, "its version")},
        )
    if check_expiry and timestamp(pointer.expires, "channel pointer expires") <= (now or datetime.now(UTC)):
        raise BundleRejected(
            "expired",
            f"channel {pointer.channel} of {pointer.model} expired at {pointer.expires}",
            hint="re-publish it (`edgeml rollout publish`)",
        )
    if last_serial is not None and pointer.serial < last_serial:
        raise BundleRejected(
            "replay",
            f"channel {pointer.channel} of {pointer.model}: serial {pointer.serial} is older than "
            f"{last_serial}, the last seen here",
        )
    return pointer


def _bucket(model: str, device_id: str) -> float:
    """A stable place in [0, 100) per device and model: raising the percent only adds devices."""
    digest = hashlib.sha256(f"{model}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def in_cohort(pointer: ChannelPointer, device_id: str, group: str | None) -> bool:
    """Whether a device follows this pointer: its group matches and it falls in the percent."""
    if pointer.groups and group not in pointer.groups:
        return False
    return _bucket(pointer.model, device_id) < pointer.canary_percent


def choose(
    pointers: dict[str, ChannelPointer], device_id: str, group: str | None, profile: str
) -> ChannelPointer | None:
    """The pointer a device follows: the canary when it is in its cohort, else stable."""
    canary, stable = pointers.get("canary"), pointers.get("stable")
    if canary is not None and profile in canary.manifests and in_cohort(canary, device_id, group):
        return canary
    if stable is not None and profile in stable.manifests and in_cohort(stable, device_id, group):
        return stable
    return None
