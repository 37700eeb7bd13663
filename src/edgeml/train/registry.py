"""Moving a registered model's aliases, on the audit trail; the last champion comparison.

``champion`` moves only through a gate (:func:`crown`: the first version to pass its gates, or
one that passed them against the champion on the same evidence) or by hand (``edgeml models
promote``, audited alike). The last comparison is kept on the store with its evidence.

An alias is what ``bundle build models:/NAME@champion`` and retraining resolve, so moving one can
change what reaches devices: every move is recorded with who, when, from which version to which,
and why (SOX). The MLflow client must already point at the tracking server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from edgeml.audit import AuditEntry, AuditLog
from edgeml.errors import UserError
from edgeml.store.base import ObjectStore

__all__ = ["ChampionComparison", "crown", "last_comparison", "move_alias", "record_comparison"]


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


class ChampionComparison(BaseModel):
    """The last time a challenger met the champion: the evidence, the verdict, and what followed."""

    model: str
    challenger: str = Field(description="the version trained")
    champion: str | None = Field(description="the champion it was compared with; none: it was the first")
    metric: str
    mode: str = Field(description="max or min: which way the metric is better")
    margin: float
    tolerance: float
    evidence: list[dict[str, Any]] = Field(
        description="per set of rows (holdout, field labels): rows, and each side's metrics on them"
    )
    gates: list[dict[str, Any]] = Field(description="every gate: name, passed, detail")
    passed: bool
    outcome: str = Field(description="what the automatic path did with the challenger, in words")
    labelled: dict[str, Any] = Field(
        default_factory=dict,
        description="the field's labelled rows training used: snapshot, rows, trained on, weight, held out",
    )
    at: datetime


def _comparison_key(model: str) -> str:
    return f"registry/{model}/champion-comparison.json"


def record_comparison(store: ObjectStore, comparison: ChampionComparison) -> None:
    """Keep ``comparison`` as the model's last (``edgeml central status`` shows it)."""
    store.put(
        _comparison_key(comparison.model),
        comparison.model_dump_json(indent=2).encode(),
        content_type="application/json",
    )


def last_comparison(store: ObjectStore, model: str) -> ChampionComparison | None:
    """The model's last champion comparison; None if it never had one."""
    from edgeml.errors import ObjectNotFoundError

    try:
        return ChampionComparison.model_validate_json(store.get(_comparison_key(model)))
    except ObjectNotFoundError:
        return None


def crown(
    client: Any, store: ObjectStore, name: str, version: str, champion: str | None, *, actor: str, gates: str
) -> AuditEntry:
    """Make ``version``, which passed its gates (against ``champion``, if there was one), the champion."""
    reason = (
        f"first version to pass its gates ({gates})"
        if champion is None
        else f"passed its gates against champion v{champion} on the same evidence ({gates})"
    )
    return move_alias(client, store, name, "champion", version, actor=actor, reason=reason)
