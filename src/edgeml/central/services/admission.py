"""What one device may send: the checks a batch passes, past its token, before it is stored.

A device's token proves who sends, not what it may claim: these bound what one device can do
to the rest of the fleet (docs/security.md, "compromised device token").

- its batches are about the group, model and profile it was enrolled with (403 otherwise);
- their windows are real times near the server's clock (422 otherwise), so nothing stored
  overflows a date computation later or sorts ahead of every honest batch;
- their histograms are on the bins of the version's reference (422 otherwise), so the
  monitor never pools batches that disagree;
- it sends at most ``device_batches_per_s`` sustained, ``device_burst`` at once (429).
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from edgeml.bundle.manifest import CategoryCounts, Histogram, Manifest
from edgeml.bundle.reference import PROBABILITY_EDGES
from edgeml.central.config import LimitsConfig
from edgeml.errors import Forbidden, InvalidRequest, RateLimited
from edgeml.telemetry.schema import Device, TelemetryBatch

__all__ = ["EARLIEST", "DeviceRateLimiter", "check_bins", "check_claims", "check_window"]

#: windows starting before this are a device whose clock was never set (1970), or garbage
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def check_claims(batch: TelemetryBatch, device: Device) -> None:
    """Forbidden, naming the field, when ``batch`` claims a group, model or profile not the device's."""
    for name, claimed, enrolled in (
        ("group", batch.group, device.group),
        ("model", batch.model, device.model),
        ("profile", batch.profile, device.profile),
    ):
        if claimed != enrolled:
            raise Forbidden(
                f"{name}: device {device.device_id} is enrolled with {name} {enrolled!r}, "
                f"this batch claims {claimed!r} (an admin changes it: PATCH /v1/devices/{device.device_id})"
            )


def check_window(batch: TelemetryBatch, limits: LimitsConfig, now: datetime | None = None) -> None:
    """InvalidRequest naming each bad field of the batch's window."""
    now = now or datetime.now(UTC)
    errors: list[dict[str, Any]] = []

    def bad(field: str, msg: str, kind: str) -> None:
        errors.append({"loc": ["body", field], "msg": msg, "type": kind})

    start = _utc(batch.window_start)
    end = _utc(batch.window_end)
    if start is None:
        bad("window_start", "is not a representable UTC time", "datetime_out_of_range")
    elif start < EARLIEST:
        bad("window_start", f"is before {EARLIEST.date()}: the device's clock is not set", "datetime_too_old")
        start = None  # one error for the field
    if end is None:
        bad("window_end", "is not a representable UTC time", "datetime_out_of_range")
    elif end > now + timedelta(seconds=limits.clock_skew_s):
        bad(
            "window_end",
            f"is {(end - now).total_seconds():.0f} s after the server's clock "
            f"(limits.clock_skew_s allows {limits.clock_skew_s:g})",
            "datetime_in_future",
        )
    if start is not None and end is not None:
        if start > end:
            bad("window_start", "is after window_end", "window_reversed")
        elif (end - start).total_seconds() > limits.max_window_s:
            bad(
                "window_start",
                f"the window is {(end - start).total_seconds():.0f} s long "
                f"(limits.max_window_s allows {limits.max_window_s:g})",
                "window_too_long",
            )
    if errors:
        raise InvalidRequest(errors)


def check_bins(batch: TelemetryBatch, manifest: Manifest) -> None:
    """InvalidRequest naming each histogram of ``batch`` not on the bins of ``manifest``'s reference.

    What the agent sends (:mod:`edgeml.agent.telemetry`): an input with a reference on its edges
    or values, one count per bin; an input without one, no counts; a score on its reference's
    edges, or on PROBABILITY_EDGES when the reference has none.
    """
    ref = manifest.reference
    errors: list[dict[str, Any]] = []
    for name, feature in batch.features.items():
        expected = ref.features.get(name)
        loc = ["body", "features", name]
        if expected is None:
            if feature.counts or feature.edges is not None or feature.values is not None:
                errors.append(
                    _bins(loc, f"{manifest.model} v{manifest.version} has no reference for {name!r}")
                )
            continue
        edges = expected.edges if isinstance(expected, Histogram) else None
        values = expected.values if isinstance(expected, CategoryCounts) else None
        if (feature.edges, feature.values) != (edges, values):
            errors.append(_bins(loc, "not the bins of the version's reference"))
        elif len(feature.counts) != len(expected.counts):
            errors.append(
                _bins(
                    [*loc, "counts"],
                    f"{len(feature.counts)} counts, the reference has {len(expected.counts)}",
                )
            )
    for key, hist in batch.scores.items():
        reference = ref.scores.get(key)
        edges = reference.edges if reference is not None else PROBABILITY_EDGES
        if hist.edges != edges or len(hist.counts) != len(edges) + 1:
            errors.append(_bins(["body", "scores", key], "not the bins of the version's reference"))
    if errors:
        raise InvalidRequest(errors)


def _bins(loc: list[str], msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": "reference_bins"}


def _utc(value: datetime) -> datetime | None:
    """``value`` in UTC; None when UTC cannot hold it (year 1 at +14:00, year 9999 at -14:00)."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return None


class DeviceRateLimiter:
    """A token bucket per device: ``burst`` batches at once, refilled at ``rate`` a second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # device -> (tokens, at)
        self._lock = threading.Lock()  # the route may run in FastAPI's threads too

    @classmethod
    def of(cls, limits: LimitsConfig) -> DeviceRateLimiter:
        return cls(limits.device_batches_per_s, limits.device_burst)

    def take(self, device_id: str, now: float | None = None) -> None:
        """Spend one of the device's tokens; RateLimited, with when to retry, when it has none."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(device_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[device_id] = (tokens, now)
                wait = max(1, math.ceil((1.0 - tokens) / self.rate))
                raise RateLimited(
                    f"device {device_id} sent more than {self.rate:g} batches/s "
                    f"(burst {self.burst}; limits.device_batches_per_s)",
                    retry_after_s=wait,
                )
            self._buckets[device_id] = (tokens - 1.0, now)

    def forget(self, device_id: str) -> None:
        with self._lock:
            self._buckets.pop(device_id, None)
