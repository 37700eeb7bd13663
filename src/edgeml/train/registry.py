"""Moving a registered model's aliases, on the audit trail.

An alias is what ``bundle build models:/NAME@champion`` and retraining resolve, so moving one can
change what reaches devices: every move is recorded with who, when, from which version to which,
and why (SOX). The MLflow client must already point at the tracking server.
"""

from __future__ import annotations

from typing import Any

from edgeml.audit import AuditEntry, AuditLog
from edgeml.errors import UserError
from edgeml.store.base import ObjectStore

__all__ = ["move_alias"]


def move_alias(
    client: Any,
    store: ObjectStore,
    name: str,
    alias: str,
    version: str,
    *,
    actor: str,
    reason: str = "",
) -> AuditEntry:
    """Point ``name@alias`` at ``version`` and record the move (before: the version it named, if any).

    A version whose training gates failed (its ``gates`` tag) is moved only with a ``reason``, and
    the move is recorded as ``gate.override``: the one way past a failed gate, and it is on the trail.
    """
    from mlflow.exceptions import MlflowException

    override = client.get_model_version(name, version).tags.get("gates") == "failed"
    if override and not reason.strip():
        raise UserError(
            f"{name} v{version} failed its quality gates; moving {alias} to it overrides them",
            hint="say why with --reason (it goes on the audit trail as gate.override)",
        )
    try:
        before: str | None = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        before = None
    client.set_registered_model_alias(name, alias, version)
    return AuditLog(store).append(
        actor,
        "gate.override" if override else "registry.alias",
        f"{name}@{alias}",
        before=None if before is None else {"version": before},
        after={"version": str(version)},
        reason=reason,
    )
