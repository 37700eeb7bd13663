"""Telemetry windows: what a device saw, counted on the manifest's reference bins.

The serving path calls :meth:`TelemetryWindow.observe` on every answered request, so it only
appends references to the request's columns and outputs to a queue; a counting thread drains
it and, every :data:`BUFFER_ROWS` rows (and when a window closes), counts them in bulk with
numpy, with the binning functions the bundle builder used for the reference statistics
(:mod:`edgeml.bundle.reference`), so a device histogram and the reference histogram differ
only when the data does.

A window is about one model version: it closes after ``window_s`` seconds, after
``window_rows`` rows, or when a new model is swapped in. Requests that were already running
on the old model when it was swapped out still count, in a window of their own, so for a
moment two windows can be open. :meth:`TelemetryWindow.collect` hands over the closed ones
(call it every second or so: it also closes windows whose time is up, when no request
comes to do it); :meth:`TelemetryWindow.flush` closes everything first. The batches then go
to the on-disk :class:`~edgeml.agent.spool.Spool`, which
:class:`~edgeml.agent.push.TelemetryPusher` drains to the central node. What a batch holds
is the wire contract, :mod:`edgeml.telemetry.schema`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeml.agent.inputs import RowColumns
from edgeml.agent.suppress import suppress
from edgeml.bundle.manifest import CategoryCounts, Histogram, InputField, Manifest
from edgeml.bundle.reference import PROBABILITY_EDGES, bin_counts, category_counts
from edgeml.observability import TELEMETRY_DROPPED
from edgeml.telemetry.schema import LATENCY_EDGES, CalibratedSums, FeatureTelemetry, SampleRow, TelemetryBatch

if TYPE_CHECKING:
    from edgeml.agent.model import Answered, Columns, Failed, LoadedModel

__all__ = ["BUFFER_ROWS", "COUNT_INTERVAL_S", "MAX_PENDING", "TelemetryWindow", "count_values"]

log = logging.getLogger("edgeml.agent.telemetry")

#: rows kept as references before they are counted in bulk
BUFFER_ROWS = 512
#: closed batches held for :meth:`TelemetryWindow.collect`; beyond, the oldest is dropped
MAX_CLOSED = 1000
#: a sampled text value is cut to this many characters
SAMPLE_TEXT_CHARS = 1000


def _is_missing(value: Any) -> bool:
    """None or a float NaN: what :func:`category_counts` calls missing."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if _is_missing(value):
        return None
    if isinstance(value, str) and len(value) > SAMPLE_TEXT_CHARS:
        return value[:SAMPLE_TEXT_CHARS]
    return value


def _inputs(
    columns: Sequence[Columns], outputs: Sequence[Mapping[str, np.ndarray]], names: list[str]
) -> dict[str, Any]:
    """Each input's values over the buffered requests' columns, in request order."""
    first = columns[0]
    if type(first) is RowColumns and list(first.names) == names:
        # one-row requests of the fast path, the usual traffic: one transposition of their rows
        same = [c.row for c in columns if type(c) is RowColumns and c.names is first.names]
        if len(same) == len(columns):
            return dict(zip(names, zip(*same, strict=True), strict=True))
    rows = [_rows(c, o) for c, o in zip(columns, outputs, strict=True)]
    return {
        name: _gather([c[name] if name in c else [None] * n for c, n in zip(columns, rows, strict=True)])
        for name in names
    }


def _rows(columns: Columns, outputs: Mapping[str, np.ndarray]) -> int:
    """Rows of one answered request."""
    if type(columns) is RowColumns:
        return 1
    return len(next(iter(outputs.values()))) if outputs else 0


def _gather(parts: Sequence[Sequence[Any] | np.ndarray]) -> list[Any] | np.ndarray:
    """One column from the buffered requests' columns."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate([np.ravel(p) for p in parts])
    return list(chain.from_iterable(parts))


def _text_length(value: Any) -> int:
    """Length of a non-str text value; -1 when missing."""
    return -1 if _is_missing(value) else len(str(value))


def _floats(values: list[Any] | np.ndarray) -> np.ndarray:
    """Numeric values as float64, None -> NaN."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):  # a stray non-number: count it as missing, never fail a request
        out = np.full(len(values), np.nan)
        for i, v in enumerate(values):
            with contextlib.suppress(TypeError, ValueError):
                out[i] = float(v)
        return out


class _FeatureCounts:
    """Running counts of one input."""

    def __init__(self, field: InputField, reference: Histogram | CategoryCounts | None) -> None:
        self.field = field
        self.reference = reference
        size = 0 if reference is None else len(reference.counts)
        self.counts = np.zeros(size, dtype=np.int64)
        self.missing = 0
        self.out_of_range = 0
        self.allowed = set(field.values) if field.values is not None else None
        # usually the reference lists exactly the allowed values: then "other" is what is out of range
        self.other_is_out_of_range = isinstance(reference, CategoryCounts) and self.allowed == set(
            reference.values
        )

    def add(self, values: list[Any] | np.ndarray) -> None:
        ref, field = self.reference, self.field
        if isinstance(ref, Histogram) and field.kind == "text":
            raw = np.array([len(v) if type(v) is str else _text_length(v) for v in values], dtype=np.float64)
            self.missing += int((raw < 0).sum())
            # the reference counts fillna("").str.len(): a missing text is length 0 there too
            self.counts += bin_counts(ref.edges, np.maximum(raw, 0))[0]
        elif isinstance(ref, Histogram) or (ref is None and field.kind == "numeric"):
            numbers = _floats(values)
            if ref is None:
                self.missing += int(np.isnan(numbers).sum())
            else:
                counts, missing = bin_counts(ref.edges, numbers)
                self.counts += counts
                self.missing += missing
            outside = np.zeros(numbers.shape, dtype=bool)
            if field.min is not None:
                outside |= numbers < field.min
            if field.max is not None:
                outside |= numbers > field.max
            self.out_of_range += int(outside.sum())
        else:
            if ref is None:
                self.missing += sum(1 for v in values if _is_missing(v))
            else:
                items = values.tolist() if isinstance(values, np.ndarray) else values
                counts, missing = category_counts(ref.values, items)
                self.counts += counts
                self.missing += missing
                if self.other_is_out_of_range:
                    self.out_of_range += counts[-1]
                    return
            if self.allowed is not None:
                allowed = self.allowed
                self.out_of_range += sum(1 for v in values if not _is_missing(v) and str(v) not in allowed)

    def result(self) -> FeatureTelemetry:
        ref = self.reference
        return FeatureTelemetry(
            edges=ref.edges if isinstance(ref, Histogram) else None,
            values=ref.values if isinstance(ref, CategoryCounts) else None,
            counts=self.counts.tolist(),
            missing=self.missing,
            out_of_range=self.out_of_range,
        )


def count_values(
    field: InputField, reference: Histogram | CategoryCounts | None, values: list[Any] | np.ndarray
) -> FeatureTelemetry:
    """``values`` of one input counted as a window counts them (``edgeml drift run`` backtests with it)."""
    counts = _FeatureCounts(field, reference)
    counts.add(values)
    return counts.result()


class _Window:
    """One model version's open window: buffered requests and the running counts."""

    def __init__(
        self,
        model: LoadedModel,
        deadline: float,
        sample_rows: int,
        rng: np.random.Generator,
        *,
        started: datetime | None = None,
    ) -> None:
        manifest: Manifest = model.manifest
        self.model = weakref.ref(model)  # a window must not keep a swapped-out runtime in memory
        self.key = id(model)
        self.manifest = manifest
        self.started = started or datetime.now(UTC)
        self.deadline = deadline
        self.rows = 0
        self.requests = 0
        self.errors: Counter[str] = Counter()
        # answered requests as handed over: (model, columns, outputs, latency, monotonic time)
        self.buffer: list[tuple[Any, ...]] = []
        self.buffered = 0

        ref = manifest.reference
        self.features = {f.name: _FeatureCounts(f, ref.features.get(f.name)) for f in manifest.inputs}
        labels = manifest.outputs.labels or []
        names = manifest.outputs.names
        self.labels = labels
        self.label_array = np.array([*labels, None], dtype=object)
        self.proba_name = "probabilities" if labels and "probabilities" in names else None
        self.value_name = None if self.proba_name or not names else names[0]
        self.score_edges: dict[str, list[float]] = {}
        if self.proba_name:
            for label in labels:
                key = f"probability:{label}"
                self.score_edges[key] = ref.scores[key].edges if key in ref.scores else PROBABILITY_EDGES
        elif "prediction" in ref.scores:
            self.score_edges["prediction"] = ref.scores["prediction"].edges
        self.scores = {k: np.zeros(len(e) + 1, dtype=np.int64) for k, e in self.score_edges.items()}
        self.score_missing = dict.fromkeys(self.score_edges, 0)
        self.predictions: Counter[str] = Counter()
        cal = ref.calibration
        self.calibration = (
            cal if cal is not None and self.proba_name and all(lb in cal.values for lb in labels) else None
        )
        self.calibrated = np.zeros(len(labels))
        self.expected_correct = 0.0
        self.calibrated_rows = 0
        self.latency = np.zeros(len(LATENCY_EDGES) + 1, dtype=np.int64)

        self.sample_rows = sample_rows if manifest.compliance == "none" else 0
        self.sampled = [f.name for f in manifest.inputs if not f.pii]
        self.sample: list[SampleRow] = []
        self.seen = 0
        self.rng = rng

    def add(self, answered: tuple[Any, ...], rows: int) -> None:
        """One answered request, as :meth:`TelemetryWindow.observe` handed it over, of ``rows`` rows."""
        self.buffer.append(answered)
        self.buffered += rows
        self.rows += rows
        self.requests += 1

    def aggregate(self) -> None:
        """Count the buffered requests in bulk and let go of them."""
        if not self.buffer:
            return
        buffer, n, self.buffer, self.buffered = self.buffer, self.buffered, [], 0
        _, columns, outputs, latencies, _ = zip(*buffer, strict=True)
        self.latency += bin_counts(LATENCY_EDGES, np.asarray(latencies))[0]
        inputs = _inputs(columns, outputs, list(self.features))
        for name, feature in self.features.items():
            feature.add(inputs[name])
        predicted, proba = self._outputs(outputs)
        if self.sample_rows:
            self._sample(inputs, predicted, proba, n)

    def _outputs(
        self, outputs: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Count scores, predictions and calibrated sums; per row the prediction and probabilities."""
        if self.proba_name:
            every = np.concatenate([o[self.proba_name] for o in outputs]).astype(np.float64, copy=False)
            proba = every
            for k, label in enumerate(self.labels):
                key = f"probability:{label}"
                counts, missing = bin_counts(self.score_edges[key], proba[:, k])
                self.scores[key] += counts
                self.score_missing[key] += missing
            # a row whose probabilities are not all finite (the model got a NaN it could not impute)
            # is in the score histograms' missing counts only
            finite = np.isfinite(proba).all(axis=1)
            proba = proba[finite]
            winner = proba.argmax(axis=1)  # as the reference's predicted labels were counted
            for k, count in enumerate(np.bincount(winner, minlength=len(self.labels)).tolist()):
                if count:
                    self.predictions[self.labels[k]] += count
            if self.calibration is not None:
                grid = self.calibration.grid
                calibrated = np.column_stack(
                    [
                        np.interp(proba[:, k], grid, self.calibration.values[lb])
                        for k, lb in enumerate(self.labels)
                    ]
                )
                self.calibrated += calibrated.sum(axis=0)
                self.expected_correct += float(calibrated[np.arange(len(winner)), winner].sum())
                self.calibrated_rows += len(winner)
            index = np.full(finite.shape, len(self.labels))  # the last label is None: no prediction
            index[finite] = winner
            predicted: np.ndarray = self.label_array[index]
            return predicted, every
        if self.value_name is None:
            return None, None
        values = np.concatenate([o[self.value_name] for o in outputs]).ravel()
        if "prediction" in self.scores:
            counts, missing = bin_counts(self.score_edges["prediction"], values.astype(np.float64))
            self.scores["prediction"] += counts
            self.score_missing["prediction"] += missing
        if values.dtype.kind in "iubUSO" or self.manifest.reference.predictions:
            labels = values.astype(
                str
            )  # labels (classes, clusters, anomaly flags) as the reference names them
            uniq, freq = np.unique(labels, return_counts=True)
            self.predictions.update(dict(zip(uniq.tolist(), freq.tolist(), strict=True)))
            return labels, None
        return values, None

    def _sample(self, inputs: dict[str, Any], predicted: Any, proba: np.ndarray | None, n: int) -> None:
        """Reservoir sampling (algorithm R, vectorised): each row seen stays with equal chance."""
        k, seen = self.sample_rows, self.seen
        fill = min(max(k - seen, 0), n)
        picks = [(seen + i, i) for i in range(fill)]
        if n > fill:
            rows = np.arange(fill, n)
            slots = self.rng.integers(0, seen + rows + 1)
            picks += [(int(slots[h]), int(rows[h])) for h in np.flatnonzero(slots < k)]
        for slot, row in picks:
            entry = SampleRow(
                inputs={name: _jsonable(inputs[name][row]) for name in self.sampled},
                prediction=None if predicted is None else _jsonable(predicted[row]),
                probabilities=None
                if proba is None or not np.isfinite(proba[row]).all()
                else {lb: float(p) for lb, p in zip(self.labels, proba[row], strict=True)},
            )
            if slot == len(self.sample):
                self.sample.append(entry)
            else:
                self.sample[slot] = entry
        self.seen += n

    def close(
        self, device_id: str, group: str | None, ended: datetime | None = None
    ) -> TelemetryBatch | None:
        self.aggregate()
        if not self.rows and not self.errors:
            return None
        manifest = self.manifest
        batch = TelemetryBatch(
            device_id=device_id,
            batch_id=uuid.uuid4().hex,
            model=manifest.model,
            version=manifest.version,
            profile=manifest.profile,
            group=group,
            window_start=self.started,
            window_end=max(ended or datetime.now(UTC), self.started),
            rows=self.rows,
            requests=self.requests,
            errors=dict(self.errors),
            features={name: f.result() for name, f in self.features.items()},
            predictions=dict(self.predictions),
            scores={
                k: Histogram(edges=e, counts=self.scores[k].tolist(), missing=self.score_missing[k])
                for k, e in self.score_edges.items()
            },
            calibration=(
                CalibratedSums(
                    sums={lb: float(s) for lb, s in zip(self.labels, self.calibrated, strict=True)},
                    expected_correct=self.expected_correct,
                    rows=self.calibrated_rows,
                )
                if self.calibration is not None
                else None
            ),
            latency=Histogram(edges=LATENCY_EDGES, counts=self.latency.tolist()),
            sample=self.sample,
        )
        if manifest.min_bin_count:  # hipaa: no cell of 1..k-1 rows leaves the device
            batch = suppress(batch, manifest.reference, manifest.min_bin_count)
        return batch


#: a counting pass starts at least this often (seconds) while requests are waiting
COUNT_INTERVAL_S = 0.02
#: requests waiting for the counting thread: at this many it is woken early
WAKE_PENDING = BUFFER_ROWS
#: ... and beyond this many the request that finds them counts them itself (never dropped)
MAX_PENDING = 16 * BUFFER_ROWS

_windows: weakref.WeakSet[TelemetryWindow] = weakref.WeakSet()
_wake = threading.Event()
_counter: threading.Thread | None = None
_counter_lock = threading.Lock()


def _count_loop() -> None:
    """The counting thread, shared by every window of the process: drains what requests handed over."""
    while True:
        _wake.wait(COUNT_INTERVAL_S)
        _wake.clear()
        for window in list(_windows):
            try:
                window._drain()
            except Exception:  # a bug here must not stop telemetry for good
                log.exception("telemetry: counting failed")


def _start_counter() -> None:
    global _counter
    with _counter_lock:
        if _counter is None or not _counter.is_alive():  # also after a fork
            _counter = threading.Thread(target=_count_loop, name="edgeml-telemetry-count", daemon=True)
            _counter.start()


class TelemetryWindow:
    """A :class:`~edgeml.agent.model.PredictionObserver` turning requests into telemetry batches.

    Thread-safe. The holder hands each request over with ``take``, one append of a reference
    to a queue; a counting thread shared by every window drains it every
    :data:`COUNT_INTERVAL_S` (sooner once ``poll`` finds :data:`WAKE_PENDING` requests waiting)
    in request order: it routes each request to its window, closes windows on row count, time
    or swap, and counts in bulk every :data:`BUFFER_ROWS` rows. Should it fall behind, the
    ``poll`` that finds more than :data:`MAX_PENDING` waiting drains them itself, so memory
    stays bounded and no row is lost. ``collect`` and ``flush`` drain the queue before answering.
    """

    def __init__(
        self,
        device_id: str,
        *,
        group: str | None = None,
        window_s: float = 60.0,
        window_rows: int = 10_000,
        sample_rows: int = 50,
        seed: int | None = None,
    ) -> None:
        self.device_id = device_id
        self.group = group
        self.window_s = window_s
        self.window_rows = window_rows
        self.sample_rows = sample_rows
        self._rng = np.random.default_rng(seed)
        # what requests handed over, in order (deque appends and pops are atomic)
        self._pending: deque[Answered | Failed] = deque()
        self.take = self._pending.append
        self._lock = threading.Lock()  # everything below: taken by the counting side only
        self._open: dict[int, _Window] = {}  # by id() of its model, checked against the weak reference
        self._last: _Window | None = None
        self._seen: weakref.WeakSet[LoadedModel] = weakref.WeakSet()
        self._closed: deque[TelemetryBatch] = deque()
        self._dropped = 0  # closed batches pushed out of _closed, not yet reported
        self._orphan_errors: Counter[str] = Counter()  # errors while no model was served yet
        _windows.add(self)
        _start_counter()

    def poll(self) -> None:
        n = len(self._pending)
        if n > MAX_PENDING:  # the counting thread fell behind: count here rather than grow
            self._drain()
        elif n >= WAKE_PENDING:
            _wake.set()

    def collect(self) -> list[TelemetryBatch]:
        """Close the windows whose time is up; every closed batch not collected yet.

        Called periodically off the serving path, it also counts what is buffered.
        """
        with self._lock:
            self._drain_locked()
            now = time.monotonic()
            for window in list(self._open.values()):
                if now >= window.deadline:
                    self._close(window)
                else:
                    window.aggregate()
            return self._take()

    def flush(self) -> list[TelemetryBatch]:
        """Close every open window now; every closed batch not collected yet (at shutdown, in tests)."""
        with self._lock:
            self._drain_locked()
            for window in list(self._open.values()):
                self._close(window)
            return self._take()

    def _drain(self) -> None:
        if self._pending:
            with self._lock:
                self._drain_locked()

    def _drain_locked(self) -> None:
        """Route the handed-over requests to their windows, in order; count full buffers."""
        pending, popleft = self._pending, self._pending.popleft
        while pending:
            entry = popleft()
            if len(entry) == 2:
                self._error(*entry)
                continue
            model, columns, outputs, _, at = entry
            window = self._last
            if window is None or window.model() is not model:
                window = self._window_for(model, at)
            window.add(entry, _rows(columns, outputs))
            if window.rows >= self.window_rows or at >= window.deadline:
                self._close(window, _wall(at))
            elif window.buffered >= BUFFER_ROWS:
                window.aggregate()

    def _error(self, model: LoadedModel | None, kind: str) -> None:
        window = self._last
        if model is not None and (window is None or window.model() is not model):
            window = self._window_for(model, time.monotonic())
        if window is None:
            self._orphan_errors[kind] += 1
        else:
            window.errors[kind] += 1

    def _take(self) -> list[TelemetryBatch]:
        batches = list(self._closed)
        self._closed.clear()
        return batches

    def _window_for(self, model: LoadedModel, now: float) -> _Window:
        window = self._open.get(id(model))
        if window is not None and window.model() is model:
            self._last = window
            return window
        if window is not None:  # its model is gone and a new object got the same id
            self._close(window)
        if model not in self._seen:
            # a swap: a batch is about one version, so the old model's windows end here
            for other in list(self._open.values()):
                self._close(other, _wall(now))
            self._seen.add(model)
        window = _Window(model, now + self.window_s, self.sample_rows, self._rng, started=_wall(now))
        window.errors.update(self._orphan_errors)
        self._orphan_errors.clear()
        self._open[id(model)] = self._last = window
        return window

    def _close(self, window: _Window, ended: datetime | None = None) -> None:
        if self._open.get(window.key) is window:
            del self._open[window.key]
        if self._last is window:
            self._last = None
        batch = window.close(self.device_id, self.group, ended)
        if batch is None:
            return
        if len(self._closed) >= MAX_CLOSED:  # nobody collects: keep the newest, count the rest
            lost = self._closed.popleft()
            self._dropped += 1 + lost.dropped_before
            TELEMETRY_DROPPED.inc()
        if self._dropped:
            batch = batch.model_copy(update={"dropped_before": self._dropped})
            self._dropped = 0
        self._closed.append(batch)


def _wall(at: float) -> datetime:
    """The wall-clock time of a :func:`time.monotonic` reading taken a moment ago."""
    return datetime.now(UTC) - timedelta(seconds=max(0.0, time.monotonic() - at))
