"""The retraining policy: on drift, the pipeline as a job, once per served version."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edgeml.central.config import CentralConfig
from edgeml.central.monitor import GroupStatus
from edgeml.central.services.targets import TargetResolver
from edgeml.errors import EdgemlError, TargetsUnavailable
from edgeml.settings import Settings

__all__ = ["RETRAIN_COOLDOWN_S", "retrainer"]

log = logging.getLogger("edgeml.central")


#: after a retraining job failed, drift on the same data waits this long before another
RETRAIN_COOLDOWN_S = 600.0


def retrainer(
    config: CentralConfig, settings: Settings | None, resolver: TargetResolver
) -> Callable[[GroupStatus], None] | None:
    """On drift: the pipeline as a job, to the canary of the drifted group; once per served version.

    Drift of a version older than the newest on any channel is left alone: a newer model is
    already out (its own telemetry will say whether it drifts too).
    """
    spec = config.retrain.spec
    if spec is None or settings is None:
        return None
    from edgeml.central.retrain import current_retraining, submit_retraining

    failed_at: dict[tuple[str, str], float] = {}  # (model, snapshot) -> when its job last failed

    def retrain(status: GroupStatus) -> None:
        try:
            published = [p.version for p in resolver.pointers(status.model).values()]
        except TargetsUnavailable:
            published = []
        if published and status.version < max(published):
            return
        last = current_retraining(status.model, settings)
        if last is not None and last.since_snapshot == status.snapshot:
            if last.state != "failed":
                return  # this version's data was retrained on already (or is being)
            key = (status.model, status.snapshot)
            failed_at.setdefault(key, time.monotonic())
            if time.monotonic() - failed_at[key] < RETRAIN_COOLDOWN_S:
                return  # a failed job is not retried every round: its log says why
            del failed_at[key]
        try:
            submission = submit_retraining(
                spec,
                settings,
                status.snapshot,
                groups=[status.group] if status.group else [],
                dashboard_address=config.retrain.dashboard,
            )
        except EdgemlError as exc:
            log.error("retraining %s after drift in %s failed to start: %s", status.model, status.group, exc)
            return
        if not submission.submitted:
            return  # one is running already
        job = submission.job
        if resolver.store is not None:
            from edgeml.audit import AuditLog

            AuditLog(resolver.store).append(
                "central:auto",
                "retrain.submit",
                status.model,
                after={"job": job.job_id, "since_snapshot": job.since_snapshot, "groups": [status.group]},
                reason=f"v{status.version} drifted in {status.group}: {', '.join(status.drifted)}",
            )
        log.warning(
            "drift in %s (%s): retraining job %s submitted",
            status.group,
            ", ".join(status.drifted),
            job.job_id,
        )

    return retrain
