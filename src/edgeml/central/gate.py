"""Quality-gated rollout: the central node promotes a canary that holds and rolls back one that does not.

Each monitor round, for every model whose canary pointer names a newer version than stable
and is followed by some devices, the gate compares the canary with the champion (the stable
version) on the canary's device groups (all groups when it names none):

- canary evidence: its telemetry (summed by the database) and feedback labels since its
  pointer was published;
- champion evidence: its telemetry and labels from the same groups since then when there are
  enough (the canary has part of the devices), else its most recent ones within ``lookback``
  (the canary took every device over: the champion's last figures on that traffic).

Realized accuracy (feedback labels) decides once both sides have the version's
``gate.min_labels``; until then the label-free estimate (the calibrated sums devices send)
decides, once both sides have ``gate.min_rows`` rows. A canary more than ``gate.margin``
below the champion is rolled back at once: the canary channel points back at the champion,
signed, with the figures as the reason. One that has held for ``gate.soak_s`` since it was
published is promoted to stable. Without enough evidence on both sides nothing happens.

``gate`` comes from the canary version's signed manifest (the spec's ``rollout.gate``).
Actions go through :mod:`edgeml.bundle.rollout`, so they are signed and audited (actor
``central:quality-gate``), and each is also sent to the alert webhook as an event. One they
refuse — a sox version without a second key's approval (checked against the node's key ring),
the store refusing the write — is not taken: the round's decision says ``wait`` and why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from edgeml.bundle.channels import ChannelPointer
from edgeml.bundle.keys import KeyRing, Signer, timestamp
from edgeml.bundle.manifest import Manifest
from edgeml.bundle.rollout import promote, rollback
from edgeml.central.alerts import Alerter
from edgeml.central.drift import pool_stored
from edgeml.central.performance import realized_accuracy
from edgeml.errors import EdgemlError
from edgeml.observability import track_canary_accuracy, track_canary_action
from edgeml.spec.models import CanaryGate
from edgeml.store.base import ObjectStore
from edgeml.telemetry.schema import FeedbackRecord, PooledWindow
from edgeml.telemetry.store import TelemetryStore

__all__ = ["ACTOR", "Channels", "Evidence", "GateDecision", "QualityGate"]

log = logging.getLogger("edgeml.central.gate")

ACTOR = "central:quality-gate"

Action = Literal["wait", "soak", "promote", "rollback"]


class Channels(Protocol):
    """Where the gate reads verified channel pointers and manifests (the node's target resolver)."""

    def pointers(self, model: str) -> dict[str, ChannelPointer]: ...

    def forget(self, model: str) -> None: ...

    def manifest(self, model: str, version: int, profile: str) -> Manifest | None: ...


Metric = Literal["realized", "estimated"]


@dataclass(frozen=True)
class Evidence:
    """What one side (canary or champion) has shown on the canary's groups."""

    rows: int  # telemetry rows
    estimated: float | None  # label-free accuracy from the calibrated sums
    labels: int  # feedback labels with the prediction known
    realized: float | None


@dataclass(frozen=True)
class GateDecision:
    model: str
    canary_version: int
    champion_version: int
    groups: list[str]
    started: datetime
    soaked_s: float
    gate: CanaryGate
    canary: Evidence
    champion: Evidence
    metric: Metric | None  # the accuracy that decided; None: not enough evidence yet
    action: Action
    reason: str


def _estimate(windows: Sequence[PooledWindow]) -> tuple[int, float | None]:
    """Rows, and the expected accuracy pooled from the calibrated sums (None without sums)."""
    rows = sum(w.rows for w in windows)
    sums = [w.calibration for w in windows if w.calibration is not None and w.calibration.rows]
    counted = sum(s.rows for s in sums)
    return rows, (sum(s.expected_correct for s in sums) / counted if counted else None)


def _evidence(windows: Sequence[PooledWindow], labels: Sequence[FeedbackRecord]) -> Evidence:
    rows, estimated = _estimate(windows)
    realized = realized_accuracy((f.predicted, f.label) for f in labels)
    return Evidence(rows, estimated, len(labels), realized.accuracy if realized else None)


def _latest(windows: list[PooledWindow], rows: int) -> list[PooledWindow]:
    """The newest windows holding at least ``rows`` rows (all of them when they hold fewer)."""
    taken, total = [], 0
    for window in sorted(windows, key=lambda w: w.end, reverse=True):
        if total >= rows:
            break
        taken.append(window)
        total += window.rows
    return taken


def _compare(gate: CanaryGate, canary: Evidence, champion: Evidence) -> tuple[Metric, float, float] | None:
    if canary.labels >= gate.min_labels and champion.labels >= gate.min_labels:
        assert canary.realized is not None
        assert champion.realized is not None
        return "realized", canary.realized, champion.realized
    if (
        canary.rows >= gate.min_rows
        and champion.rows >= gate.min_rows
        and canary.estimated is not None
        and champion.estimated is not None
    ):
        return "estimated", canary.estimated, champion.estimated
    return None


class QualityGate:
    """See the module docstring; :meth:`evaluate` is one round (the monitor calls it)."""

    def __init__(
        self,
        db: TelemetryStore,
        store: ObjectStore,
        resolver: Channels,
        signer: Signer,
        *,
        alerter: Alerter | None = None,
        lookback: timedelta = timedelta(days=1),
        approvers: KeyRing | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.resolver = resolver
        self.signer = signer
        self.alerter = alerter
        self.lookback = lookback
        self.approvers = approvers  # whose approval lets a sox canary onto stable
        self.latest: list[GateDecision] = []  # this round's decisions, for /v1/rollouts
        self.actions: list[GateDecision] = []  # every promotion and rollback since start

    def models(self) -> list[str]:
        """Models with channel pointers on the store."""
        return sorted({key.split("/")[1] for key in self.store.keys("channels/") if key.count("/") == 2})

    def evaluate(self, now: datetime | None = None) -> list[GateDecision]:
        now = now or datetime.now(UTC)
        decisions = []
        for model in self.models():
            self.resolver.forget(model)  # act on the pointers as they are, not as cached
            pointers = self.resolver.pointers(model)
            canary, stable = pointers.get("canary"), pointers.get("stable")
            if canary is None or stable is None or canary.version <= stable.version:
                continue
            if canary.canary_percent <= 0:
                continue  # withdrawn: no device follows it
            decision = self.judge(canary, stable, now)
            if decision.action in ("promote", "rollback"):
                decision = self._act(decision)
            decisions.append(decision)
        self.latest = decisions
        return decisions

    def judge(self, canary: ChannelPointer, stable: ChannelPointer, now: datetime) -> GateDecision:
        """What to do with a canary now (nothing is done here)."""
        model = canary.model
        gate = self._gate(canary)
        started = timestamp(canary.created, "canary pointer created")
        groups = list(canary.groups)

        def mine(items: Sequence[Any]) -> list[Any]:
            """On the canary's groups; labels only where the prediction they judge is known."""
            return [
                i
                for i in items
                if (not groups or i.group in groups) and getattr(i, "predicted", True) is not None
            ]

        def pooled(version: int, since: datetime, window: timedelta | None = None) -> list[PooledWindow]:
            """Telemetry summed by the database (no payload read), per group (and window)."""
            return mine(pool_stored(self.db, window, since=since, until=now, model=model, version=version))

        canary_windows = pooled(canary.version, started)
        canary_labels = mine(self.db.feedback(model=model, version=canary.version, since=started, until=now))
        champion_labels = mine(
            self.db.feedback(model=model, version=stable.version, since=now - self.lookback, until=now)
        )
        # the pointer's time is to the second: the champion's concurrent evidence starts after it
        after = started + timedelta(seconds=1)
        concurrent = pooled(stable.version, after)
        if sum(w.rows for w in concurrent) < gate.min_rows:  # its latest minutes instead
            concurrent = _latest(
                pooled(stable.version, now - self.lookback, timedelta(minutes=1)), gate.min_rows
            )
        concurrent_labels = [f for f in champion_labels if f.received_at >= after]
        if len(concurrent_labels) < gate.min_labels:
            concurrent_labels = champion_labels[-gate.min_labels :]
        canary_side = _evidence(canary_windows, canary_labels)
        champion_side = _evidence(concurrent, concurrent_labels)
        soaked = (now - started).total_seconds()
        compared = _compare(gate, canary_side, champion_side)
        metric: Metric | None = None
        if compared is None:
            action: Action = "wait"
            reason = (
                f"not enough evidence yet: canary {canary_side.rows} rows / {canary_side.labels} labels, "
                f"champion {champion_side.rows} rows / {champion_side.labels} labels; a comparison needs "
                f"{gate.min_labels} labels or {gate.min_rows} rows with estimates on each side"
            )
        else:
            metric, new, old = compared
            track_canary_accuracy(model, canary.version, "canary", metric, new)
            track_canary_accuracy(model, stable.version, "champion", metric, old)
            figures = (
                f"{metric} accuracy: canary v{canary.version} {new:.1%}, champion v{stable.version} {old:.1%}"
            )
            if new < old - gate.margin:
                action, reason = "rollback", f"{figures}; more than {gate.margin:.1%} below"
            elif soaked >= gate.soak_s:
                action, reason = "promote", f"{figures}; held for {soaked:.0f} s (soak {gate.soak_s:g} s)"
            else:
                action, reason = "soak", f"{figures}; soaking {soaked:.0f} of {gate.soak_s:g} s"
        return GateDecision(
            model=model,
            canary_version=canary.version,
            champion_version=stable.version,
            groups=groups,
            started=started,
            soaked_s=soaked,
            gate=gate,
            canary=canary_side,
            champion=champion_side,
            metric=metric,
            action=action,
            reason=reason,
        )

    def _gate(self, canary: ChannelPointer) -> CanaryGate:
        """The rule the canary version was built with (any profile's manifest says the same)."""
        for profile in sorted(canary.manifests):
            manifest = self.resolver.manifest(canary.model, canary.version, profile)
            if manifest is not None:
                return manifest.gate or CanaryGate()
        return CanaryGate()

    def _act(self, decision: GateDecision) -> GateDecision:
        """The decision as taken, or as ``wait`` with why it could not be (next round tries again)."""
        where = f"{decision.model} canary v{decision.canary_version}"
        try:
            if decision.action == "promote":
                promote(
                    self.store,
                    self.signer,
                    decision.model,
                    actor=ACTOR,
                    reason=decision.reason,
                    approvers=self.approvers,
                )
            else:
                rollback(
                    self.store,
                    self.signer,
                    decision.model,
                    "canary",
                    decision.champion_version,
                    reason=decision.reason,
                    actor=ACTOR,
                )
        except EdgemlError as exc:  # refused (no approval) or the store refused the write
            log.error("quality gate could not %s %s: %s", decision.action, where, exc)
            return replace(
                decision,
                action="wait",
                reason=f"{decision.reason}; could not {decision.action}: {exc.message}",
            )
        finally:
            self.resolver.forget(decision.model)
        track_canary_action(decision.model, decision.action)
        self.actions.append(decision)
        log.warning("quality gate: %s %s (%s)", decision.action, where, decision.reason)
        if self.alerter is not None:
            self.alerter.notify(
                {
                    "alert": f"canary_{decision.action}",
                    "model": decision.model,
                    "version": decision.canary_version,
                    "champion_version": decision.champion_version,
                    "groups": decision.groups,
                    "metric": decision.metric,
                    "reason": decision.reason,
                }
            )
        return decision
