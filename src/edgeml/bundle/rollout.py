"""Publishing channel pointers: ``edgeml rollout publish | promote | rollback | status | verify``.

The publisher verifies before it builds on state: the stored pointer must verify as a device
would check it (signature, the model and channel of its path, a serial not below the last the
audit trail records) and every manifest a new pointer names must verify at its path. Anything
else is refused with the reason; ``recover=True`` (``--recover``) re-establishes the channel
on purpose, at a serial above any seen, and the audit trail records what was replaced.

Under ``compliance: sox`` no version reaches ``stable`` (``publish --channel stable``, ``promote``
or ``rollback``) without an approval signed by a key other than the publisher's, checked against
the approvers' key ring exactly as a device checks it (:mod:`edgeml.bundle.approval`; a rollback's
approval may have expired, as a device judges it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from edgeml.bundle.approval import fetch_approval
from edgeml.bundle.channels import (
    CHANNELS,
    ChannelPointer,
    ManifestRef,
    Rollback,
    pointer_key,
    verify_pointer,
)
from edgeml.bundle.keys import KeyRing, Signer, canonical_json
from edgeml.errors import BundleRejected, ObjectNotFoundError, UserError
from edgeml.observability import traced
from edgeml.store.base import ObjectStore

__all__ = [
    "POINTER_TTL_DAYS",
    "ChannelState",
    "current",
    "inspect",
    "promote",
    "publish",
    "rollback",
    "status",
]

POINTER_TTL_DAYS = 30
#: audit entries read back (newest first) for a channel's last published serial
AUDIT_LOOKBACK = 1000
#: a serial an unverified pointer claims is believed up to here (beyond: planted nonsense)
_MAX_CLAIMED_SERIAL = 2**53


@dataclass(frozen=True)
class ChannelState:
    """A channel as the publisher finds it: the stored pointer if it verifies, else why not.

    ``floor`` is the highest serial seen for the channel: the verified pointer's, the last one
    the audit trail records, and whatever an unverified stored pointer claims. The next
    publication is ``floor + 1``, so devices never take it for a replay.
    """

    model: str
    channel: str
    pointer: ChannelPointer | None
    problem: BundleRejected | None
    floor: int
    audited: dict[str, Any] | None = None  # the audit trail's last summary of this channel

    def usable(self, recover: bool) -> ChannelPointer | None:
        """The verified pointer to build on; refuses (naming the problem) unless ``recover``."""
        if self.problem is not None and not recover:
            raise UserError(
                f"the {self.channel} pointer of {self.model} does not verify, so nothing was built on it: "
                f"{self.problem.message}",
                hint="find out who wrote it (`edgeml audit verify`, the store's access log); to "
                "re-establish the channel on purpose, repeat with --recover (signed anew at serial "
                f"{self.floor + 1}, audited)",
            )
        return self.pointer


def _audited(store: ObjectStore, model: str, channel: str) -> dict[str, Any] | None:
    """The last rollout summary the audit trail records for the channel (None: none recorded)."""
    from edgeml.audit import AuditLog

    subject = f"{model}/{channel}"
    log = AuditLog(store)
    for count in (16, 128, AUDIT_LOOKBACK):  # the last change is usually recent: read little first
        entries = log.latest(count)
        for entry in entries:
            after = entry.after
            if entry.subject == subject and entry.action.startswith("rollout.") and isinstance(after, dict):
                serial = after.get("serial")
                if isinstance(serial, int) and not isinstance(serial, bool):
                    return after
        if len(entries) < count:
            return None  # read the whole trail
    return None


def _claimed_serial(data: bytes) -> int:
    """The serial an unverified pointer claims, when it is a believable one."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return 0
    serial = doc.get("serial") if isinstance(doc, dict) else None
    if isinstance(serial, int) and not isinstance(serial, bool) and 0 < serial <= _MAX_CLAIMED_SERIAL:
        return serial
    return 0


def inspect(store: ObjectStore, ring: KeyRing, model: str, channel: str) -> ChannelState:
    """Verify the stored pointer as a device would (signature, context, serial against the audit
    trail), except expiry: the next publication replaces an expired pointer."""
    audited = _audited(store, model, channel)
    audited_serial = int(audited["serial"]) if audited else 0
    key = pointer_key(model, channel)
    try:
        data = store.get(key)
    except ObjectNotFoundError:
        if audited is None:
            return ChannelState(model, channel, None, None, 0)
        problem = BundleRejected(
            "missing", f"{key} is missing, but the audit trail records serial {audited_serial} published"
        )
        return ChannelState(model, channel, None, problem, audited_serial, audited)
    floor = max(audited_serial, _claimed_serial(data))
    try:
        signature = store.get(key + ".sig")
        pointer = verify_pointer(
            data,
            signature,
            ring,
            model=model,
            channel=channel,
            last_serial=audited_serial or None,
            check_expiry=False,
        )
    except (ObjectNotFoundError, BundleRejected) as exc:
        problem = (
            exc
            if isinstance(exc, BundleRejected)
            else BundleRejected("missing", f"{key} has no signature ({key}.sig is missing)")
        )
        interrupted = _in_flight(store, ring, model, channel, audited_serial)
        if interrupted is not None:  # our own publication, cut between its writes: carry on from it
            return ChannelState(model, channel, interrupted, None, max(floor, interrupted.serial), audited)
        return ChannelState(model, channel, None, problem, floor, audited)
    return ChannelState(model, channel, pointer, None, max(floor, pointer.serial), audited)


#: suffix of the publication in flight, written whole before the pointer and its signature
_NEXT = ".next"


def _in_flight(
    store: ObjectStore, ring: KeyRing, model: str, channel: str, audited_serial: int
) -> ChannelPointer | None:
    """The publication a publisher wrote in full beside the pointer but died before finishing,
    when it verifies as the pointer itself would (signed, in context, no replay)."""
    key = pointer_key(model, channel) + _NEXT
    try:
        return verify_pointer(
            store.get(key),
            store.get(key + ".sig"),
            ring,
            model=model,
            channel=channel,
            last_serial=audited_serial or None,
            check_expiry=False,
        )
    except (ObjectNotFoundError, BundleRejected):
        return None


def current(
    store: ObjectStore, model: str, channel: str, ring: KeyRing | None = None
) -> ChannelPointer | None:
    """The channel's pointer: verified when ``ring`` is given (refused if it fails), else as parsed."""
    if ring is not None:
        return inspect(store, ring, model, channel).usable(False)
    try:
        return ChannelPointer.model_validate(json.loads(store.get(pointer_key(model, channel))))
    except ObjectNotFoundError:
        return None
    except (ValueError, ValidationError) as exc:
        raise UserError(f"the {channel} pointer of {model} does not parse: {exc}") from exc


def _manifests(store: ObjectStore, ring: KeyRing, model: str, version: int) -> dict[str, ManifestRef]:
    """Each profile's manifest of the version, verified (signature, its path, expiry) before a
    signed pointer vouches for its digest."""
    from edgeml.bundle.verify import Context, verify_manifest

    prefix = f"bundles/{model}/{version}/"
    refs = {}
    for key in store.keys(prefix):
        if not key.endswith("/manifest.json"):
            continue
        profile = key.removeprefix(prefix).split("/")[0]
        data = store.get(key)
        try:
            verify_manifest(data, store.get(key + ".sig"), ring, context=Context.of_key(key))
        except (BundleRejected, ObjectNotFoundError) as exc:
            raise UserError(
                f"{key} does not verify, so no pointer will name it: {exc}",
                hint=f"rebuild it: `edgeml bundle build models:/{model}/{version} --profile {profile}`",
            ) from exc
        refs[profile] = ManifestRef(key=key, sha256=hashlib.sha256(data).hexdigest())
    if not refs:
        raise UserError(
            f"{model} v{version} has no bundle in {store.url}",
            hint=f"`edgeml bundle build models:/{model}/{version} --profile NAME` first",
        )
    return refs


def _write(
    store: ObjectStore,
    signer: Signer,
    state: ChannelState,
    *,
    version: int,
    percent: float,
    groups: list[str],
    ttl_days: int,
    rollback: Rollback | None = None,
    action: str = "publish",
    actor: str | None = None,
    reason: str = "",
    approvers: KeyRing | None = None,
) -> ChannelPointer:
    from edgeml.audit import AuditLog, cli_actor

    model, channel = state.model, state.channel
    now = datetime.now(UTC)
    pointer = ChannelPointer(
        model=model,
        channel=channel,
        serial=state.floor + 1,
        version=version,
        manifests=_manifests(store, signer.ring(), model, version),
        canary_percent=percent,
        groups=sorted(set(groups)),
        created=now.isoformat(timespec="seconds"),
        expires=(now + timedelta(days=ttl_days)).isoformat(timespec="seconds"),
        key_id=signer.key_id,
        rollback=rollback,
    )
    if channel == "stable":
        _require_approval(store, signer, pointer, approvers)
    data = canonical_json(pointer.model_dump(mode="json"))
    signature = signer.sign(data)
    key = pointer_key(model, channel)
    # The publication in flight first, whole and signed: if the process dies between the two
    # writes below, the next publisher finds it there and carries on (see inspect).
    store.put(key + _NEXT + ".sig", signature, content_type="application/json")
    store.put(key + _NEXT, data, content_type="application/json")
    # Signature first: a device that sees the new pointer finds its signature already there.
    store.put(key + ".sig", signature, content_type="application/json")
    store.put(key, data, content_type="application/json")
    for leftover in (key + _NEXT, key + _NEXT + ".sig"):
        store.delete(leftover)
    before: dict[str, object] | None = _summary(state.pointer)
    if state.problem is not None:  # --recover: say what was replaced, and why it was not built on
        before = {"recovered": state.problem.message, "reason": state.problem.reason, "floor": state.floor}
        reason = f"recover: {reason}" if reason else "recover"
    AuditLog(store).append(
        actor or cli_actor(),
        f"rollout.{action}",
        f"{model}/{channel}",
        before=before,
        after=_summary(pointer),
        reason=reason,
    )
    return pointer


def _require_approval(
    store: ObjectStore, signer: Signer, pointer: ChannelPointer, approvers: KeyRing | None
) -> None:
    """Separation of duties: a sox version goes to stable only with a second key's approval of
    exactly the bundles ``pointer`` names; the publisher's keys never count as approvers. A
    rollback's approval was given before and may have expired since (the device's rule too)."""
    sox = any(json.loads(store.get(ref.key)).get("compliance") == "sox" for ref in pointer.manifests.values())
    if not sox:
        return
    model, version = pointer.model, pointer.version
    what = f"{model} v{version} is under compliance: sox and goes to stable only approved"
    if pointer.rollback is None:
        how = (
            "publish it to canary, have a second person approve it (`edgeml rollout approve "
            f"{model} {version}`), then promote"
        )
    else:  # an approval is of the canary's version: the canary goes back first
        how = (
            f"roll the canary back to it (`edgeml rollout rollback {model} --channel canary --to "
            f"{version}`), have a second person approve it (`edgeml rollout approve {model} {version}`), "
            "then roll stable back"
        )
    if approvers is None:
        raise UserError(
            f"{what}, and no approvers' key ring was given to check the approval against",
            hint=f"{how} with --approvers DIR: the approvers' public keys (`edgeml --home ~/approver keys "
            "export-public --out DIR`), the same the devices trust",
        )
    own = signer.ring().keys
    ring = KeyRing({kid: key for kid, key in approvers.keys.items() if kid not in own})
    try:
        fetch_approval(store, ring, pointer, check_expiry=pointer.rollback is None)
    except BundleRejected as exc:
        raise UserError(f"{what}: {exc.message}", hint=f"{how} with --approvers DIR") from exc


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


@traced("bundle.publish", "model", "version", "channel", "action")
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
    recover: bool = False,
    approvers: KeyRing | None = None,
) -> ChannelPointer:
    """Point ``channel`` at ``version``; versions only move forward (see :func:`rollback`).

    ``recover`` re-establishes a channel whose stored pointer does not verify (see the module).
    ``approvers`` are the keys whose approval lets a sox version onto stable.
    """
    _check_channel(channel)
    if percent is not None and not 0 <= percent <= 100:
        raise UserError(f"--percent {percent} is outside 0..100")
    ring = signer.ring()
    state = inspect(store, ring, model, channel)
    previous = state.usable(recover)
    if previous and version < previous.version:
        raise UserError(
            f"{channel} already serves {model} v{previous.version}; versions only move forward",
            hint=f"to go back on purpose: `edgeml rollout rollback {model} --channel {channel} "
            f"--to {version}`",
        )
    if channel == "canary":  # a consistency check: a stable pointer that fails is not built on here
        stable = inspect(store, ring, model, "stable").pointer
        if stable and version < stable.version:
            raise UserError(f"canary v{version} would be older than stable v{stable.version}")
    default_percent = 10.0 if channel == "canary" else 100.0
    return _write(
        store,
        signer,
        state,
        version=version,
        percent=default_percent if percent is None else percent,
        groups=list(groups or []),
        ttl_days=ttl_days,
        action=action,
        actor=actor,
        reason=reason,
        approvers=approvers,
    )


def promote(
    store: ObjectStore,
    signer: Signer,
    model: str,
    *,
    ttl_days: int = POINTER_TTL_DAYS,
    actor: str | None = None,
    reason: str = "",
    recover: bool = False,
    approvers: KeyRing | None = None,
) -> ChannelPointer:
    """Move the canary's version to stable, for every device.

    The canary must verify whatever ``recover`` says: its version is what gets promoted.
    ``recover`` re-establishes the stable pointer when that one does not verify. A sox version
    needs an approval by one of ``approvers`` (see :func:`publish`).
    """
    canary = inspect(store, signer.ring(), model, "canary").usable(False)
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
        recover=recover,
        approvers=approvers,
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
    recover: bool = False,
    approvers: KeyRing | None = None,
) -> list[ChannelPointer]:
    """Point ``channel`` back at an older, named version; the pointer says so, signed.

    A stable rollback to a sox version needs an approval of it by one of ``approvers`` (given
    before, expired or not: see :func:`publish`); a canary rollback needs none.

    Rolling stable back also withdraws a canary newer than the target, so no device stays on it.
    With ``recover``, a channel whose pointer does not verify is rolled back from what the
    audit trail last recorded for it (a canary that does not verify is withdrawn at the target).
    """
    _check_channel(channel)
    ring = signer.ring()
    state = inspect(store, ring, model, channel)
    previous = state.usable(recover)
    recorded = previous.model_dump() if previous else state.audited
    if recorded is None:
        raise UserError(f"{model} has no {channel} channel to roll back")
    from_version = int(recorded["version"])
    if to_version >= from_version:
        raise UserError(
            f"rollback goes to an older version; {channel} serves v{from_version}",
            hint=f"`edgeml rollout publish {model} {to_version} --channel {channel}` moves forward",
        )
    percent = float(recorded.get("canary_percent", recorded.get("percent", 100.0)))
    canary_state = inspect(store, ring, model, "canary") if channel == "stable" else None
    canary = canary_state.usable(recover) if canary_state else None  # refuse before writing anything
    changed = [
        _write(
            store,
            signer,
            state,
            version=to_version,
            percent=percent,
            groups=list(recorded.get("groups", [])),
            ttl_days=ttl_days,
            rollback=Rollback(from_version=from_version, to_version=to_version, reason=reason),
            action="rollback",
            actor=actor,
            reason=reason,
            approvers=approvers,
        )
    ]
    if canary_state is None:
        return changed
    newer = canary is not None and canary.version > to_version and canary.canary_percent > 0
    if canary_state.problem is not None or newer:
        changed.append(
            _write(
                store,
                signer,
                canary_state,
                version=canary.version if canary else to_version,
                percent=0.0,
                groups=canary.groups if canary else [],
                ttl_days=ttl_days,
                action="withdraw",
                actor=actor,
                reason=f"stable rolled back to v{to_version}",
            )
        )
    return changed


def status(store: ObjectStore, model: str, ring: KeyRing | None = None) -> dict[str, ChannelPointer]:
    """Every channel's current pointer (verified, and refused if one fails, when ``ring`` is given)."""
    return {c: p for c in CHANNELS if (p := current(store, model, c, ring)) is not None}
