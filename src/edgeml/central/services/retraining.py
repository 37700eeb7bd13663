"""The retraining policy at work: each monitor round, decide and submit; and its status."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from edgeml.central.config import CentralConfig
from edgeml.central.monitor import GroupStatus
from edgeml.central.retrain import RetrainJob
from edgeml.central.services.policy import Decision, Fired, Seen, Served, decide
from edgeml.central.services.targets import TargetResolver
from edgeml.errors import EdgemlError, TargetsUnavailable
from edgeml.settings import Settings
from edgeml.telemetry.store import TelemetryStore
from edgeml.train.registry import ChampionComparison

__all__ = [
    "Retrainer",
    "RetrainingStatus",
    "last_decision",
    "retrainer",
    "retraining_status",
    "write_decision",
]

log = logging.getLogger("edgeml.central")


def retrainer(
    config: CentralConfig,
    settings: Settings | None,
    resolver: TargetResolver,
    db: TelemetryStore | None = None,
    *,
    entrypoint: list[str] | None = None,
) -> Retrainer | None:
    """The node's retraining policy, run each monitor round; None without ``retrain.spec``."""
    if config.retrain.spec is None or settings is None:
        return None
    return Retrainer(config.retrain.spec, settings, resolver, db, config.retrain.dashboard, entrypoint)


class Retrainer:
    """Each round: the spec's ``retrain:`` policy decides (:func:`~edgeml.central.services.policy.decide`);
    a trigger no hold holds submits the pipeline as a job (labels landed first, audited). The
    decision, with its reason, is kept in ``$EDGEML_HOME/retrain/decisions/<model>.json``.

    The spec is read every round, so an edited policy applies from the next one. Statuses of other
    models, and of versions older than the newest served (a newer model is already out), are left
    alone. ``entrypoint`` replaces the job's command (tests).
    """

    def __init__(
        self,
        spec_path: Path,
        settings: Settings,
        resolver: TargetResolver,
        db: TelemetryStore | None,
        dashboard: str | None = None,
        entrypoint: list[str] | None = None,
    ) -> None:
        self.spec_path = spec_path
        self.settings = settings
        self.resolver = resolver
        self.db = db
        self.dashboard = dashboard
        self.entrypoint = entrypoint

    def round(self, statuses: Sequence[GroupStatus], now: datetime | None = None) -> Decision:
        """Decide for the spec's model on this round's ``statuses``; submit when that is the decision."""
        from edgeml.central.retrain import current_retraining, submissions
        from edgeml.spec import load_spec

        now = now or datetime.now(UTC)
        try:
            spec = load_spec(self.spec_path)
        except EdgemlError as exc:
            decision = Decision(model="?", at=now, outcome="error", reason=f"error: {exc}")
            log.error("retraining policy not evaluated: %s", exc)
            return decision
        model = spec.name
        served = self._served(model)
        mine = [s for s in statuses if s.model == model and (served is None or s.version == served.version)]
        last = current_retraining(model, self.settings)
        seen = Seen(
            now=now,
            served=served,
            statuses=mine,
            last_job=last,
            submitted=submissions(self.settings, model, now - timedelta(days=7)),
            new_labels=self._new_labels(model, last),
        )
        decision, fired = decide(model, spec.retrain, seen)
        if fired is not None:
            decision = self._submit(decision, fired, seen, stop_unchanged=spec.retrain.holds.no_new_data)
        write_decision(self.settings, decision)
        return decision

    def _served(self, model: str) -> Served | None:
        try:
            pointers = self.resolver.pointers(model)
        except TargetsUnavailable:
            return None
        if not pointers:
            return None
        newest = max(pointers.values(), key=lambda p: p.version)
        manifest = self.resolver.manifest(model, newest.version, next(iter(newest.manifests)))
        if manifest is None:
            return Served(newest.version, None, None, None)
        built = datetime.fromisoformat(manifest.created)
        built = built if built.tzinfo else built.replace(tzinfo=UTC)
        return Served(newest.version, manifest.snapshot, built, manifest.metrics.get("holdout_accuracy"))

    def _new_labels(self, model: str, last: RetrainJob | None) -> int:
        if self.db is None:
            return 0
        return self.db.labelled_count(model, None if last is None else last.labels_until or last.submitted_at)

    def _land(self, model: str) -> tuple[str | None, datetime | None]:
        """Land ``model``'s new labels: the labels dataset's newest snapshot, when its newest label came."""
        if self.db is None or self.resolver.store is None:
            return None, None
        from edgeml.central.services.labels import land_labels
        from edgeml.ingest.labels import landed_until

        try:
            return land_labels(self.resolver.store, self.db, model).snapshot, landed_until(
                self.resolver.store, model
            )
        except EdgemlError as exc:
            log.error("landing the labels of %s failed: %s", model, exc)
            return None, None

    def _submit(self, decision: Decision, fired: Fired, seen: Seen, *, stop_unchanged: bool) -> Decision:
        from edgeml.central.retrain import submit_retraining

        model = decision.model
        labels, until = self._land(model)
        try:
            submission = submit_retraining(
                self.spec_path,
                self.settings,
                fired.snapshot,
                groups=list(fired.groups),
                dashboard_address=self.dashboard,
                entrypoint=self.entrypoint,
                labels_snapshot=labels,
                new_labels=seen.new_labels > 0,
                labels_until=until or seen.now,
                reason=fired.reason,
                stop_unchanged=stop_unchanged,
            )
        except EdgemlError as exc:
            log.error("retraining %s (%s) failed to start: %s", model, fired.reason, exc)
            return decision.model_copy(
                update={"outcome": "error", "reason": f"error: the job did not start: {exc}"}
            )
        job = submission.job
        if not submission.submitted:  # another process started one in between
            return decision.model_copy(
                update={"outcome": "held", "reason": f"held: job {job.job_id} is still {job.state}"}
            )
        if self.resolver.store is not None:
            from edgeml.audit import AuditLog

            AuditLog(self.resolver.store).append(
                "central:auto",
                "retrain.submit",
                model,
                after={
                    "job": job.job_id,
                    "since_snapshot": job.since_snapshot,
                    "groups": list(fired.groups),
                    "trigger": fired.trigger,
                },
                reason=fired.reason,
            )
        log.warning("%s: retraining job %s submitted (%s)", model, job.job_id, fired.reason)
        return decision.model_copy(update={"job_id": job.job_id})


def _decision_file(settings: Settings, model: str) -> Path:
    return settings.home / "retrain" / "decisions" / f"{model}.json"


def write_decision(settings: Settings, decision: Decision) -> None:
    path = _decision_file(settings, decision.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(decision.model_dump_json(indent=2), encoding="utf-8")


def last_decision(settings: Settings, model: str) -> Decision | None:
    """The policy's last decision about ``model`` (None before its first round)."""
    path = _decision_file(settings, model)
    return Decision.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None


class RetrainingStatus(BaseModel):
    """What ``edgeml central status`` shows: the retraining policy, its last decision, the last job,
    the last comparisons."""

    retraining: str = Field(description="what the node retrains, in words; 'off' without retrain.spec")
    triggers: list[str] = Field(default_factory=list, description="the spec's retrain.triggers, in words")
    holds: list[str] = Field(description="what keeps a retraining from starting, or a model from a canary")
    policy: dict[str, Any] = Field(default_factory=dict, description="the spec's retrain: section")
    last_decision: Decision | None = Field(None, description="the policy's last decision and its reason")
    gates: dict[str, Any] = Field(description="the spec's gates: thresholds, champion margin and tolerance")
    labelled_weight: str = Field(description="how the field's labelled rows weigh in training")
    quality_gate: str = Field(description="whether the node judges canaries, and why not when it does not")
    last_job: dict[str, Any] | None = Field(description="the last retraining job of the spec's dataset")
    comparisons: list[ChampionComparison] = Field(description="each model's last champion comparison")


#: the champion comparison: the hold of the pipeline the job runs, not of the node
GATE_HOLD = (
    "a challenger that fails its gates (against the champion on the same holdout and the "
    "field's labelled holdout) is kept from the canary"
)


def retraining_status(config: CentralConfig, models: list[str]) -> RetrainingStatus:
    """The node's retraining policy, its last decision, and the last champion comparison of ``models``
    (and the spec's)."""
    from edgeml.central.services.policy import describe
    from edgeml.settings import load_settings
    from edgeml.spec import load_spec
    from edgeml.store import open_store
    from edgeml.train.feedback import FIELD_HOLDOUT_EVERY, LABELLED_WEIGHT, MAX_LABELLED_SHARE
    from edgeml.train.registry import last_comparison

    spec = load_spec(config.retrain.spec) if config.retrain.spec is not None else None
    job = decision = None
    triggers: list[str] = []
    holds = [GATE_HOLD]
    if spec is not None:
        from edgeml.central.retrain import current_retraining

        home = config.retrain.home
        settings = load_settings({"EDGEML_HOME": str(home)} if home else None)
        found = current_retraining(spec.name, settings)
        job = None if found is None else found.model_dump(mode="json", exclude={"entrypoint"})
        decision = last_decision(settings, spec.name)
        triggers, node_holds = describe(spec.retrain)
        holds = [*node_holds, GATE_HOLD]
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
            f"{spec.name}, by the retrain: policy of {config.retrain.spec}, evaluated every monitor round: "
            "`edgeml pipeline run` to the canary"
            if spec is not None
            else "off (no retrain.spec in central.yaml)"
        ),
        triggers=triggers,
        holds=holds,
        policy={} if spec is None else spec.retrain.model_dump(mode="json"),
        last_decision=decision,
        gates={} if spec is None else spec.gates.model_dump(mode="json"),
        labelled_weight=(
            f"each labelled row counts {LABELLED_WEIGHT}x in training (labelled copies at most "
            f"{MAX_LABELLED_SHARE:.0%} of the training rows); 1 in {FIELD_HOLDOUT_EVERY} is the field holdout"
        ),
        quality_gate=quality,
        last_job=job,
        comparisons=comparisons,
    )
