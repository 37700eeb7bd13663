"""``POST /v1/erase`` (admin): a data subject's logged predictions, their labels and telemetry row
samples out of the node.

The where-clause is the one ``edgeml data erase`` takes (:func:`edgeml.privacy.where.parse_where`);
the logged predictions whose input in that column equals the value are deleted with every label
joined to them, and the telemetry batches' row samples (sent under compliance ``none``) whose input
matches are taken out of their batches. The audit trail records the column and the value's sha256,
never the value.
Labelled rows already landed in the lake are erased there by ``edgeml data erase <model>.labels``.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from edgeml.central.routes.deps import AdminDep, StateDep, errors

__all__ = ["EraseRequest", "Erased", "router"]

router = APIRouter(tags=["privacy"])
log = logging.getLogger("edgeml.central")


class EraseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    where: str = Field(
        min_length=1, max_length=1024, description='"<column> = <value>", as `edgeml data erase`'
    )
    model: str | None = Field(None, min_length=1, max_length=128, description="only this model's predictions")
    reason: str = Field(
        "", max_length=1024, description="why (e.g. the request's ticket), for the audit trail"
    )


class Erased(BaseModel):
    column: str
    value_sha256: str
    predictions: int = Field(description="logged predictions deleted")
    labels: int = Field(description="labels of those predictions deleted")
    samples: int = Field(description="telemetry row samples (compliance none) taken out of their batches")
    column_logged: bool = Field(
        description="whether any logged prediction holds the column (pii columns never leave a device "
        "under gdpr/hipaa, so there is nothing of them here)"
    )
    audited: bool = Field(
        description="recorded on the store's audit trail (false: central.yaml names no store)"
    )


@router.post("/v1/erase", response_model=Erased, responses=errors(400, 401, 503))
def erase(body: EraseRequest, state: StateDep, _: AdminDep) -> Erased:
    """Delete the logged predictions matching ``where``, their labels and the matching telemetry row
    samples (admin, audited)."""
    from edgeml.audit import AuditLog
    from edgeml.privacy.where import parse_where

    clause = parse_where(body.where)  # a clause it cannot read: 400 naming it, nothing touched
    done = state.store.erase_predictions(clause.column, clause.value, body.model)
    after = {
        "column": clause.column,
        "value_sha256": clause.value_sha256,
        "model": body.model,
        "predictions": done.predictions,
        "labels": done.labels,
        "samples": done.samples,
    }
    store = state.targets.store
    if store is not None:
        AuditLog(store).append(
            "central", "predictions.erase", body.model or "*", after=after, reason=body.reason
        )
    log.info(
        "erasure: %d logged predictions, %d labels and %d telemetry row samples deleted",
        done.predictions,
        done.labels,
        done.samples,
    )
    return Erased(
        column=clause.column,
        value_sha256=clause.value_sha256,
        predictions=done.predictions,
        labels=done.labels,
        samples=done.samples,
        column_logged=done.column_logged,
        audited=store is not None,
    )
