"""Telemetry batches as an agent sends them, for the tests of the store and of the central node."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from edgeml.bundle.manifest import Histogram
from edgeml.bundle.reference import PROBABILITY_EDGES
from edgeml.telemetry.schema import LATENCY_EDGES, CalibratedSums, FeatureTelemetry, TelemetryBatch

__all__ = ["make_batch"]


def make_batch(
    device_id: str = "dev-1",
    *,
    group: str | None = None,
    model: str = "pump",
    version: int = 1,
    window_end: datetime | None = None,
    rows: int = 10,
    dropped_before: int = 0,
) -> TelemetryBatch:
    """A batch with two features, predictions and calibrated sums, as an agent sends them."""
    end = window_end or datetime.now(UTC)
    return TelemetryBatch(
        device_id=device_id,
        batch_id=uuid.uuid4().hex,
        model=model,
        version=version,
        profile="x86-64-generic",
        group=group,
        window_start=end - timedelta(minutes=1),
        window_end=end,
        rows=rows,
        requests=rows,
        errors={"bad_input": 1},
        features={
            "a": FeatureTelemetry(edges=[0.0, 1.0], counts=[1, rows - 2, 1], missing=0, out_of_range=1),
            "machine": FeatureTelemetry(values=["m1", "m2"], counts=[rows - 1, 1, 0]),
        },
        predictions={"ok": rows - 2, "fault": 2},
        # a score the reference has no histogram for: the agent counts it on PROBABILITY_EDGES
        scores={"probability:ok": Histogram(edges=PROBABILITY_EDGES, counts=[2] + [0] * 8 + [rows - 2])},
        calibration=CalibratedSums(
            sums={"ok": rows * 0.7, "fault": rows * 0.3}, expected_correct=rows * 0.8, rows=rows
        ),
        latency=Histogram(edges=LATENCY_EDGES, counts=[rows] + [0] * len(LATENCY_EDGES)),
        dropped_before=dropped_before,
    )
