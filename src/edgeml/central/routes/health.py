"""Liveness, readiness and the Prometheus exposition."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from edgeml.central.routes.deps import StateDep, errors
from edgeml.central.services.fleet import update_fleet_gauges
from edgeml.observability import render_metrics

__all__ = ["router"]

router = APIRouter(tags=["health"])

#: readiness fails when a one-row write takes longer than this
READY_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: Literal["ok", "ready"]


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=errors(503))
def readyz(state: StateDep) -> Health:
    """The telemetry store commits a write within two seconds."""
    try:
        state.store.probe_write(READY_TIMEOUT_S)
    except Exception as exc:  # closed, timed out, disk full: whatever it is, not ready
        raise HTTPException(503, f"the telemetry store does not take writes: {exc!r}") from exc
    return Health(status="ready")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text"}},
)
def metrics(state: StateDep) -> Response:
    """Prometheus metrics: intake, fleet, drift, accuracy, alerts."""
    update_fleet_gauges(state)
    return Response(render_metrics(), media_type=CONTENT_TYPE_LATEST)
