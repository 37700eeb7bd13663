"""Alerts: drift breaches and accuracy drops as webhook POSTs, firing once and resolved once.

Each evaluation turns results into :class:`Signal`\\ s (firing or not), and
:meth:`Alerter.process` decides what to send:

- a signal that starts firing is POSTed as ``status: "firing"``;
- while it keeps firing nothing more is sent, except a reminder every ``repeat_after_s``;
- when a firing alert's signal comes back clear, ``status: "resolved"`` is POSTed and it is
  forgotten;
- a signal not evaluated this time changes nothing;
- an alert that clears before its firing message got through is dropped without a word.

The body (JSON) carries ``alert``, ``status``, ``model``, ``version``, ``group``,
``feature``, ``values``, ``thresholds``, ``started_at``, ``ended_at`` (resolved only),
``sent_at`` and ``fingerprint``: a digest of (alert, model, version, group, feature), the
same for every message about one alert, so receivers can group them. Delivery retries
timeouts, connection errors, 429 and 5xx with exponential backoff (honouring a short
``Retry-After``); another 4xx is final. A delivery that failed is tried again at the next
evaluation. State is in memory: after a restart, alerts still firing are sent once more.

:meth:`Alerter.notify` sends a one-off ``status: "event"`` (a canary promoted or rolled back)
with the same retries; events are not deduplicated or resolved.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from edgeml.central.drift import DriftReport
from edgeml.central.performance import AccuracyEstimate
from edgeml.observability import track_alert_sent

__all__ = [
    "ACCURACY_ALERT",
    "DRIFT_ALERT",
    "Alerter",
    "Delivery",
    "Signal",
    "accuracy_signal",
    "drift_signals",
]

DRIFT_ALERT = "EdgemlFeatureDrift"
ACCURACY_ALERT = "EdgemlEstimatedAccuracyDrop"
#: a Retry-After longer than this is not waited for: the next evaluation retries
MAX_RETRY_AFTER_S = 30.0

Status = Literal["firing", "resolved", "event"]


@dataclass(frozen=True)
class Signal:
    """One alert condition as last evaluated."""

    alert: str
    model: str
    version: int
    group: str | None
    feature: str | None
    firing: bool
    values: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        key = "\x1f".join([self.alert, self.model, str(self.version), self.group or "", self.feature or ""])
        return hashlib.sha256(key.encode()).hexdigest()[:32]


def drift_signals(report: DriftReport) -> list[Signal]:
    """One signal per feature of a drift report, firing when its deciding method breached."""
    return [
        Signal(
            alert=DRIFT_ALERT,
            model=report.model,
            version=report.version,
            group=report.group,
            feature=f.feature,
            firing=f.breached,
            values={s.method: s.value for s in f.scores} | {"rows": float(f.rows)},
            thresholds={s.method: s.threshold for s in f.scores},
        )
        for f in report.features
    ]


def accuracy_signal(estimate: AccuracyEstimate) -> Signal:
    """The estimated-accuracy alarm as a signal."""
    thresholds = {} if estimate.reference is None else {"accuracy": estimate.reference - estimate.tolerance}
    return Signal(
        alert=ACCURACY_ALERT,
        model=estimate.model,
        version=estimate.version,
        group=estimate.group,
        feature=None,
        firing=estimate.alarm,
        values={"estimated_accuracy": estimate.estimated, "rows": float(estimate.rows)}
        | ({} if estimate.reference is None else {"reference_accuracy": estimate.reference}),
        thresholds=thresholds,
    )


@dataclass(frozen=True)
class Delivery:
    """One webhook message and how it went."""

    fingerprint: str
    status: Status
    ok: bool
    attempts: int
    error: str | None = None


@dataclass
class _Active:
    signal: Signal
    started_at: datetime
    last_sent: float | None = None  # clock time of the last delivered firing message


class Alerter:
    """Sends webhook messages for signals; see the module docstring for the rules."""

    def __init__(
        self,
        url: str,
        *,
        repeat_after_s: float = 4 * 3600.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        timeout_s: float = 5.0,
        headers: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.repeat_after_s = repeat_after_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self._sleep = sleep
        self._client = httpx.Client(timeout=timeout_s, headers=headers)
        self._active: dict[str, _Active] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Alerter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def firing(self) -> list[Signal]:
        """Alerts currently firing (sent or waiting to be)."""
        with self._lock:
            return [a.signal for a in self._active.values()]

    def process(self, signals: Iterable[Signal]) -> list[Delivery]:
        """Send what the signals call for; the deliveries made, in order."""
        out = []
        with self._lock:  # one evaluation at a time, so an alert is never sent twice at once
            for signal in signals:
                delivery = self._handle(signal)
                if delivery is not None:
                    out.append(delivery)
        return out

    def _handle(self, signal: Signal) -> Delivery | None:
        key = signal.fingerprint
        active = self._active.get(key)
        now = self._clock()
        if signal.firing:
            if active is None:
                active = self._active[key] = _Active(signal, datetime.now(UTC))
            else:
                active.signal = signal
            due = active.last_sent is None or now - active.last_sent >= self.repeat_after_s
            if not due:
                return None
            delivery = self._send(active, "firing")
            if delivery.ok:
                active.last_sent = now
            return delivery
        if active is None:
            return None
        if active.last_sent is None:  # it cleared before anyone heard it fired: say nothing
            del self._active[key]
            return None
        active.signal = signal
        delivery = self._send(active, "resolved")
        if delivery.ok:
            del self._active[key]
        return delivery

    def _payload(self, active: _Active, status: Status) -> dict[str, Any]:
        s = active.signal
        now = datetime.now(UTC)
        return {
            "alert": s.alert,
            "status": status,
            "model": s.model,
            "version": s.version,
            "group": s.group,
            "feature": s.feature,
            "values": s.values,
            "thresholds": s.thresholds,
            "started_at": active.started_at.isoformat(),
            "ended_at": now.isoformat() if status == "resolved" else None,
            "sent_at": now.isoformat(),
            "fingerprint": s.fingerprint,
        }

    def notify(self, payload: dict[str, Any]) -> Delivery:
        """Send a one-off event (``payload`` plus ``status: "event"`` and ``sent_at``)."""
        body = payload | {"status": "event", "sent_at": datetime.now(UTC).isoformat()}
        body.setdefault("fingerprint", hashlib.sha256(repr(sorted(body.items())).encode()).hexdigest()[:16])
        with self._lock:
            return self._deliver(body, "event")

    def _send(self, active: _Active, status: Status) -> Delivery:
        return self._deliver(self._payload(active, status), status)

    def _deliver(self, payload: dict[str, Any], status: Status) -> Delivery:
        error = None
        attempt = 0
        for attempt in range(1, self.retries + 2):
            wait = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
            try:
                response = self._client.post(self.url, json=payload)
            except httpx.HTTPError as exc:  # timeouts, refused connections, broken transfers
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    track_alert_sent(status, "ok")
                    return Delivery(payload["fingerprint"], status, True, attempt)
                error = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    break  # the receiver refuses this message: sending it again will not help
                wait = max(wait, _retry_after(response))
            if attempt <= self.retries:
                self._sleep(wait)
        track_alert_sent(status, "failed")
        return Delivery(payload["fingerprint"], status, False, attempt, error)


def _retry_after(response: httpx.Response) -> float:
    """A Retry-After in seconds, capped at MAX_RETRY_AFTER_S; 0 when absent or a date."""
    try:
        return min(max(float(response.headers.get("retry-after", "0")), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0
