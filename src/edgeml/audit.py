"""The audit trail: who changed what, when, from what to what, and why — tamper-evident.

Each entry is one object, ``audit/<seq>.json`` (sequence numbers from 1, zero-padded), in
canonical JSON, carrying the sha256 of the entry before it; ``audit/head.json`` names the
last sequence number and hash. :meth:`AuditLog.verify` recomputes the chain: an edited
entry breaks its own hash, a deleted one leaves a gap, a removed last entry disagrees with
the head, and a re-ordered one breaks the chain. Rollout changes, key rotations, device
registrations and the central node's automatic actions are written here.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeml.bundle.keys import canonical_json
from edgeml.errors import ObjectExistsError, ObjectNotFoundError, UserError
from edgeml.store.base import ObjectStore

__all__ = [
    "PREFIX",
    "RETENTION_DAYS",
    "AuditEntry",
    "AuditLog",
    "check_delete",
    "cli_actor",
    "export_lines",
    "parse_when",
    "verify_lines",
]

PREFIX = "audit/"
_HEAD = PREFIX + "head.json"
_GENESIS = "0" * 64
#: the audit trail is kept at least this long (SOX: seven years); nothing in edgeml deletes entries
RETENTION_DAYS = 7 * 366
_LOCK = threading.Lock()  # one appender at a time in a process; between processes, see append()


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    at: str
    actor: str = Field(description="who or what: cli:<user>, central:admin, central:auto, ...")
    action: str = Field(description="e.g. rollout.publish, rollout.rollback, keys.rotate, device.register")
    subject: str = Field(description="what it was done to: model/channel, key id, device id")
    before: Any = None
    after: Any = None
    reason: str = ""
    prev_hash: str
    hash: str = ""

    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(exclude={"hash"}))).hexdigest()


#: set for a process acting for someone else (a retraining job the central node started)
ACTOR_ENV = "EDGEML_AUDIT_ACTOR"


def cli_actor() -> str:
    """Who runs this command: ``$EDGEML_AUDIT_ACTOR`` when set, else ``cli:<user>``."""
    if actor := os.environ.get(ACTOR_ENV):
        return actor
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli:unknown"


def _key(seq: int) -> str:
    return f"{PREFIX}{seq:012d}.json"


class AuditLog:
    """The appliance's audit trail on its object store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def _head(self) -> tuple[int, str]:
        try:
            head = json.loads(self.store.get(_HEAD))
        except ObjectNotFoundError:
            return 0, _GENESIS
        return int(head["seq"]), str(head["hash"])

    def append(
        self,
        actor: str,
        action: str,
        subject: str,
        *,
        before: Any = None,
        after: Any = None,
        reason: str = "",
    ) -> AuditEntry:
        """Add an entry after the last one; safe against other processes appending at once.

        Each entry is created only if its sequence number is free (the store's atomic
        ``create``): of two appenders reaching for the same number, one wins and the other
        chains its entry after the winner's.
        """
        with _LOCK:
            seq, prev = self._tail()
            while True:
                entry = AuditEntry(
                    seq=seq + 1,
                    at=datetime.now(UTC).isoformat(timespec="microseconds"),
                    actor=actor,
                    action=action,
                    subject=subject,
                    before=before,
                    after=after,
                    reason=reason,
                    prev_hash=prev,
                )
                entry = entry.model_copy(update={"hash": entry.digest()})
                try:
                    self.store.create(
                        _key(entry.seq), canonical_json(entry.model_dump()), content_type="application/json"
                    )
                    break
                except ObjectExistsError:  # another process appended first: follow its entry
                    seq, prev = self._follow(seq)
            self._advance_head()
            return entry

    def _tail(self, head: tuple[int, str] | None = None) -> tuple[int, str]:
        """The last entry's number and hash: the head's (``head``: as already read), or past it
        when appenders have not moved it yet."""
        seq, prev = head if head is not None else self._head()
        while True:
            try:
                seq, prev = self._follow(seq)
            except ObjectNotFoundError:
                return seq, prev

    def _follow(self, seq: int) -> tuple[int, str]:
        """Number and hash of the entry after ``seq``; ObjectNotFoundError when there is none."""
        after = AuditEntry.model_validate_json(self.store.get(_key(seq + 1)))
        return after.seq, after.hash

    def _advance_head(self) -> None:
        """Point the head at the last entry.

        Two appenders can move it in the wrong order (the later entry's first), so each one
        checks again after its own move: the last to move it sees every entry made before.
        """
        while True:
            head = self._head()
            seq, last = self._tail(head)
            if head[0] >= seq:
                return
            self.store.put(_HEAD, canonical_json({"seq": seq, "hash": last}), content_type="application/json")

    def entries(self) -> list[AuditEntry]:
        """Every entry that parses, in sequence order."""
        out = []
        for key in self.store.keys(PREFIX):
            if key == _HEAD:
                continue
            try:
                out.append(AuditEntry.model_validate_json(self.store.get(key)))
            except ValidationError:
                continue  # verify() reports it
        return sorted(out, key=lambda e: e.seq)

    def latest(self, count: int) -> list[AuditEntry]:
        """The last ``count`` entries that parse, newest first (read from the end back)."""
        seq, _ = self._tail()
        out = []
        for n in range(seq, max(seq - count, 0), -1):
            try:
                out.append(AuditEntry.model_validate_json(self.store.get(_key(n))))
            except (ObjectNotFoundError, ValidationError):
                continue  # verify() reports it
        return out

    def verify(self) -> list[str]:
        """Every problem with the chain (none: intact)."""
        problems = []
        keys = [k for k in self.store.keys(PREFIX) if k != _HEAD]
        prev, expected = _GENESIS, 1
        for key in keys:
            try:
                entry = AuditEntry.model_validate_json(self.store.get(key))
            except ValidationError:
                problems.append(f"{key} is not an audit entry")
                continue
            if key != _key(entry.seq):
                problems.append(f"{key} holds entry {entry.seq}: moved or renamed")
            if entry.seq != expected:
                problems.append(f"entries {expected}..{entry.seq - 1} are missing (deleted)")
            if entry.hash != entry.digest():
                problems.append(f"entry {entry.seq} was edited: its hash does not match its content")
            if entry.prev_hash != prev:
                problems.append(
                    f"entry {entry.seq} does not follow entry {entry.seq - 1}: the chain is broken"
                )
            prev, expected = entry.hash, entry.seq + 1
        seq, head_hash = self._head()
        if (seq, head_hash) != (expected - 1, prev if expected > 1 else _GENESIS):
            problems.append(
                f"the head names entry {seq}, the log ends at entry {expected - 1}: entries were removed"
            )
        return problems


def export_lines(entries: list[AuditEntry], since: datetime | None, until: datetime | None) -> list[bytes]:
    """The entries with ``since <= at < until``, one canonical JSON line each, hashes included.

    An auditor checks the lines offline with :func:`verify_lines` (or the ten lines of Python in
    docs/compliance.md): each entry's hash is the sha256 of its canonical JSON without ``hash``,
    and each ``prev_hash`` is the line before's ``hash``; the first line's ``prev_hash`` links to
    the last line of the export before it.
    """
    out = []
    for entry in entries:
        at = datetime.fromisoformat(entry.at)
        if (since is None or at >= since) and (until is None or at < until):
            out.append(canonical_json(entry.model_dump()))
    return out


def verify_lines(lines: list[bytes]) -> list[str]:
    """Every problem with exported lines (none: each entry intact and chained to the one before)."""
    problems = []
    prev: AuditEntry | None = None
    for n, line in enumerate(lines, 1):
        try:
            entry = AuditEntry.model_validate_json(line)
        except ValidationError:
            problems.append(f"line {n} is not an audit entry")
            prev = None
            continue
        if entry.hash != entry.digest():
            problems.append(f"line {n} (entry {entry.seq}) was edited: its hash does not match its content")
        if prev is not None and (entry.seq != prev.seq + 1 or entry.prev_hash != prev.hash):
            problems.append(
                f"line {n} (entry {entry.seq}) does not follow entry {prev.seq}: the chain is broken"
            )
        prev = entry
    return problems


def parse_when(option: str, text: str | None) -> datetime | None:
    """An ISO date or time given as ``option``; without a zone, UTC."""
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"{option} {text!r} is not a date or time", hint="e.g. 2026-01-31 or 2026-01-31T12:00:00+00:00"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def check_delete(store: ObjectStore, key: str, now: datetime | None = None) -> None:
    """Refuse to delete an audit object still inside :data:`RETENTION_DAYS` (the head: always)."""
    if not key.startswith(PREFIX):
        return
    try:
        entry = AuditEntry.model_validate_json(store.get(key)) if key != _HEAD else None
    except ObjectNotFoundError:
        return
    except ValidationError:
        entry = None  # unreadable: evidence for verify(), kept like any entry
    if entry is not None:
        age = (now or datetime.now(UTC)) - datetime.fromisoformat(entry.at)
        if age.days >= RETENTION_DAYS:
            return
    raise UserError(
        f"{key} is on the audit trail, kept {RETENTION_DAYS} days (SOX); edgeml deletes no entry before",
        hint="`edgeml audit export` hands auditors a copy; the trail itself stays",
    )
