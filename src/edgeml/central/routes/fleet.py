"""The fleet: JSON and the web page (:mod:`edgeml.central.services.fleet` computes them)."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from edgeml.audit import AuditEntry, AuditLog
from edgeml.central.monitor import GroupStatus
from edgeml.central.page import render_fleet_page
from edgeml.central.routes.deps import FleetReaderDep, StateDep, errors
from edgeml.central.services.fleet import Fleet, fleet_view, model_health
from edgeml.central.services.retraining import RetrainingStatus
from edgeml.central.services.state import CentralState
from edgeml.errors import EdgemlError, StoreError

__all__ = ["router"]

router = APIRouter(tags=["fleet"])
log = logging.getLogger("edgeml.central")


@router.get("/v1/fleet", response_model=Fleet, responses=errors(401))
def fleet(state: StateDep, _: FleetReaderDep) -> Fleet:
    """Every device: model version, group, last seen, spool drops, online or offline."""
    return fleet_view(state)


@router.get(
    "/",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The fleet page"}, **errors(401)},
)
def page(
    state: StateDep,
    _: FleetReaderDep,
    hours: int = Query(24, ge=1, le=24 * 90, description="how far back the charts go"),
) -> HTMLResponse:
    """The fleet web page: devices, and rows predicted over time per device group."""
    view = fleet_view(state)
    span = timedelta(hours=hours)
    since = view.generated_at - span
    rows = state.store.rows_over_time(since, span / 48)
    gate = state.monitor.gate if state.monitor is not None else None
    return HTMLResponse(
        render_fleet_page(
            view,
            rows,
            span,
            model_health(state, since, span / 24),
            canaries=gate.latest if gate is not None else None,
            gate_actions=gate.actions if gate is not None else None,
            audit=_latest_changes(state),
            nannyml=_latest_round(state),
            retraining=_retraining(state, sorted({d.model for d in view.devices})),
        )
    )


def _retraining(state: CentralState, models: list[str]) -> RetrainingStatus | None:
    from edgeml.central.services.retraining import retraining_status

    try:
        return retraining_status(state.config, models)
    except (EdgemlError, OSError) as exc:  # the page still shows the fleet
        log.warning("retraining status not readable for the fleet page: %s", exc)
        return None


def _latest_round(state: CentralState) -> list[GroupStatus] | None:
    """The watch's latest round (empty before its first), or None when the watch is off."""
    if state.monitor is None:
        return None
    history = list(state.monitor.history)
    return history[-1][1] if history else []


#: audit entries the page shows
AUDIT_ON_PAGE = 15


def _latest_changes(state: CentralState) -> list[AuditEntry] | None:
    store = state.targets.store
    if store is None:
        return None
    try:
        return AuditLog(store).latest(AUDIT_ON_PAGE)
    except StoreError as exc:  # the page still shows the fleet when the store is unreachable
        log.warning("audit trail not readable for the fleet page: %s", exc)
        return []
