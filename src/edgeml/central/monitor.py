"""The central node's watch: every ``interval_s``, drift and accuracy per model, version and group.

Each round reads the telemetry whose window ended in the last ``window`` (the store's
query API), pools it per (model, version, device group), and compares it with the
reference statistics in that version's signed manifest (:mod:`edgeml.central.drift`), estimates
accuracy from the calibrated sums and measures it from feedback labels
(:mod:`edgeml.central.performance`), sets the gauges, hands every signal to the
:class:`~edgeml.central.alerts.Alerter` (which sends, dedups and resolves), and calls
``on_drift`` for a group whose drift breached — the retraining trigger. Then the
:class:`~edgeml.central.gate.QualityGate`, when there is one, judges the canaries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edgeml.bundle.manifest import Manifest
from edgeml.central.alerts import Alerter, accuracy_signal, drift_signals
from edgeml.central.db import TelemetryStore
from edgeml.central.drift import (
    DriftConfig,
    DriftReport,
    ThresholdCache,
    compute_drift,
    pool_stored,
    publish_drift,
)
from edgeml.central.gate import QualityGate
from edgeml.central.performance import (
    AccuracyEstimate,
    RealizedAccuracy,
    estimate_accuracy,
    publish_accuracy,
    realized_accuracy,
)

__all__ = ["GroupStatus", "ManifestFor", "Monitor"]

log = logging.getLogger("edgeml.central")


#: the signed manifest of (model, version, profile), or None when it cannot be read
ManifestFor = Callable[[str, int, str], Manifest | None]


@dataclass(frozen=True)
class GroupStatus:
    model: str
    version: int
    group: str | None
    rows: int
    snapshot: str  # the data the version was trained on: retraining starts after it
    drift: DriftReport
    estimate: AccuracyEstimate | None
    realized: RealizedAccuracy | None

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.drift.breaches]


class Monitor:
    """See the module docstring; ``evaluate`` is one round, ``start``/``stop`` a thread of them."""

    def __init__(
        self,
        db: TelemetryStore,
        manifests: ManifestFor,
        *,
        window: timedelta = timedelta(minutes=10),
        interval_s: float = 30.0,
        min_rows: int = 200,
        alerter: Alerter | None = None,
        on_drift: Callable[[GroupStatus], None] | None = None,
        drift: DriftConfig | None = None,
        gate: QualityGate | None = None,
    ) -> None:
        self.db = db
        self.manifests = manifests
        self.window = window
        self.interval_s = interval_s
        self.min_rows = min_rows
        self.alerter = alerter
        self.on_drift = on_drift
        self.gate = gate
        self.cache = ThresholdCache(drift)
        self.latest: list[GroupStatus] = []
        self.history: list[tuple[datetime, list[GroupStatus]]] = []  # the last rounds, for the page
        self.keep_rounds = 500
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def evaluate(self, now: datetime | None = None) -> list[GroupStatus]:
        now = now or datetime.now(UTC)
        since = now - self.window
        profiles = self.db.profiles(since, now)
        statuses, signals = [], []
        # summed by the database (no payload is read) per model, version and group
        for pooled in pool_stored(self.db, None, since=since, until=now):
            model, version, group = pooled.model, pooled.version, pooled.group
            if pooled.rows < self.min_rows:
                continue  # too few rows to tell drift from noise
            manifest = self.manifests(model, version, profiles[model, version])
            if manifest is None:
                continue
            try:
                report = compute_drift(pooled, manifest, cache=self.cache)
            except ValueError as exc:  # telemetry binned unlike its manifest: this group only
                log.error("drift of %s v%s in %s not computed: %s", model, version, group, exc)
                continue
            publish_drift(report)
            estimate = estimate_accuracy(pooled, manifest)
            pairs = [
                (f.predicted, f.label)
                for f in self.db.feedback(model=model, version=version, group=group, since=since, until=now)
                if f.predicted is not None
            ]
            realized = realized_accuracy(pairs)
            publish_accuracy(model, version, group, estimate=estimate, realized=realized)
            status = GroupStatus(
                model, version, group, pooled.rows, manifest.snapshot, report, estimate, realized
            )
            statuses.append(status)
            signals += drift_signals(report) + ([accuracy_signal(estimate)] if estimate else [])
        if self.alerter is not None:
            self.alerter.process(signals)
        for status in statuses:
            if status.drifted and self.on_drift is not None:
                self.on_drift(status)
        self.latest = statuses
        self.history.append((now, statuses))
        del self.history[: -self.keep_rounds]
        if self.gate is not None:
            try:
                self.gate.evaluate(now)
            except Exception:  # the store may be unreachable: drift watching goes on
                log.exception("quality gate round failed")
        return statuses

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="edgeml-monitor", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.evaluate()
            except Exception:  # a bad round must not end the watch
                log.exception("monitor round failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
