"""Publishing channel pointers: ``edgeml rollout publish | promote | rollback | status``."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from edgeml.bundle.channels import CHANNELS, ChannelPointer, ManifestRef, Rollback, pointer_key
from edgeml.bundle.keys import Signer, canonical_json
from edgeml.errors import ObjectNotFoundError, UserError
from edgeml.store.base import ObjectStore

__all__ = ["POINTER_TTL_DAYS", "current", "promote", "publish", "rollback", "status"]

POINTER_TTL_DAYS = 30


def current(store: ObjectStore, model: str, channel: str) -> ChannelPointer | None:
    """The channel's pointer as published (the publisher trusts its own store)."""
    try:
        return ChannelPointer.model_validate(json.loads(store.get(pointer_key(model, channel))))
    except ObjectNotFoundError:
        return None


def _manifests(store: ObjectStore, model: str, version: int) -> dict[str, ManifestRef]:
    prefix = f"bundles/{model}/{version}/"
    refs = {}
    for key in store.keys(prefix):
        if key.endswith("/manifest.json"):
            profile = key.removeprefix(prefix).split("/")[0]
            refs[profile] = ManifestRef(key=key, sha256=hashlib.sha256(store.get(key)).hexdigest())
    if not refs:
        raise UserError(
            f"{model} v{version} has no bundle in {store.url}",
            hint=f"`edgeml bundle build models:/{model}/{version} --profile NAME` first",
        )
    return refs


def _write(
    store: ObjectStore,
    signer: Signer,
    previous: ChannelPointer | None,
    *,
    model: str,
    channel: str,
    version: int,
    percent: float,
    groups: list[str],
    ttl_days: int,
    rollback: Rollback | None = None,
    action: str = "publish",
    actor: str | None = None,
    reason: str = "",
) -> ChannelPointer:
    from edgeml.audit import AuditLog, cli_actor

    now = datetime.now(UTC)
    pointer = ChannelPointer(
        model=model,
        channel=channel,
        serial=(previous.serial + 1) if previous else 1,
        version=version,
        manifests=_manifests(store, model, version),
        canary_percent=percent,
        groups=sorted(set(groups)),
        created=now.isoformat(timespec="seconds"),
        expires=(now + timedelta(days=ttl_days)).isoformat(timespec="seconds"),
        key_id=signer.key_id,
        rollback=rollback,
    )
    data = canonical_json(pointer.model_dump(mode="json"))
    key = pointer_key(model, channel)
    # Signature first: a device that sees the new pointer finds its signature already there.
    store.put(key + ".sig", signer.sign(data), content_type="application/json")
    store.put(key, data, content_type="application/json")
    AuditLog(store).append(
        actor or cli_actor(),
        f"rollout.{action}",
        f"{model}/{channel}",
        before=_summary(previous),
        after=_summary(pointer),
        reason=reason,
    )
    return pointer


def _summary(pointer: ChannelPointer | None) -> dict[str, object] | None:
    if pointer is None:
        return None
    return {
        "version": pointer.version,
        "serial": pointer.serial,
        "percent": pointer.canary_percent,
        "groups": pointer.groups,
    }


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise UserError(f"unknown channel {channel!r}; channels are {', '.join(CHANNELS)}")


def publish(
    store: ObjectStore,
    signer: Signer,
    model: str,
    version: int,
    channel: str,
    *,
    percent: float | None = None,
    groups: list[str] | None = None,
    ttl_days: int = POINTER_TTL_DAYS,
    actor: str | None = None,
    reason: str = "",
    action: str = "publish",
) -> ChannelPointer:
    """Point ``channel`` at ``version``; versions only move forward (see :func:`rollback`)."""
    _check_channel(channel)
    if percent is not None and not 0 <= percent <= 100:
        raise UserError(f"--percent {percent} is outside 0..100")
    previous = current(store, model, channel)
    if previous and version < previous.version:
        raise UserError(
            f"{channel} already serves {model} v{previous.version}; versions only move forward",
            hint=f"to go back on purpose: `edgeml rollout rollback {model} --channel {channel} "
            f"--to {version}`",
        )
    stable = current(store, model, "stable")
    if channel == "canary" and stable and version < stable.version:
        raise UserError(f"canary v{version} would be older than stable v{stable.version}")
    default_percent = 10.0 if channel == "canary" else 100.0
    return _write(
        store,
        signer,
        previous,
        model=model,
        channel=channel,
        version=version,
        percent=default_percent if percent is None else percent,
        groups=list(groups or []),
        ttl_days=ttl_days,
        action=action,
        actor=actor,
        reason=reason,
    )


def promote(
    store: ObjectStore,
    signer: Signer,
    model: str,
    *,
    ttl_days: int = POINTER_TTL_DAYS,
    actor: str | None = None,
    reason: str = "",
) -> ChannelPointer:
    """Move the canary's version to stable, for every device."""
    canary = current(store, model, "canary")
    if canary is None:
        raise UserError(
            f"{model} has no canary to promote", hint="`edgeml rollout publish ... --channel canary`"
        )
    return publish(
        store,
        signer,
        model,
        canary.version,
        "stable",
        percent=100.0,
        groups=[],
        ttl_days=ttl_days,
        actor=actor,
        reason=reason,
        action="promote",
    )


def rollback(
    store: ObjectStore,
    signer: Signer,
    model: str,
    channel: str,
    to_version: int,
    *,
    reason: str = "",
    ttl_days: int = POINTER_TTL_DAYS,
    actor: str | None = None,
) -> list[ChannelPointer]:
    """Point ``channel`` back at an older, named version; the pointer says so, signed.

    Rolling stable back also withdraws a canary newer than the target, so no device stays on it.
    """
    _check_channel(channel)
    previous = current(store, model, channel)
    if previous is None:
        raise UserError(f"{model} has no {channel} channel to roll back")
    if to_version >= previous.version:
        raise UserError(
            f"rollback goes to an older version; {channel} serves v{previous.version}",
            hint=f"`edgeml rollout publish {model} {to_version} --channel {channel}` moves forward",
        )
    changed = [
        _write(
            store,
            signer,
            previous,
            model=model,
            channel=channel,
            version=to_version,
            percent=previous.canary_percent,
            groups=previous.groups,
            ttl_days=ttl_days,
            rollback=Rollback(from_version=previous.version, to_version=to_version, reason=reason),
            action="rollback",
            actor=actor,
            reason=reason,
        )
    ]
    canary = current(store, model, "canary")
    if channel == "stable" and canary and canary.version > to_version and canary.canary_percent > 0:
        changed.append(
            _write(
                store,
                signer,
                canary,
                model=model,
                channel="canary",
                version=canary.version,
                percent=0.0,
                groups=canary.groups,
                ttl_days=ttl_days,
                action="withdraw",
                actor=actor,
                reason=f"stable rolled back to v{to_version}",
            )
        )
    return changed


def status(store: ObjectStore, model: str) -> dict[str, ChannelPointer]:
    """Every channel's current pointer."""
    return {c: p for c in CHANNELS if (p := current(store, model, c)) is not None}
