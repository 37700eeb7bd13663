"""What the central node asks of its telemetry store: :class:`TelemetryStore`.

:class:`~edgeml.telemetry.db.store.DuckDBStore` is the store, in the caller's process (tools,
tests); :class:`~edgeml.telemetry.process.StoreProcess` serves the same methods from a process
of its own (the central node). Everything above the store (analysis, services, routes) holds a
``TelemetryStore`` and never knows which.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import Any, Protocol

from edgeml.telemetry.schema import (
    CompactResult,
    Device,
    ErasedPredictions,
    FeedbackItem,
    FeedbackRecord,
    Ingested,
    LabelledRow,
    LabelsStored,
    PooledWindow,
    PredictionLogBatch,
    RowsPoint,
    TelemetryBatch,
)

__all__ = ["TelemetryStore"]


class TelemetryStore(Protocol):
    """Telemetry, feedback and the fleet registry of the central node.

    Writes are answered once committed; telemetry is refused with
    :class:`~edgeml.errors.Overloaded` when ``max_queued_batches`` wait, and everything fails
    with :class:`~edgeml.errors.StoreClosed` once the store is closed.
    """

    max_queued_batches: int
    retention_days: int

    # --- lifecycle

    def close(self) -> None:
        """Write everything queued, checkpoint, close. Safe to call twice."""
        ...

    @property
    def queued_batches(self) -> int:
        """Telemetry batches submitted and not answered yet."""
        ...

    def writer_alive(self) -> bool: ...

    # --- telemetry

    def submit(self, batch: TelemetryBatch) -> Future[Ingested]:
        """Queue ``batch``; the future resolves once it is committed (or was stored before).

        The future fails with :class:`~edgeml.errors.BatchConflict` when the id was used with
        a different body.
        """
        ...

    def submit_async(self, batch: TelemetryBatch) -> asyncio.Future[Ingested]:
        """:meth:`submit` for the running event loop: the answer as a future of that loop."""
        ...

    def ingest(self, batch: TelemetryBatch, timeout: float = 30.0) -> Ingested:
        """:meth:`submit` and wait for the commit."""
        ...

    # --- the fleet registry (answered from memory)

    def authenticate(self, token: str) -> Device | None:
        """The active device holding ``token``, or None."""
        ...

    def device(self, device_id: str) -> Device | None: ...

    def devices(self) -> list[Device]:
        """Every device ever registered, decommissioned ones included, by id."""
        ...

    # --- writes and reads in the database

    def register_device(
        self, *, group: str | None, profile: str, model: str, device_id: str | None = None
    ) -> tuple[Device, str]:
        """A new device and its token; the token is shown here once and kept only as a hash."""
        ...

    def decommission(self, device_id: str) -> Device:
        """Retire a device: its token stops working when this returns. Repeating it changes nothing."""
        ...

    def reassign(self, device_id: str, changes: dict[str, str | None]) -> tuple[Device, Device]:
        """Change what a device is enrolled with (``group``, ``model``, ``profile``); (before, after)."""
        ...

    def add_feedback(self, items: list[FeedbackItem], source: str) -> int:
        """Store labels; ``source`` is 'admin' or the device that sent them."""
        ...

    def add_labels(self, items: list[FeedbackItem], source: str) -> LabelsStored:
        """Store labels, skipping a repeat of a stored (prediction id, label); say which join a prediction."""
        ...

    def add_predictions(self, batch: PredictionLogBatch) -> int:
        """Store a device's logged predictions (an id stored before keeps its first row); rows new."""
        ...

    def prediction_traces(self, prediction_ids: list[str]) -> dict[str, str]:
        """The W3C traceparent of each prediction (of those stored and traced)."""
        ...

    def labelled_count(self, model: str, since: datetime | None = None) -> int:
        """How many of :meth:`labelled_rows` there are, without reading them."""
        ...

    def labelled_rows(self, model: str, since: datetime | None = None) -> list[LabelledRow]:
        """Each prediction of ``model`` with a label (the latest), whose label arrived after ``since``."""
        ...

    def compact(self, now: datetime | None = None, models: Mapping[str, int] | None = None) -> CompactResult:
        """Delete telemetry whose window ended, and feedback received, over ``retention_days`` ago
        (``models``: fewer days for these models)."""
        ...

    def erase_predictions(
        self, column: str, value: str | int | float, model: str | None = None
    ) -> ErasedPredictions:
        """Delete the logged predictions whose input ``column`` equals ``value``, their labels, and the
        telemetry row samples whose input matches."""
        ...

    def probe_write(self, timeout: float = 5.0) -> None:
        """Commit a tiny write: raises unless the database accepts writes within ``timeout``."""
        ...

    def batches(
        self,
        model: str | None = None,
        version: int | None = None,
        group: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        device: str | None = None,
    ) -> list[TelemetryBatch]:
        """Stored batches whose window ended in (``since``, ``until``], oldest window first.

        Consecutive ranges thus never share a batch. Filters left as None match everything.
        """
        ...

    def pooled_windows(
        self,
        window: timedelta | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
        version: int | None = None,
        group: str | None = None,
    ) -> list[PooledWindow] | None:
        """The batches :meth:`batches` selects, pooled by the database; None when it cannot."""
        ...

    def profiles(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> dict[tuple[str, int], str]:
        """(model, version) -> a firmware profile that sent batches in (``since``, ``until``]."""
        ...

    def fetch(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows of a read-only query (diagnostics, tests); it sees what is committed."""
        ...

    def batch_count(self) -> int: ...

    def rows_over_time(self, since: datetime, bucket: timedelta) -> list[RowsPoint]:
        """Rows predicted per device group per time bucket (by window end), since ``since``."""
        ...

    def feedback(
        self,
        model: str | None = None,
        version: int | None = None,
        group: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[FeedbackRecord]:
        """Labels received in (``since``, ``until``], the latest per prediction id, with the device group."""
        ...
