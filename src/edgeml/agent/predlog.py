"""Prediction ids, and the bounded log a label is later joined with.

Every answer of the agent carries an id: the client's OIP v2 ``id`` when it gave one, else one
made here (:func:`new_prediction_id`: a random per-process prefix and a counter, so ids are
unique across devices without a lock or a uuid per request). A label refers to a row by its
*prediction id*: the answer's id for a one-row request, ``<id>/<row>`` (row from 0) for row
``row`` of a larger one (:func:`row_ids`).

:class:`PredictionLog` keeps what a label needs to be joined, within the model's compliance
mode: the whole input row under ``none``; under ``gdpr``, ``hipaa`` and ``sox`` only the inputs
that are not ``pii`` (the manifest flags them). The serving path only appends references to a
bounded deque; rows are built off the path, when :meth:`PredictionLog.take` hands a batch to
:class:`PredictionShipper`, which posts it to the central node's ``/v1/predictions``. What the
central node has not acknowledged stays in the log; when the log is full the oldest entries go
first, counted (``dropped_before`` of the next batch).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from itertools import count
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from edgeml.observability import TRACING
from edgeml.telemetry.schema import LoggedPrediction, PredictionLogBatch

if TYPE_CHECKING:
    from edgeml.agent.model import LoadedModel

__all__ = ["PredictionLog", "PredictionShipper", "new_prediction_id", "row_ids"]

log = logging.getLogger("edgeml.agent.predlog")

_PREFIX = secrets.token_hex(8)
_COUNTER = count(1)
#: a logged text input is cut to this many characters
TEXT_CHARS = 1000
#: longest wait before a central node that failed is tried again (seconds)
MAX_BACKOFF_S = 60.0


def new_prediction_id() -> str:
    """A fresh id, unique across processes and devices (64 random bits, then a counter)."""
    return f"{_PREFIX}-{next(_COUNTER):x}"


def row_ids(answer_id: str, rows: int) -> list[str]:
    """The prediction ids of an answer's rows: its id for one row, ``<id>/<row>`` for more."""
    return [answer_id] if rows == 1 else [f"{answer_id}/{i}" for i in range(rows)]


def _traceparent() -> str | None:
    """The current span as a W3C traceparent, if it is sampled."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


def _value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and len(value) > TEXT_CHARS:
        return value[:TEXT_CHARS]
    return value


def _predictions(outputs: Mapping[str, np.ndarray], rows: int) -> list[Any]:
    """Per row: the label a classifier gave, else the first output's value (None if not a scalar)."""
    array = outputs.get("label")
    if array is None and outputs:
        array = next(iter(outputs.values()))
    if array is None or array.size != rows:
        return [None] * rows
    values = array.ravel().tolist()
    return [str(v) if array.dtype.kind in "OUS" or "label" in outputs else _value(v) for v in values]


class PredictionLog:
    """Answered rows awaiting shipment to the central node; thread-safe, at most ``capacity`` requests."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        # (prediction id, model, columns, outputs, rows, when, traceparent): references only, on
        # the serving path
        self._entries: deque[
            tuple[str, LoadedModel, Mapping[str, Any], Mapping[str, np.ndarray], int, datetime, str | None]
        ]
        self._entries = deque()
        self._lock = threading.Lock()
        self.dropped = 0  # entries let go because the log was full, not yet reported

    def record(
        self,
        answer_id: str,
        model: LoadedModel,
        columns: Mapping[str, Any],
        outputs: Mapping[str, Any],
        rows: int,
    ) -> None:
        """One answered request (called on the serving path: an append)."""
        entries = self._entries
        if len(entries) >= self.capacity:
            with self._lock:
                while len(entries) >= self.capacity:
                    entries.popleft()
                    self.dropped += 1
        traced = None if TRACING.provider is None else _traceparent()
        entries.append((answer_id, model, columns, outputs, rows, datetime.now(UTC), traced))

    def __len__(self) -> int:
        return len(self._entries)

    def _rows(self, entry: tuple[Any, ...]) -> Iterator[LoggedPrediction]:
        answer_id, model, columns, outputs, rows, at, traced = entry
        manifest = model.manifest
        kept = [f.name for f in manifest.inputs if manifest.compliance == "none" or not f.pii]
        predicted = _predictions(outputs, rows)
        for i, pid in enumerate(row_ids(answer_id, rows)):
            yield LoggedPrediction(
                prediction_id=pid,
                model=model.name,
                version=model.version,
                at=at,
                inputs={name: _value(columns[name][i]) for name in kept if name in columns},
                prediction=predicted[i],
                traceparent=traced,
            )

    def take(self, device_id: str, limit: int = 1000) -> tuple[PredictionLogBatch, list[Any]] | None:
        """A batch of the oldest entries (about ``limit`` rows), taken out of the log; None if empty.

        Give the entries back with :meth:`put_back` if the batch did not arrive.
        """
        with self._lock:
            entries: list[Any] = []
            rows = 0
            while self._entries and (not entries or rows + self._entries[0][4] <= limit):
                entry = self._entries.popleft()
                entries.append(entry)
                rows += entry[4]
            if not entries:
                return None
            dropped, self.dropped = self.dropped, 0
        predictions = [row for entry in entries for row in self._rows(entry)]
        batch = PredictionLogBatch(
            device_id=device_id, batch_id=uuid.uuid4().hex, predictions=predictions, dropped_before=dropped
        )
        return batch, entries

    def put_back(self, batch: PredictionLogBatch, entries: list[Any]) -> None:
        """A batch that did not arrive: its entries go back first, as far as the log has room."""
        with self._lock:
            room = max(0, self.capacity - len(self._entries))
            kept = entries[len(entries) - room :] if room < len(entries) else entries
            self._entries.extendleft(reversed(kept))
            self.dropped += batch.dropped_before + len(entries) - len(kept)


class PredictionShipper:
    """Posts the log's batches to the central node's ``/v1/predictions``; failures leave them in the log."""

    def __init__(
        self, predlog: PredictionLog, device_id: str, central_url: str, token: str, *, timeout_s: float = 10.0
    ) -> None:
        self.predlog = predlog
        self.device_id = device_id
        self.url = central_url.rstrip("/") + "/v1/predictions"
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            follow_redirects=False,
        )
        self._failures = 0
        self._next_try = 0.0  # time.monotonic() before which a failed central is not tried again

    def _failed(self) -> None:
        self._failures += 1
        self._next_try = time.monotonic() + min(MAX_BACKOFF_S, 2.0 ** min(self._failures, 10))

    def ship(self, max_batches: int = 10) -> int:
        """Send up to ``max_batches`` batches; rows the central node took.

        Stops at the first failure, and after one waits (doubling, up to :data:`MAX_BACKOFF_S`)
        before trying again, so a central node that is down does not hold up the caller's loop.
        """
        sent = 0
        if time.monotonic() < self._next_try:
            return 0
        for _ in range(max_batches):
            taken = self.predlog.take(self.device_id)
            if taken is None:
                break
            batch, entries = taken
            try:
                response = self._client.post(self.url, content=batch.model_dump_json().encode())
            except httpx.TransportError as exc:
                log.info("prediction log: central unreachable (%s); kept for later", exc)
                self.predlog.put_back(batch, entries)
                self._failed()
                break
            status = response.status_code
            if 400 <= status < 500 and status not in (401, 403, 429):
                log.warning(
                    "prediction log: batch refused (HTTP %d: %s); dropped", status, response.text[:300]
                )
                continue
            if not 200 <= status < 300:
                log.info("prediction log: central answered HTTP %d; kept for later", status)
                self.predlog.put_back(batch, entries)
                self._failed()
                break
            self._failures = 0
            sent += len(batch.predictions)
        return sent

    def close(self) -> None:
        self._client.close()
