"""``/v1/rollouts``: the quality gate's view of each canary, and what it did about them."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import AwareDatetime, BaseModel, Field

from edgeml.central.gate import GateDecision
from edgeml.central.routes.deps import FleetReaderDep, StateDep, errors

__all__ = ["CanaryView", "RolloutsView", "router"]

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])


class SideView(BaseModel):
    rows: int = Field(description="telemetry rows on the canary's groups")
    labels: int = Field(description="feedback labels with a known prediction")
    estimated_accuracy: float | None = Field(description="from the calibrated sums, without labels")
    realized_accuracy: float | None = Field(description="from the labels")


class CanaryView(BaseModel):
    model: str
    canary_version: int
    champion_version: int
    groups: list[str] = Field(description="device groups the canary is on; empty: all")
    started: AwareDatetime = Field(description="when the canary pointer was published")
    soaked_s: float
    soak_s: float = Field(description="the soak time a canary must hold for before promotion")
    margin: float = Field(description="accuracy below the champion's by more than this: rollback")
    canary: SideView
    champion: SideView
    metric: Literal["realized", "estimated"] | None = Field(description="what decided; none: too little data")
    action: Literal["wait", "soak", "promote", "rollback"]
    reason: str


class RolloutsView(BaseModel):
    enabled: bool = Field(description="whether this node runs the quality gate (gate.enabled)")
    canaries: list[CanaryView] = Field(description="the last round's view of each active canary")
    actions: list[CanaryView] = Field(description="every promotion and rollback since the node started")


def _side(rows: int, labels: int, estimated: float | None, realized: float | None) -> SideView:
    return SideView(rows=rows, labels=labels, estimated_accuracy=estimated, realized_accuracy=realized)


def _view(d: GateDecision) -> CanaryView:
    return CanaryView(
        model=d.model,
        canary_version=d.canary_version,
        champion_version=d.champion_version,
        groups=d.groups,
        started=d.started,
        soaked_s=d.soaked_s,
        soak_s=d.gate.soak_s,
        margin=d.gate.margin,
        canary=_side(d.canary.rows, d.canary.labels, d.canary.estimated, d.canary.realized),
        champion=_side(d.champion.rows, d.champion.labels, d.champion.estimated, d.champion.realized),
        metric=d.metric,
        action=d.action,
        reason=d.reason,
    )


@router.get("", response_model=RolloutsView, responses=errors(401))
def rollouts(state: StateDep, _: FleetReaderDep) -> RolloutsView:
    """Each active canary against its champion: evidence, accuracy, soak, and the gate's decision."""
    gate = state.monitor.gate if state.monitor is not None else None
    if gate is None:
        return RolloutsView(enabled=False, canaries=[], actions=[])
    return RolloutsView(
        enabled=True,
        canaries=[_view(d) for d in gate.latest],
        actions=[_view(d) for d in gate.actions],
    )
