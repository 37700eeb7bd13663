"""The central node's watch: every ``interval_s``, drift and accuracy per model, version and group.

Each round reads the telemetry whose window ended in the last ``window`` (the store's
query API), pools it per (model, version, device group), and compares it with the
reference statistics in that version's signed manifest (:mod:`edgeml.central.drift`), estimates
accuracy from the calibrated sums and measures it from feedback labels
(:mod:`edgeml.central.performance`), sets the gauges, hands every signal to the
:class:`~edgeml.central.alerts.Alerter` (which sends, dedups and resolves), and calls
``on_drift`` for a group whose drift breached, then ``on_round`` with every group's status (the
retraining policy, which also has triggers no telemetry raises: a schedule, label volume). Then
the :class:`~edgeml.central.gate.QualityGate`, when there is one, judges the canaries.

Every ``nannyml.interval_s`` a round also runs NannyML (:func:`~edgeml.central.performance.nannyml_analysis`)
on the row samples of each group whose compliance allows them, against the version's reference
rows; a group's last NannyML pass (its report, or why there is none) rides on its status until
the next. The analysed rows are one chunk and NannyML's thresholds come from the reference's chunks
of that size, so the reference must hold :data:`REFERENCE_CHUNKS` of them: the sample is cut to fit,
and a reference too small for ``min_rows`` is a reason on the status, not a report. NannyML is slow
and a third party: its rows are capped and its errors stay with its group.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from edgeml.bundle.manifest import Manifest
from edgeml.bundle.reference_rows import REFERENCE_CHUNKS
from edgeml.central.alerts import Alerter, Signal, accuracy_signal, drift_signals
from edgeml.central.config import NannyMLConfig
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
    NannyMLReport,
    RealizedAccuracy,
    estimate_accuracy,
    nannyml_analysis,
    publish_accuracy,
    publish_nannyml,
    realized_accuracy,
    sample_frame,
)
from edgeml.errors import NoReferenceRows
from edgeml.telemetry.schema import PooledWindow, SampleRow
from edgeml.telemetry.store import TelemetryStore

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "NANNYML_ALERT",
    "REFERENCE_CHUNKS",
    "GroupStatus",
    "ManifestFor",
    "Monitor",
    "NannyMLRun",
    "ReferenceFor",
]

log = logging.getLogger("edgeml.central")


#: the signed manifest of (model, version, profile), or None when it cannot be read
ManifestFor = Callable[[str, int, str], Manifest | None]
#: a version's reference rows for NannyML; raises NoReferenceRows when it has none
ReferenceFor = Callable[[Manifest], "pd.DataFrame"]

#: NannyML's performance estimate (CBPE accuracy, DLE mae) left its thresholds. Its univariate
#: drift is not alerted on: the histogram drift of every input already is.
NANNYML_ALERT = "EdgemlNannymlEstimatedPerformance"


@dataclass(frozen=True)
class NannyMLRun:
    """A group's last NannyML pass: its report, or the reason there is none."""

    at: datetime
    report: NannyMLReport | None
    reason: str | None = None
    note: str | None = None  # a report on fewer rows than were sampled, and why


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
    nannyml: NannyMLRun | None = None  # None: NannyML is off, or has not looked at this group yet

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
        on_round: Callable[[list[GroupStatus], datetime], object] | None = None,
        drift: DriftConfig | None = None,
        gate: QualityGate | None = None,
        nannyml: NannyMLConfig | None = None,
        references: ReferenceFor | None = None,
    ) -> None:
        self.db = db
        self.manifests = manifests
        self.window = window
        self.interval_s = interval_s
        self.min_rows = min_rows
        self.alerter = alerter
        self.on_drift = on_drift
        self.on_round = on_round
        self.gate = gate
        self.nannyml = nannyml if nannyml is not None and nannyml.enabled else None
        self.references = references
        self.cache = ThresholdCache(drift)
        self.latest: list[GroupStatus] = []
        #: the last round's groups whose judging failed, and why
        self.failures: dict[tuple[str, int, str | None], str] = {}
        self.history: list[tuple[datetime, list[GroupStatus]]] = []  # the last rounds, for the page
        self.keep_rounds = 500
        self._nannyml_runs: dict[tuple[str, int, str | None], NannyMLRun] = {}
        self._nannyml_at: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def evaluate(self, now: datetime | None = None) -> list[GroupStatus]:
        now = now or datetime.now(UTC)
        since = now - self.window
        judged: list[tuple[GroupStatus, Manifest]] = []
        failures: dict[tuple[str, int, str | None], str] = {}
        # summed by the database (no payload is read) per model, version and group
        pools = pool_stored(
            self.db, None, since=since, until=now, on_error=lambda k, exc: _failed(failures, k, exc)
        )
        # read after the pools, on the same bounds: every pooled version has sent a batch in it
        profiles = self.db.profiles(since, now)
        for pooled in pools:
            if pooled.rows < self.min_rows:
                continue  # too few rows to tell drift from noise
            try:
                found = self._judge_pool(pooled, profiles, since, now)
            except Exception as exc:  # this group's failure, reported alone: the round goes on
                _failed(failures, (pooled.model, pooled.version, pooled.group), exc)
                continue
            if found is not None:
                judged.append(found)
        self.failures = failures
        signals = [
            signal
            for status, _ in judged
            for signal in drift_signals(status.drift)
            + ([accuracy_signal(status.estimate)] if status.estimate else [])
        ]
        if self._nannyml_due(now):
            signals += self._nannyml_pass(judged, since, now)
        statuses = [
            replace(s, nannyml=self._nannyml_runs.get((s.model, s.version, s.group))) for s, _ in judged
        ]
        if self.alerter is not None:
            self.alerter.process(signals)
        for status in statuses:
            if status.drifted and self.on_drift is not None:
                self.on_drift(status)
        if self.on_round is not None:
            try:
                self.on_round(statuses, now)
            except Exception:  # a store or job backend down: the watch goes on
                log.exception("retraining round failed")
        self.latest = statuses
        self.history.append((now, statuses))
        del self.history[: -self.keep_rounds]
        if self.gate is not None:
            try:
                self.gate.evaluate(now)
            except Exception:  # the store may be unreachable: drift watching goes on
                log.exception("quality gate round failed")
        return statuses

    def _judge_pool(
        self, pooled: PooledWindow, profiles: dict[tuple[str, int], str], since: datetime, now: datetime
    ) -> tuple[GroupStatus, Manifest] | None:
        """One pool judged against its version's manifest; None when the manifest cannot be read."""
        profile = profiles.get((pooled.model, pooled.version))
        if profile is None:
            raise LookupError(f"no firmware profile seen for {pooled.model} v{pooled.version} in the window")
        manifest = self.manifests(pooled.model, pooled.version, profile)
        return None if manifest is None else (self._judge(pooled, manifest, since, now), manifest)

    def _judge(self, pooled: PooledWindow, manifest: Manifest, since: datetime, now: datetime) -> GroupStatus:
        """Drift and accuracy of one pooled group, gauges set; ValueError for telemetry binned unlike
        its manifest."""
        model, version, group = pooled.model, pooled.version, pooled.group
        report = compute_drift(pooled, manifest, cache=self.cache)
        publish_drift(report)
        estimate = estimate_accuracy(pooled, manifest)
        pairs = [
            (f.predicted, f.label)
            for f in self.db.feedback(model=model, version=version, group=group, since=since, until=now)
            if f.predicted is not None
        ]
        realized = realized_accuracy(pairs)
        publish_accuracy(model, version, group, estimate=estimate, realized=realized)
        return GroupStatus(model, version, group, pooled.rows, manifest.snapshot, report, estimate, realized)

    # --- NannyML on row samples -----------------------------------------------------------

    def _nannyml_due(self, now: datetime) -> bool:
        if self.nannyml is None:
            return False
        last = self._nannyml_at
        return last is None or now - last >= timedelta(seconds=self.nannyml.interval_s)

    def _nannyml_pass(
        self, judged: list[tuple[GroupStatus, Manifest]], since: datetime, now: datetime
    ) -> list[Signal]:
        """NannyML over every judged group; the runs replace the last pass's, their alerts returned."""
        self._nannyml_at = now
        self._nannyml_runs = {
            (s.model, s.version, s.group): self._nannyml_run(s, m, since, now) for s, m in judged
        }
        signals = []
        for (model, version, group), run in self._nannyml_runs.items():
            if run.report is not None:
                publish_nannyml(model, version, group, run.report)
                signals += _nannyml_signals(model, version, group, run.report)
        return signals

    def _nannyml_run(
        self, status: GroupStatus, manifest: Manifest, since: datetime, now: datetime
    ) -> NannyMLRun:
        """One group's NannyML run, or why there is none; NannyML's own failures are caught here."""
        assert self.nannyml is not None
        where = f"{status.model} v{status.version} in {status.group}"
        if manifest.compliance != "none":
            return NannyMLRun(now, None, f"compliance {manifest.compliance!r} allows no row samples")
        if self.references is None:
            return NannyMLRun(now, None, "no source of reference rows is configured")
        least = self.nannyml.min_rows
        note = None
        try:
            reference = self.references(manifest)
            # the analysed rows are one chunk: the reference must hold REFERENCE_CHUNKS of them
            fits = len(reference) // REFERENCE_CHUNKS
            if fits < least:
                return NannyMLRun(
                    now,
                    None,
                    f"too few reference rows: {len(reference)} make {REFERENCE_CHUNKS} chunks of "
                    f"{fits} rows, fewer than the {least} NannyML analyses at least (nannyml.min_rows)",
                )
            rows = self._sample_rows(status, since, now)
            if len(rows) < least:
                return NannyMLRun(now, None, f"{len(rows)} sampled rows in the window: NannyML needs {least}")
            cap = min(self.nannyml.max_rows, fits)
            if len(rows) > cap:
                if cap < self.nannyml.max_rows:
                    note = (
                        f"{cap} of {len(rows)} sampled rows analysed: the {len(reference)} reference rows "
                        f"make {REFERENCE_CHUNKS} chunks of {cap}"
                    )
                rows = random.Random(0).sample(rows, cap)  # noqa: S311 (a sample, not a secret)
            started = time.perf_counter()
            report = nannyml_analysis(reference, sample_frame(rows), manifest)
        except NoReferenceRows as exc:
            log.info("NannyML skips %s: %s", where, exc)
            return NannyMLRun(now, None, str(exc))
        except Exception as exc:  # a third party on field data: its failure is this group's alone
            log.exception("NannyML run on %s failed", where)
            return NannyMLRun(now, None, f"NannyML run failed: {type(exc).__name__}: {exc}")
        log.info("NannyML on %s: %d sampled rows in %.1f s", where, len(rows), time.perf_counter() - started)
        return NannyMLRun(now, report, note=note)

    def _sample_rows(self, status: GroupStatus, since: datetime, now: datetime) -> list[SampleRow]:
        """The group's sampled rows in the window (only the batch payloads carry them)."""
        batches = self.db.batches(status.model, status.version, status.group, since, now)
        # a None group filters nothing in the store: keep that group's batches alone
        return [row for b in batches if b.group == status.group for row in b.sample]

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


def _nannyml_signals(model: str, version: int, group: str | None, report: NannyMLReport) -> list[Signal]:
    """The performance estimate's alert as a signal (none without an estimate)."""
    p = report.performance
    if p is None:
        return []
    band = {k: v for k, v in (("lower", p.lower), ("upper", p.upper)) if v is not None}
    return [
        Signal(
            alert=NANNYML_ALERT,
            model=model,
            version=version,
            group=group,
            feature=None,
            firing=p.alert,
            values={p.metric: p.value, "rows": float(report.rows)} | band,
        )
    ]


def _failed(
    failures: dict[tuple[str, int, str | None], str], key: tuple[str, int, str | None], exc: Exception
) -> None:
    """Note one (model, version, group) not judged this round, and why."""
    log.error("drift of %s v%s in %s not judged: %s", *key, exc, exc_info=exc)
    failures[key] = f"{type(exc).__name__}: {exc}"
