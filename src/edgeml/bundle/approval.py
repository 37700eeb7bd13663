"""Separation of duties (SOX): a version reaches ``stable`` only with a second person's signed approval.

The publisher signs the canary pointer with the appliance's key; an approver signs an
:class:`Approval` with a key of their own (``edgeml --home ~/approver keys init``, its public half
added to the devices' key ring). The approval names the model, the version and the sha256 of every
profile's manifest as the canary pointer named them — so it approves exactly those bundles — and
the key that published them, which may not be the key that approves. It lives at
``approvals/<model>/<version>.json`` with a detached signature at ``.sig``.

:func:`verify_approval` is what a device runs before it follows a ``stable`` pointer of a model whose
manifest says ``compliance: sox`` (the agent imports this module: it needs nothing heavy).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeml.audit import AuditLog
from edgeml.bundle.channels import ChannelPointer, pointer_key
from edgeml.bundle.keys import KeyRing, Signer, canonical_json, open_signed, timestamp
from edgeml.errors import BundleRejected, ObjectNotFoundError, UserError
from edgeml.store.base import ObjectStore

__all__ = ["APPROVAL_DAYS", "Approval", "approval_key", "approve", "fetch_approval", "verify_approval"]

#: an approval not acted on within this many days must be given again
APPROVAL_DAYS = 30


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    model: str
    version: int = Field(ge=1)
    manifests: dict[str, str] = Field(description="profile -> sha256 of the manifest approved")
    publisher_key_id: str = Field(description="the key that signed the canary pointer")
    key_id: str = Field(description="the approver's key: never the publisher's")
    approved_by: str
    reason: str = ""
    created: str
    expires: str


def approval_key(model: str, version: int) -> str:
    return f"approvals/{model}/{version}.json"


def _canary(store: ObjectStore, model: str) -> ChannelPointer | None:
    """The canary pointer as stored (what it names is checked by the device against the approval)."""
    try:
        return ChannelPointer.model_validate_json(store.get(pointer_key(model, "canary")))
    except ObjectNotFoundError:
        return None
    except ValidationError as exc:
        raise UserError(f"the canary pointer of {model} does not parse: {exc}") from exc


def approve(
    store: ObjectStore,
    approver: Signer,
    model: str,
    version: int,
    *,
    actor: str,
    reason: str = "",
    days: int = APPROVAL_DAYS,
) -> Approval:
    """Sign an approval of the canary's ``version`` with ``approver``'s key; refused for the key
    that published the canary, and for a version the canary does not run."""
    canary = _canary(store, model)
    if canary is None or canary.version != version:
        running = f"runs v{canary.version}" if canary else "has no canary"
        raise UserError(
            f"cannot approve {model} v{version}: its canary channel {running}",
            hint="an approval is for the version on canary: `edgeml rollout status MODEL`",
        )
    if approver.key_id == canary.key_id:
        raise UserError(
            f"separation of duties: key {approver.key_id} published {model} v{version}'s canary "
            "and cannot approve it",
            hint="approve with your own key: `edgeml --home ~/approver keys init`, then --keys ~/approver",
        )
    now = datetime.now(UTC)
    approval = Approval(
        model=model,
        version=version,
        manifests={profile: ref.sha256 for profile, ref in canary.manifests.items()},
        publisher_key_id=canary.key_id,
        key_id=approver.key_id,
        approved_by=actor,
        reason=reason,
        created=now.isoformat(timespec="seconds"),
        expires=(now + timedelta(days=days)).isoformat(timespec="seconds"),
    )
    data = canonical_json(approval.model_dump(mode="json"))
    key = approval_key(model, version)
    store.put(key + ".sig", approver.sign(data), content_type="application/json")
    store.put(key, data, content_type="application/json")
    AuditLog(store).append(
        actor,
        "rollout.approve",
        f"{model}/stable",
        after={"version": version, "approver_key": approver.key_id, "publisher_key": canary.key_id},
        reason=reason,
    )
    return approval


def verify_approval(
    data: bytes,
    signature: bytes,
    ring: KeyRing,
    pointer: ChannelPointer,
    *,
    now: datetime | None = None,
    check_expiry: bool = True,
) -> Approval:
    """The approval of ``pointer``'s version, once it is signed by a trusted key other than the
    pointer's, unexpired at ``now`` (unless not ``check_expiry``), and names exactly the manifests
    the pointer names; else BundleRejected."""
    try:
        approval = open_signed(data, signature, ring, Approval, "approval")
    except BundleRejected as exc:
        raise BundleRejected("unapproved", f"{pointer.model} v{pointer.version}: {exc.message}") from exc
    where = f"{pointer.model} v{pointer.version} on {pointer.channel}"
    if (approval.model, approval.version) != (pointer.model, pointer.version):
        raise BundleRejected(
            "unapproved", f"{where}: the approval is for {approval.model} v{approval.version}"
        )
    if approval.key_id in (pointer.key_id, approval.publisher_key_id):
        raise BundleRejected("unapproved", f"{where}: approved by the key that published it")
    named = {profile: ref.sha256 for profile, ref in pointer.manifests.items()}
    if any(approval.manifests.get(profile) != sha for profile, sha in named.items()):
        raise BundleRejected("unapproved", f"{where}: the pointer names bundles the approval does not")
    if check_expiry and timestamp(approval.expires, "approval expires") <= (now or datetime.now(UTC)):
        raise BundleRejected("unapproved", f"{where}: the approval expired at {approval.expires}")
    return approval


def fetch_approval(
    store: ObjectStore,
    ring: KeyRing,
    pointer: ChannelPointer,
    *,
    now: datetime | None = None,
    check_expiry: bool = True,
) -> Approval:
    """Read and verify (see :func:`verify_approval`) the approval of ``pointer`` from ``store``; a
    missing one is BundleRejected."""
    key = approval_key(pointer.model, pointer.version)
    try:
        data, signature = store.get(key), store.get(key + ".sig")
    except ObjectNotFoundError:
        raise BundleRejected(
            "unapproved",
            f"{pointer.model} v{pointer.version} on {pointer.channel} has no approval ({key})",
            hint=f"a second person approves it: `edgeml rollout approve {pointer.model} {pointer.version}`",
        ) from None
    return verify_approval(data, signature, ring, pointer, now=now, check_expiry=check_expiry)
