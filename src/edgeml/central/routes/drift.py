"""``/v1/drift``: what the central node's watch concluded, last round and over time."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import AwareDatetime, BaseModel, Field

from edgeml.central.monitor import GroupStatus, NannyMLRun
from edgeml.central.performance import NannyDrift, NannyEstimate
from edgeml.central.routes.deps import FleetReaderDep, StateDep, errors

__all__ = ["DriftFailure", "DriftStatus", "DriftView", "FeatureView", "NannyMLView", "router"]

router = APIRouter(prefix="/v1/drift", tags=["drift"])


class NannyMLView(BaseModel):
    at: AwareDatetime = Field(description="when NannyML last looked at the group")
    reason: str | None = Field(
        description="why there is no NannyML report (compliance, no reference rows, ...)"
    )
    rows: int | None = Field(description="sampled rows analysed")
    note: str | None = Field(None, description="why fewer rows were analysed than sampled, if they were")
    drift_alerts: list[str] = Field(description="features NannyML's univariate drift alerts on")
    drift: list[NannyDrift] = Field(description="per feature: method, value, threshold, alert")
    performance: NannyEstimate | None = Field(
        description="CBPE accuracy (classifiers) or DLE mae (regression), with its confidence band"
    )
    performance_skipped: str | None = Field(description="why there is no performance estimate")


class FeatureView(BaseModel):
    feature: str = Field(description="an input, a score histogram (score:...) or predicted_label")
    kind: str = Field(description="feature, score or prediction")
    method: str = Field(description="the method that decides: js, hellinger, wasserstein, chi2 (or psi)")
    value: float
    lower: float | None = Field(description="alert below this; null: no lower bound")
    upper: float = Field(description="alert above this")
    alert: bool
    rows: int = Field(description="values compared")


class DriftStatus(BaseModel):
    at: AwareDatetime = Field(description="when the round ran")
    model: str
    version: int
    group: str | None
    window_start: AwareDatetime = Field(description="the telemetry judged: windows that ended after this")
    window_end: AwareDatetime
    rows: int = Field(description="rows predicted in the round's window")
    reference: str = Field(
        description="what the inputs are judged against: 'group' (the group's own, the version was "
        "trained for it) or 'version' (the version's reference)"
    )
    features: list[FeatureView] = Field(description="every input, score and the labels: value, band, alert")
    drifted: list[str] = Field(description="features, scores or labels over their threshold")
    max_js: float | None = Field(description="largest Jensen-Shannon distance of any input to its reference")
    estimated_accuracy: float | None = Field(description="from calibrated probabilities, without labels")
    reference_accuracy: float | None = Field(description="the holdout accuracy the version was trained to")
    realized_accuracy: float | None = Field(description="from feedback labels in the window")
    nannyml: NannyMLView | None = Field(
        description="NannyML's last pass over the group's row samples; null while it has not run"
    )


class DriftFailure(BaseModel):
    model: str
    version: int
    group: str | None
    error: str = Field(description="why this group was not judged in the last round (the others were)")


class DriftView(BaseModel):
    enabled: bool
    latest: list[DriftStatus]
    history: list[DriftStatus] = Field(description="every round kept, oldest first")
    failures: list[DriftFailure] = Field(default_factory=list, description="groups the last round failed")


def _status(at: datetime, s: GroupStatus) -> DriftStatus:
    js = [m.value for f in s.drift.features if f.kind == "feature" for m in f.scores if m.method == "js"]
    return DriftStatus(
        at=at,
        model=s.model,
        version=s.version,
        group=s.group,
        window_start=s.drift.start,
        window_end=s.drift.end,
        rows=s.rows,
        reference="group" if s.drift.group_reference else "version",
        features=[
            FeatureView(
                feature=f.feature,
                kind=f.kind,
                method=f.method,
                value=f.value,
                lower=f.lower,
                upper=f.threshold,
                alert=f.breached,
                rows=f.rows,
            )
            for f in s.drift.features
        ],
        drifted=s.drifted,
        max_js=max(js) if js else None,
        estimated_accuracy=s.estimate.estimated if s.estimate else None,
        reference_accuracy=s.estimate.reference if s.estimate else None,
        realized_accuracy=s.realized.accuracy if s.realized else None,
        nannyml=_nannyml(s.nannyml) if s.nannyml else None,
    )


def _nannyml(run: NannyMLRun) -> NannyMLView:
    report = run.report
    return NannyMLView(
        at=run.at,
        reason=run.reason,
        rows=report.rows if report else None,
        note=run.note,
        drift_alerts=[d.feature for d in report.drift if d.alert] if report else [],
        drift=report.drift if report else [],
        performance=report.performance if report else None,
        performance_skipped=report.skipped if report else None,
    )


@router.get("", response_model=DriftView, responses=errors(401))
def drift(state: StateDep, _: FleetReaderDep) -> DriftView:
    """Drift and accuracy per model version and device group: the latest round and the rounds kept."""
    monitor = state.monitor
    if monitor is None:
        return DriftView(enabled=False, latest=[], history=[])
    history = list(monitor.history)
    latest = [_status(history[-1][0], s) for s in history[-1][1]] if history else []
    failures = [
        DriftFailure(model=m, version=v, group=g, error=e) for (m, v, g), e in monitor.failures.items()
    ]
    return DriftView(
        enabled=True,
        latest=latest,
        history=[_status(at, s) for at, round_ in history for s in round_],
        failures=failures,
    )
