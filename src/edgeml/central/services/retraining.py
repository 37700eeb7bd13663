"""The retraining policy: on drift, the pipeline as a job, once per served version; its status."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from edgeml.central.config import CentralConfig
from edgeml.central.monitor import GroupStatus
from edgeml.central.services.targets import TargetResolver
from edgeml.errors import EdgemlError, TargetsUnavailable
from edgeml.settings import Settings
from edgeml.telemetry.store import TelemetryStore
from edgeml.train.registry import ChampionComparison

__all__ = ["RETRAIN_COOLDOWN_S", "RetrainingStatus", "retrainer", "retraining_status"]

log = logging.getLogger("edgeml.central")


#: after a retraining job failed, drift on the same data waits this long before another
RETRAIN_COOLDOWN_S = 600.0


def retrainer(
    config: CentralConfig,
    settings: Settings | None,
    resolver: TargetResolver,
    db: TelemetryStore | None = None,
) -> Callable[[GroupStatus], None] | None:
    """On drift: the pipeline as a job, to the canary of the drifted group; once per served version.

    Drift of a version older than the newest on any channel is left alone: a newer model is
    already out (its own telemetry will say whether it drifts too). Labels that arrived since
    the last landing are landed first (with ``db``); when there are some, the version is
    retrained even if its data was retrained on already.
    """
    spec = config.retrain.spec
    if spec is None or settings is None:
        return None
    from edgeml.central.retrain import current_retraining, submit_retraining

    failed_at: dict[tuple[str, str], float] = {}  # (model, snapshot) -> when its job last failed

    def _land(model: str) -> str | None:
        """Land ``model``'s new labels; the labels dataset's newest snapshot (None: none, or no store)."""
        if db is None or resolver.store is None:
            return None
        from edgeml.central.services.labels import land_labels

        try:
            return land_labels(resolver.store, db, model).snapshot
        except EdgemlError as exc:
            log.error("landing the labels of %s failed: %s", model, exc)
            return None

    def retrain(status: GroupStatus) -> None:
        try:
            published = [p.version for p in resolver.pointers(status.model).values()]
        except TargetsUnavailable:
            published = []
        if published and status.version < max(published):
            return
        labels = _land(status.model)
        last = current_retraining(status.model, settings)
        new_labels = labels is not None and (last is None or labels != last.labels_snapshot)
        if last is not None and last.since_snapshot == status.snapshot:
            if last.state in ("pending", "running"):
                return
            if last.state == "failed":
                key = (status.model, status.snapshot)
                failed_at.setdefault(key, time.monotonic())
                if time.monotonic() - failed_at[key] < RETRAIN_COOLDOWN_S:
                    return  # a failed job is not retried every round: its log says why
                del failed_at[key]
            elif not new_labels:
                return  # this version's data (and labels) were retrained on already
        try:
            submission = submit_retraining(
                spec,
                settings,
                status.snapshot,
                groups=[status.group] if status.group else [],
                dashboard_address=config.retrain.dashboard,
                labels_snapshot=labels,
                new_labels=new_labels,
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


class RetrainingStatus(BaseModel):
    """What ``edgeml central status`` shows: the retraining policy, the last job, the last comparisons."""

    retraining: str = Field(description="on what the node retrains, in words; 'off' without retrain.spec")
    holds: list[str] = Field(description="what keeps a retraining from starting, or a model from a canary")
    gates: dict[str, Any] = Field(description="the spec's gates: thresholds, champion margin and tolerance")
    labelled_weight: str = Field(description="how the field's labelled rows weigh in training")
    quality_gate: str = Field(description="whether the node judges canaries, and why not when it does not")
    last_job: dict[str, Any] | None = Field(description="the last retraining job of the spec's dataset")
    comparisons: list[ChampionComparison] = Field(description="each model's last champion comparison")


def retraining_status(config: CentralConfig, models: list[str]) -> RetrainingStatus:
    """The node's retraining policy and the last champion comparison of ``models`` (and the spec's)."""
    from edgeml.settings import load_settings
    from edgeml.spec import load_spec
    from edgeml.store import open_store
    from edgeml.train.feedback import FIELD_HOLDOUT_EVERY, LABELLED_WEIGHT, MAX_LABELLED_SHARE
    from edgeml.train.registry import last_comparison

    spec = load_spec(config.retrain.spec) if config.retrain.spec is not None else None
    job = None
    if spec is not None:
        from edgeml.central.retrain import current_retraining

        home = config.retrain.home
        settings = load_settings({"EDGEML_HOME": str(home)} if home else None)
        found = current_retraining(spec.name, settings)
        job = None if found is None else found.model_dump(mode="json", exclude={"entrypoint"})
        models = [spec.name, *[m for m in models if m != spec.name]]
    store = open_store(config.store.url, config.store.s3_settings()) if config.store else None
    comparisons = [c for m in models if store and (c := last_comparison(store, m)) is not None]
    if config.gate_on:
        quality = "on: canaries are promoted or rolled back by accuracy against the stable champion"
    elif config.gate.enabled is False:
        quality = "off (gate.enabled: false in central.yaml)"
    else:
        quality = "off: it needs store, keyring and gate.keys_home in central.yaml, and the monitor"
    return RetrainingStatus(
        retraining=(
            f"on drift of the newest served version of {spec.name}: `edgeml pipeline run "
            f"{config.retrain.spec}` to the canary of the drifted group"
            if spec is not None
            else "off (no retrain.spec in central.yaml)"
        ),
        holds=[
            "one job at a time per dataset",
            "a version whose data was retrained on already is not retrained again",
            f"a failed job waits {RETRAIN_COOLDOWN_S:.0f} s before the same data is tried again",
            "no new data since the serving snapshot (and no new labels): the job stops without training",
            "a challenger that fails its gates (against the champion on the same holdout and the "
            "field's labelled holdout) is kept from the canary",
        ],
        gates={} if spec is None else spec.gates.model_dump(mode="json"),
        labelled_weight=(
            f"each labelled row counts {LABELLED_WEIGHT}x in training (labelled copies at most "
            f"{MAX_LABELLED_SHARE:.0%} of the training rows); 1 in {FIELD_HOLDOUT_EVERY} is the field holdout"
        ),
        quality_gate=quality,
        last_job=job,
        comparisons=comparisons,
    )
