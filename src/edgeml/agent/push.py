"""Delivering spooled telemetry to the central node, at least once.

Each batch is one ``POST {central}/v1/telemetry`` with the device token; it leaves the
spool only after a 2xx, so a crash or a lost response means it is sent again, and the
central node keeps one copy per ``batch_id``. 5xx, 429 and transport errors (central down,
timeouts) are retried with exponential backoff and jitter, or after ``Retry-After`` when the
server names a time. Any other 4xx says the batch itself is unacceptable and sending it
again cannot help, so it is dropped and logged, except 401 and 403: those say the device's
token is wrong or revoked, which is not the batch's fault, so the batches are kept until
an operator fixes the token.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Literal

import httpx

from edgeml.agent.spool import Spool
from edgeml.agent.supervise import Supervisor
from edgeml.observability import track_telemetry_sent
from edgeml.telemetry.schema import TelemetryBatch

__all__ = ["DrainResult", "TelemetryPusher", "parse_retry_after"]

log = logging.getLogger("edgeml.agent.telemetry")

#: a Retry-After longer than this is cut to it: telemetry must not stall for hours on one header
MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True)
class DrainResult:
    sent: int = 0
    rejected: int = 0
    retry_in: float | None = None  # seconds to wait before the next attempt; None: nothing to wait for


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait per ``Retry-After`` (delta-seconds or HTTP date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class TelemetryPusher:
    """Drains a :class:`Spool` to the central node: ``drain_once()``, or a thread (``start``/``stop``)."""

    def __init__(
        self,
        spool: Spool,
        central_url: str,
        token: str,
        *,
        interval_s: float = 5.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        timeout_s: float = 10.0,
        chunk: int = 16,
    ) -> None:
        self.spool = spool
        self.url = central_url.rstrip("/") + "/v1/telemetry"
        self.interval_s = interval_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.chunk = chunk
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            follow_redirects=False,
        )
        self._failures = 0  # consecutive failed attempts: the backoff exponent
        self.supervisor = Supervisor("telemetry-push", backoff_s=backoff_s, max_backoff_s=max_backoff_s)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def drain_once(self) -> DrainResult:
        """Send spooled batches, oldest first, until the spool is empty, an attempt must wait, or stop()."""
        sent = rejected = 0
        while batches := self.spool.peek(self.chunk):
            for batch in batches:
                if self._stop.is_set():
                    return DrainResult(sent, rejected)
                if not self.spool.claim(batch.batch_id):
                    continue  # dropped (and counted) since the peek: it must not arrive too
                outcome = self._send(batch)
                if outcome == "ok":
                    sent += 1
                elif outcome == "rejected":
                    rejected += 1
                else:
                    self.spool.release()
                    return DrainResult(sent, rejected, outcome)
        return DrainResult(sent, rejected)

    def _send(self, batch: TelemetryBatch) -> Literal["ok", "rejected"] | float:
        """One attempt: delivered, rejected (both leave the spool), or seconds to wait before retrying."""
        try:
            response = self._client.post(self.url, content=batch.model_dump_json().encode())
        except httpx.TransportError as exc:
            log.info("telemetry: central unreachable (%s); batches stay in the spool", exc)
            return self._retry(None)
        status = response.status_code
        if 200 <= status < 300:
            self.spool.ack(batch.batch_id)
            track_telemetry_sent("ok")
            self._failures = 0
            return "ok"
        if status in (401, 403):
            log.error(
                "telemetry: central refuses this device's token (HTTP %d: %s); batches are kept",
                status,
                response.text[:500],
            )
            return self._retry(None, floor=self.max_backoff_s / 2)
        if 400 <= status < 500 and status != 429:
            log.warning(
                "telemetry: central rejected batch %s (HTTP %d: %s); it is dropped",
                batch.batch_id,
                status,
                response.text[:500],
            )
            self.spool.ack(batch.batch_id)
            track_telemetry_sent("rejected")
            return "rejected"
        log.info("telemetry: central answered HTTP %d; will retry", status)
        return self._retry(parse_retry_after(response.headers.get("Retry-After")))

    def _retry(self, retry_after: float | None, floor: float = 0.0) -> float:
        """Seconds until the next attempt: the server's Retry-After, or exponential backoff with jitter."""
        track_telemetry_sent("retry")
        self._failures += 1
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** min(self._failures - 1, 30))
        # "equal jitter": devices that lost the central together do not all come back at once,
        # and none retries sooner than half the backoff
        return float(max(floor, ceiling / 2 + random.uniform(0, ceiling / 2)))  # noqa: S311 (not crypto)

    def wake(self) -> None:
        """New batches are in the spool: send them now, not at the next interval (backoff still holds)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edgeml-telemetry-push", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread: at once when it waits; an attempt in flight ends within the HTTP timeout."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self._client.close()

    def __enter__(self) -> TelemetryPusher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            # the spool or a bug: logged once, counted, retried after a backoff; never ends the thread
            result = self.supervisor.call(self.drain_once) or DrainResult(retry_in=self.supervisor.backoff())
            if result.retry_in is not None:
                self._stop.wait(result.retry_in)  # backoff: only stop() cuts it short
            else:
                self._wake.wait(self.interval_s)
            self._wake.clear()
