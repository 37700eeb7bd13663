"""The telemetry store: one DuckDB file, one writer thread, readers on their own cursors.

Tables
------
``batches``
    One row per accepted batch: ``seq`` (store-assigned, joins the child tables),
    ``device_id`` + ``batch_id`` (primary key: the idempotency key), model, version, profile,
    ``device_group``, window start and end, row/request counts, ``errors`` (JSON), the
    spool drops it reports, calibrated-row count and expected-correct sum (CBPE),
    ``received_at``, ``body_sha256`` (of the batch's canonical JSON) and ``payload``: that
    JSON without the histograms the two tables below hold (their names only, in order; see
    :func:`~edgeml.central.batch_group.payload_of`), from which, with those rows,
    :meth:`TelemetryStore.batches` rebuilds the exact :class:`TelemetryBatch` the device sent.
``batch_features``
    One row per batch and feature: reference ``edges`` or ``categories``, ``counts`` (a list,
    one per bin), ``missing``, ``out_of_range``, and ``bins``: a fingerprint of the edges or
    categories (DuckDB's ``hash``, computed as the row is written), so that a query can check
    that batches agree on their bins without reading them.
``batch_scores``
    One row per batch and score histogram (``probability:<class>``, ...): ``edges``, ``counts``,
    ``missing`` and the ``bins`` fingerprint.
``batch_labels``
    One row per batch and class: ``predicted`` count and ``calibrated_sum`` (label-free
    accuracy estimation needs these per class).
``devices``
    The fleet: id, group, profile, model, sha256 of its token (never the token),
    registered/decommissioned times, last seen, the model version it last reported serving,
    spool drops it reported in total.
``feedback``
    Ground-truth labels by prediction id (the latest per id counts), with what was
    predicted when the caller knows it; :meth:`TelemetryStore.feedback` joins the device
    group in.

Writes
------
Every write runs on one thread, fed by a queue; the connection it owns is the only one
that writes, so there are no write-write conflicts. Telemetry waiting in the queue is
bounded (``max_queued_batches``): beyond it :meth:`submit` raises :class:`Overloaded`
and the HTTP layer answers 429. The telemetry that waits in the queue when the writer is
free, batches submitted one by one and groups laid out elsewhere
(:class:`~edgeml.central.batch_group.BatchGroup`, :meth:`submit_group`), is written in one
transaction, as Arrow tables, never row by row. A batch's answer comes only after
``COMMIT``, which makes DuckDB write and sync its write-ahead log, so an acknowledged batch
survives a crash of the process. Repeated batch ids are found by the primary key as the
group is inserted (see ``_write_batches``). Payloads are compressed with zstd (see
``_payload_compression``). The file is attached with row groups of ``ROW_GROUP_ROWS``.
The writer runs DuckDB on ``WRITE_THREADS``; reads get all of DuckDB's threads while they
run.

Reads
-----
:meth:`TelemetryStore.batches` rebuilds batches from their payloads and child rows: exact,
and what a window of minutes needs. :meth:`TelemetryStore.pooled_windows` sums the child
tables in SQL instead, the way :func:`edgeml.central.drift.pool` sums batches, without reading a payload:
what a day of a fleet needs (:func:`edgeml.central.drift.pool_stored` picks).

A file written before ``batch_scores`` and ``bins`` existed gets them when it is opened
(once; the score histograms are read from the payloads): ``meta`` holds the schema version.

The devices (a few thousand rows) are also kept in memory (:class:`DeviceDirectory`), so
device authentication costs no query; the writer updates it after each commit.

The central node runs this store in a process of its own (:mod:`edgeml.central.store_process`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from edgeml.agent.telemetry import CalibratedSums, FeatureTelemetry, TelemetryBatch
from edgeml.bundle.manifest import Histogram
from edgeml.central.batch_group import (
    BATCH_TYPES,
    FEATURE_TYPES,
    LABEL_TYPES,
    SCORE_TYPES,
    STAMP,
    BatchGroup,
    Head,
    payload_of,
    rebuilt,
)
from edgeml.central.drift import PooledWindow

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "BatchConflict",
    "CompactResult",
    "Device",
    "DeviceExists",
    "FeedbackItem",
    "FeedbackRecord",
    "Ingested",
    "Outcomes",
    "Overloaded",
    "RowsPoint",
    "StoreClosed",
    "Stored",
    "TelemetryAck",
    "TelemetryStore",
    "UnknownDevice",
    "hash_token",
]

log = logging.getLogger("edgeml.central.db")

#: most queued jobs the writer takes into one transaction
MAX_GROUP = 512
#: DuckDB's buffer pool. It keeps every block written in memory until it reaches this (DuckDB's
#: own default is 80% of RAM), so a node taking telemetry grows by ~3 MB per 1,000 batches up to
#: it; pooling a day of 1,000 devices (``pooled_windows``) runs as fast with 1 GB as unbounded,
#: and spills (~6× slower) with 256 MB. The blocks are in the OS page cache anyway. The central
#: node's config sets it (``db_memory``).
DEFAULT_MEMORY_LIMIT = "1GB"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq BIGINT NOT NULL,
    device_id VARCHAR NOT NULL,
    batch_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    profile VARCHAR NOT NULL,
    device_group VARCHAR,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    row_count BIGINT NOT NULL,
    request_count BIGINT NOT NULL,
    errors JSON NOT NULL,
    dropped_before BIGINT NOT NULL,
    calibrated_rows BIGINT,
    expected_correct DOUBLE,
    received_at TIMESTAMPTZ NOT NULL,
    body_sha256 VARCHAR NOT NULL,
    payload VARCHAR NOT NULL USING COMPRESSION zstd,
    PRIMARY KEY (device_id, batch_id)
);
CREATE TABLE IF NOT EXISTS batch_features (
    seq BIGINT NOT NULL,
    feature VARCHAR NOT NULL,
    edges DOUBLE[],
    categories VARCHAR[],
    counts BIGINT[] NOT NULL,
    missing BIGINT NOT NULL,
    out_of_range BIGINT NOT NULL,
    bins UBIGINT
);
CREATE TABLE IF NOT EXISTS batch_scores (
    seq BIGINT NOT NULL,
    score VARCHAR NOT NULL,
    edges DOUBLE[] NOT NULL,
    counts BIGINT[] NOT NULL,
    missing BIGINT NOT NULL,
    bins UBIGINT
);
CREATE TABLE IF NOT EXISTS batch_labels (
    seq BIGINT NOT NULL,
    label VARCHAR NOT NULL,
    predicted BIGINT NOT NULL,
    calibrated_sum DOUBLE
);
CREATE TABLE IF NOT EXISTS devices (
    device_id VARCHAR NOT NULL,
    device_group VARCHAR,
    profile VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    token_sha256 VARCHAR NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    decommissioned_at TIMESTAMPTZ,
    last_seen TIMESTAMPTZ,
    last_window_end TIMESTAMPTZ,
    serving_model VARCHAR,
    serving_version INTEGER,
    dropped_total BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id VARCHAR NOT NULL,
    label VARCHAR NOT NULL,
    predicted VARCHAR,
    model VARCHAR,
    version INTEGER,
    device_id VARCHAR,
    received_at TIMESTAMPTZ NOT NULL,
    source VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL);
"""
#: ``meta`` key of the schema's version: absent in files written before ``batch_scores`` and ``bins``
_SCHEMA_KEY = "schema"
_SCHEMA_VERSION = "2"
#: the ``bins`` fingerprints: equal bins, equal fingerprint (computed by DuckDB as rows are written)
_FEATURE_BINS = "hash(edges, categories)"
_SCORE_BINS = "hash(edges)"


# --- records --------------------------------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TelemetryAck(_Record):
    """The answer to an accepted batch; a repeat of the same batch gets this same answer."""

    status: str = Field("accepted", description="always 'accepted'")
    device_id: str
    batch_id: str
    received_at: AwareDatetime = Field(description="when the central node first stored the batch")


@dataclass(frozen=True)
class Ingested:
    ack: TelemetryAck
    duplicate: bool  # the batch was already stored: nothing was written


class Device(_Record):
    """One registered device, as the fleet registry knows it."""

    device_id: str
    group: str | None
    profile: str
    model: str = Field(description="the model it was registered to serve")
    registered_at: AwareDatetime
    decommissioned_at: AwareDatetime | None = None
    last_seen: AwareDatetime | None = Field(None, description="when its latest telemetry arrived")
    last_window_end: AwareDatetime | None = Field(None, description="end of its newest telemetry window")
    serving_model: str | None = Field(None, description="model its newest telemetry is about")
    serving_version: int | None = Field(None, description="version its newest telemetry is about")
    dropped_total: int = Field(0, description="telemetry batches it reported dropping (spool full)")

    @property
    def active(self) -> bool:
        return self.decommissioned_at is None


class FeedbackItem(_Record):
    """One ground-truth label."""

    prediction_id: str = Field(min_length=1, max_length=256, description="the id the prediction was given")
    label: str | float = Field(description="the true class or value")
    predicted: str | float | None = Field(None, description="what the model answered, when known")
    model: str | None = Field(None, max_length=128)
    version: int | None = Field(None, ge=1, le=2**31 - 1)
    device_id: str | None = Field(None, max_length=128, description="the device that predicted")


class FeedbackRecord(_Record):
    prediction_id: str
    label: str | float
    predicted: str | float | None
    model: str | None
    version: int | None
    device_id: str | None
    group: str | None = Field(description="the device's group, when the device is known")
    received_at: AwareDatetime
    source: str = Field(description="'admin' or the device that sent it")


class RowsPoint(_Record):
    """Rows predicted by one device group in one time bucket."""

    group: str | None
    start: AwareDatetime
    rows: int


@dataclass(frozen=True)
class CompactResult:
    batches: int
    feedback: int


class Overloaded(Exception):
    """Too many batches wait for the writer: the caller should come back later."""


class StoreClosed(Exception):
    """The store is closed (or its writer died): nothing can be written."""


class BatchConflict(Exception):
    """A batch id this device already used, with a different body."""


class DeviceExists(Exception):
    """A device with this id is already registered."""


class UnknownDevice(Exception):
    """No device has this id."""


# --- helpers --------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _from_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _dumps(value: str | float | None) -> str | None:
    return None if value is None else json.dumps(value)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


_DEVICE_COLUMNS = """device_id, device_group, profile, model, token_sha256,
    epoch_us(registered_at), epoch_us(decommissioned_at), epoch_us(last_seen), epoch_us(last_window_end),
    serving_model, serving_version, dropped_total"""


def _device_row(row: tuple[Any, ...]) -> tuple[Device, str]:
    (device_id, group, profile, model, token_hash, registered, decommissioned, seen, window_end,
     serving_model, serving_version, dropped) = row  # fmt: skip
    device = Device(
        device_id=device_id,
        group=group,
        profile=profile,
        model=model,
        registered_at=_from_us(registered),
        decommissioned_at=_from_us(decommissioned),
        last_seen=_from_us(seen),
        last_window_end=_from_us(window_end),
        serving_model=serving_model,
        serving_version=serving_version,
        dropped_total=dropped,
    )
    return device, token_hash


# --- jobs for the writer ---------------------------------------------------------------------

T = TypeVar("T")
_J = TypeVar("_J", "_Ingest", "_Group")


class Stored(NamedTuple):
    """How a batch of a group was stored: now, or before (a repeat with the same body)."""

    received_at: datetime
    duplicate: bool

    def answer(self, batch: TelemetryBatch) -> Ingested:
        """What the device that sent ``batch`` is told."""
        ack = TelemetryAck(device_id=batch.device_id, batch_id=batch.batch_id, received_at=self.received_at)
        return Ingested(ack, self.duplicate)


#: each batch of a group: stored, or refused (its id was used with a different body)
Outcomes = list[Stored | BatchConflict]


@dataclass
class _Ingest:
    batch: TelemetryBatch
    payload: str
    digest: str
    future: Future[Ingested] = field(default_factory=Future)


@dataclass
class _Group:
    group: BatchGroup
    future: Future[Outcomes] = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    after: Callable[[duckdb.DuckDBPyConnection, Any], None] | None
    future: Future[Any] = field(default_factory=Future)


_STOP = object()


def encode(batch: TelemetryBatch) -> tuple[str, str]:
    """The batch's stored payload (:func:`~edgeml.central.batch_group.payload_of`) and the sha256
    of its canonical JSON (what a repeat is compared by)."""
    canonical = batch.model_dump_json()
    return payload_of(batch), hashlib.sha256(canonical.encode()).hexdigest()


class DeviceDirectory:
    """The fleet registry in memory: devices by id, and the hashes of active devices' tokens.

    Thread-safe. The store keeps one in step with its database; a client of a store in another
    process keeps a copy in step with the store's answers, so a request is authenticated
    without a round trip.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, Device] = {}
        self._token_of: dict[str, str] = {}  # device id -> sha256 of its token
        self._by_token: dict[str, str] = {}  # sha256 of an active device's token -> device id

    def remember(self, device: Device, token_hash: str | None = None) -> None:
        """Add or update ``device``; a registration or a decommission names the token's hash."""
        with self._lock:
            self._devices[device.device_id] = device
            if token_hash is None:
                return
            self._token_of[device.device_id] = token_hash
            if device.active:
                self._by_token[token_hash] = device.device_id
            else:
                self._by_token.pop(token_hash, None)

    def update(self, devices: list[Device]) -> None:
        """New state of known devices (telemetry arrived); their tokens stay as they are."""
        with self._lock:
            for device in devices:
                self._devices[device.device_id] = device

    def token_hash(self, device_id: str) -> str:
        with self._lock:
            return self._token_of[device_id]

    def authenticate(self, token: str) -> Device | None:
        """The active device holding ``token``, or None."""
        presented = hash_token(token)
        with self._lock:
            device_id = self._by_token.get(presented)
            if device_id is None or not hmac.compare_digest(self._token_of[device_id], presented):
                return None
            return self._devices[device_id]

    def device(self, device_id: str) -> Device | None:
        with self._lock:
            return self._devices.get(device_id)

    def devices(self) -> list[Device]:
        """Every device ever registered, decommissioned ones included, by id."""
        with self._lock:
            return sorted(self._devices.values(), key=lambda d: d.device_id)

    def snapshot(self) -> list[tuple[Device, str]]:
        """Every device with its token's hash: what a copy starts from."""
        with self._lock:
            return [(d, self._token_of[i]) for i, d in self._devices.items()]


class TelemetryStore:
    """The central node's database; see the module docstring. Use as a context manager or ``close()``."""

    def __init__(
        self,
        path: Path,
        *,
        max_queued_batches: int = 2000,
        retention_days: int = 30,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_queued_batches = max_queued_batches
        self.retention_days = retention_days
        self._db = _connect(path, memory_limit)
        self._cursor_lock = threading.Lock()
        self._threads_con = self._cursor()  # sets DuckDB's threads (under _threads_lock)
        self._threads_lock = threading.Lock()
        self._threads = int(self._threads_con.execute("SELECT current_setting('threads')").fetchall()[0][0])
        self._threads_con.execute(f"SET threads = {WRITE_THREADS}")
        self._parallel_users = 0
        self._writer_con = self._cursor()
        self._writer_con.execute(_SCHEMA)
        _migrate(self._writer_con)
        _check_columns(self._writer_con)
        _payload_compression(self._writer_con)
        _recover_devices(self._writer_con)
        self._next_seq = int(
            self._writer_con.execute("SELECT coalesce(max(seq), 0) + 1 FROM batches").fetchall()[0][0]
        )
        self.directory = DeviceDirectory()
        # devices' telemetry state not saved yet (see DEVICE_STATE_S); written by the writer only
        self._unsaved: dict[str, Device] = {}
        self._saved_at = time.monotonic()
        devices = f"SELECT {_DEVICE_COLUMNS} FROM devices"  # noqa: S608 (a constant)
        for row in self._writer_con.execute(devices).fetchall():
            self.directory.remember(*_device_row(row))
        self._queue: queue.Queue[object] = queue.Queue()
        self._pending = 0  # telemetry jobs queued or being written
        self._pending_lock = threading.Lock()
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="edgeml-central-writer", daemon=True)
        self._writer.start()

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Write everything queued, checkpoint, close. Safe to call twice."""
        with self._pending_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        try:
            if self._unsaved:
                with self._transaction() as con:
                    _save_devices(con, list(self._unsaved.values()))
            with self._parallel():
                self._writer_con.execute("CHECKPOINT")
        finally:
            self._threads_con.close()
            self._writer_con.close()
            self._db.close()

    def __enter__(self) -> TelemetryStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def queued_batches(self) -> int:
        return self._pending

    def writer_alive(self) -> bool:
        return not self._closed and self._writer.is_alive()

    # --- writes -------------------------------------------------------------------------------

    def submit(self, batch: TelemetryBatch) -> Future[Ingested]:
        """Queue ``batch``; the future resolves after it is committed (or was already stored).

        Raises :class:`Overloaded` when ``max_queued_batches`` wait already. The future fails
        with :class:`BatchConflict` when the id was used with a different body.
        """
        return self._enqueue(_Ingest(batch, *encode(batch)), 1, limit=True).future

    def submit_group(self, group: BatchGroup) -> Future[Outcomes]:
        """Queue a group built elsewhere; it is committed with the telemetry waiting beside it.

        The future holds each batch's outcome, in order, once committed, or fails (the group
        was not stored). Not refused for overload: the caller bounds what it hands over (the
        serving process of the central node counts its batches against ``max_queued_batches``).
        """
        return self._enqueue(_Group(group), len(group), limit=False).future

    def _enqueue(self, job: _J, batches: int, *, limit: bool) -> _J:
        with self._pending_lock:
            if self._closed:
                raise StoreClosed("the telemetry store is closed")
            if limit and self._pending >= self.max_queued_batches:
                raise Overloaded(f"{self._pending} batches are waiting to be written")
            self._pending += batches
        self._queue.put(job)
        return job

    def submit_async(self, batch: TelemetryBatch) -> asyncio.Future[Ingested]:
        """:meth:`submit` for the running event loop: the answer as a future of that loop."""
        return asyncio.wrap_future(self.submit(batch))

    def ingest(self, batch: TelemetryBatch, timeout: float = 30.0) -> Ingested:
        """:meth:`submit` and wait for the commit."""
        return self.submit(batch).result(timeout)

    def write(
        self,
        fn: Callable[[duckdb.DuckDBPyConnection], T],
        *,
        after: Callable[[duckdb.DuckDBPyConnection, T], None] | None = None,
    ) -> Future[T]:
        """Run ``fn`` on the writer's connection in a transaction of its own, in queue order.

        ``after`` runs on the writer thread once the transaction is committed (memory updates,
        a CHECKPOINT). The future holds what ``fn`` returned, or what it raised.
        """
        job = _Call(fn, after)
        with self._pending_lock:
            if self._closed:
                raise StoreClosed("the telemetry store is closed")
            self._queue.put(job)
        return job.future

    def register_device(
        self, *, group: str | None, profile: str, model: str, device_id: str | None = None
    ) -> tuple[Device, str]:
        """A new device and its token; the token is shown here once and kept only as a hash."""
        token = secrets.token_urlsafe(32)
        token_hash = hash_token(token)
        device = Device(
            device_id=device_id or f"dev-{secrets.token_hex(6)}",
            group=group,
            profile=profile,
            model=model,
            registered_at=datetime.now(UTC),
        )

        def insert(con: duckdb.DuckDBPyConnection) -> Device:
            if self.directory.device(device.device_id) is not None:
                raise DeviceExists(f"device {device.device_id} is already registered")
            con.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, 0)",
                [device.device_id, group, profile, model, token_hash, device.registered_at],
            )
            return device

        self.write(insert, after=lambda _con, d: self.directory.remember(d, token_hash)).result()
        return device, token

    def decommission(self, device_id: str) -> Device:
        """Retire a device: its token stops working when this returns. Repeating it changes nothing."""

        def retire(con: duckdb.DuckDBPyConnection) -> Device:
            device = self.directory.device(device_id)
            if device is None:
                raise UnknownDevice(f"no device {device_id}")
            if not device.active:
                return device
            now = datetime.now(UTC)
            con.execute("UPDATE devices SET decommissioned_at = ? WHERE device_id = ?", [now, device_id])
            return device.model_copy(update={"decommissioned_at": now})

        def forget(_con: duckdb.DuckDBPyConnection, device: Device) -> None:
            self.directory.remember(device, self.directory.token_hash(device_id))

        result: Device = self.write(retire, after=forget).result()
        return result

    def add_feedback(self, items: list[FeedbackItem], source: str) -> int:
        """Store labels; ``source`` is 'admin' or the device that sent them."""
        now = datetime.now(UTC)
        table = pa.table(
            {
                "prediction_id": [i.prediction_id for i in items],
                "label": [json.dumps(i.label) for i in items],
                "predicted": [_dumps(i.predicted) for i in items],
                "model": [i.model for i in items],
                "version": pa.array([i.version for i in items], pa.int32()),
                "device_id": [i.device_id for i in items],
                "received_at": pa.array([now] * len(items), STAMP),
                "source": [source] * len(items),
            }
        )

        def insert(con: duckdb.DuckDBPyConnection) -> int:
            _insert(con, "feedback", table)
            return len(items)

        count: int = self.write(insert).result()
        return count

    def compact(self, now: datetime | None = None) -> CompactResult:
        """Delete telemetry whose window ended, and feedback received, over ``retention_days`` ago.

        A CHECKPOINT follows, so the freed blocks are reused by new data.
        """
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.retention_days)

        def delete(con: duckdb.DuckDBPyConnection) -> CompactResult:
            # first the devices' unsaved state, which recovery would rebuild from batches deleted here
            if self._unsaved:
                _save_devices(con, list(self._unsaved.values()))
            for child in ("batch_features", "batch_scores", "batch_labels"):
                con.execute(
                    f"DELETE FROM {child} WHERE seq IN (SELECT seq FROM batches WHERE window_end < ?)",  # noqa: S608 (a constant)
                    [cutoff],
                )
            batches = con.execute("DELETE FROM batches WHERE window_end < ?", [cutoff]).fetchall()[0][0]
            feedback = con.execute("DELETE FROM feedback WHERE received_at < ?", [cutoff]).fetchall()[0][0]
            return CompactResult(int(batches), int(feedback))

        def checkpoint(con: duckdb.DuckDBPyConnection, result: CompactResult) -> None:
            self._mark_saved()
            if result.batches or result.feedback:
                con.execute("CHECKPOINT")

        with self._parallel():
            result: CompactResult = self.write(delete, after=checkpoint).result()
        log.info("compaction: %d batches and %d labels deleted", result.batches, result.feedback)
        return result

    def probe_write(self, timeout: float = 5.0) -> None:
        """Commit a tiny write: raises unless the database accepts writes within ``timeout``."""

        def touch(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM meta WHERE key = 'probe'")
            con.execute("INSERT INTO meta VALUES ('probe', ?)", [datetime.now(UTC).isoformat()])

        self.write(touch).result(timeout)

    # --- the writer ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < MAX_GROUP:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            run: list[_Ingest | _Group] = []  # telemetry: written in one transaction
            stop = False
            for job in jobs:
                if isinstance(job, _Ingest | _Group):
                    run.append(job)
                    continue
                if run:
                    self._ingest(run)
                    run = []
                if isinstance(job, _Call):
                    self._call(job)
                else:
                    stop = True  # _STOP comes last: close() lets nothing in after it
            if run:
                self._ingest(run)
            if stop:
                return

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self._writer_con
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _call(self, job: _Call) -> None:
        try:
            with self._transaction() as con:
                result = job.fn(con)
            if job.after is not None:
                job.after(self._writer_con, result)
        except Exception as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    def _ingest(self, run: list[_Ingest | _Group]) -> None:
        """Write a run of queued telemetry in one transaction; answer each job.

        Batches queued one by one are laid out here; groups handed over are joined to them, so
        however the telemetry arrived, what waits when the writer is free is one commit.
        """
        parts: list[tuple[BatchGroup, list[_Ingest] | _Group]] = []
        for key, jobs in itertools.groupby(run, type):
            if key is _Group:
                parts.extend((job.group, job) for job in jobs if isinstance(job, _Group))
                continue
            queued = [job for job in jobs if isinstance(job, _Ingest)]
            try:
                items = [(j.batch, j.payload, j.digest) for j in queued]
                parts.append((BatchGroup.of(items, datetime.now(UTC)), queued))
            except Exception as exc:  # Arrow refused a value the contract let through: these fail alone
                log.exception("telemetry could not be laid out for writing")
                with self._pending_lock:
                    self._pending -= len(queued)
                for job in queued:
                    job.future.set_exception(exc)
        if not parts:
            return
        try:
            outcomes = self._written(BatchGroup.joined([group for group, _ in parts]))
        except StoreClosed as exc:
            for _, waiting in parts:
                for failed in waiting if isinstance(waiting, list) else [waiting]:
                    failed.future.set_exception(exc)
            return
        start = 0
        for group, waiting in parts:
            mine = outcomes[start : start + len(group)]
            start += len(group)
            if isinstance(waiting, _Group):
                waiting.future.set_result(mine)
                continue
            for job, outcome in zip(waiting, mine, strict=True):
                if isinstance(outcome, Exception):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome.answer(job.batch))

    def _written(self, group: BatchGroup) -> Outcomes:
        """Write ``group``; each batch's outcome. StoreClosed when the transaction failed."""
        try:
            return self._write_batches(group)
        except Exception as exc:  # the transaction rolled back: nothing of these is stored
            log.exception("telemetry write failed")
            raise StoreClosed(f"the telemetry store could not write: {exc}") from exc
        finally:
            with self._pending_lock:
                self._pending -= len(group)

    def _write_batches(self, group: BatchGroup) -> Outcomes:
        """Write the new batches of ``group`` in one transaction; each batch's outcome.

        Repeated batch ids are rare (a device retries when an answer was lost), so the group
        is first written as if every batch were new: the primary key's index checks that
        cheaply, where looking the ids up costs a scan of the whole table. When the key
        reports a repeat, the transaction rolls back, and the group is written again after
        that lookup (the repeats then get the stored answer, or BatchConflict).
        """
        keys = group.ids()
        try:
            return self._write_new(group, keys, {})
        except duckdb.ConstraintException:
            return self._write_new(group, keys, self._stored(keys))

    def _stored(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, datetime]]:
        """The stored batches among ``keys``: their body digest and when they were received."""
        _keys = pa.table(
            {"device_id": [d for d, _ in keys], "batch_id": [b for _, b in keys]},
            schema=pa.schema([("device_id", pa.string()), ("batch_id", pa.string())]),
        )
        stored = self._writer_con.execute(
            "SELECT b.device_id, b.batch_id, b.body_sha256, epoch_us(b.received_at) FROM batches b "
            "JOIN _keys k ON b.device_id = k.device_id AND b.batch_id = k.batch_id"
        ).fetchall()
        return {(d, b): (digest, _EPOCH + timedelta(microseconds=us)) for d, b, digest, us in stored}

    def _write_new(
        self,
        group: BatchGroup,
        keys: list[tuple[str, str]],
        known: dict[tuple[str, str], tuple[str, datetime]],
    ) -> Outcomes:
        """Write the batches whose keys are not ``known``; ConstraintException if one is stored already."""
        fresh = Stored(group.received_at, duplicate=False)
        outcomes: Outcomes = []
        keep: list[int] = []
        for i, (key, digest) in enumerate(zip(keys, group.digests(), strict=True)):
            if key in known:
                stored_digest, at = known[key]
                outcomes.append(
                    Stored(at, duplicate=True)
                    if hmac.compare_digest(stored_digest, digest)
                    else BatchConflict(
                        f"batch {key[1]} was already received from {key[0]} with a different body"
                    )
                )
                continue
            known[key] = (digest, group.received_at)
            keep.append(i)
            outcomes.append(fresh)
        if not keep:
            return outcomes
        new = group if len(keep) == len(group) else group.only(keep)
        devices = self._seen(new.heads(), group.received_at)
        unsaved = self._unsaved | {d.device_id: d for d in devices}
        save = time.monotonic() - self._saved_at >= DEVICE_STATE_S
        _write_group(self._writer_con, new, self._next_seq, list(unsaved.values()) if save else [])
        self._next_seq += len(group)
        if save:
            self._mark_saved()
        else:
            self._unsaved = unsaved
        self.directory.update(devices)
        return outcomes

    def _mark_saved(self) -> None:
        """The devices' telemetry state was just written (writer thread only)."""
        self._unsaved = {}
        self._saved_at = time.monotonic()

    def _seen(self, heads: list[Head], now: datetime) -> list[Device]:
        """The devices' new state after batches with these heads arrived (not stored yet)."""
        changed: dict[str, Device] = {}
        for device_id, dropped, window_end, model, version in heads:
            device = changed.get(device_id) or self.directory.device(device_id)
            if device is None:  # not registered: stored anyway (callers authenticate), no fleet entry
                continue
            update: dict[str, Any] = {"last_seen": now, "dropped_total": device.dropped_total + dropped}
            if device.last_window_end is None or window_end >= device.last_window_end:
                update |= {"last_window_end": window_end, "serving_model": model, "serving_version": version}
            changed[device_id] = device.model_copy(update=update)
        return list(changed.values())

    # --- reads --------------------------------------------------------------------------------

    def authenticate(self, token: str) -> Device | None:
        """The active device holding ``token``, or None."""
        return self.directory.authenticate(token)

    def device(self, device_id: str) -> Device | None:
        return self.directory.device(device_id)

    def devices(self) -> list[Device]:
        """Every device ever registered, decommissioned ones included, by id."""
        return self.directory.devices()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own to the store's database (a cursor starts in DuckDB's default one)."""
        cursor = self._db.cursor()
        cursor.execute(f"USE {CATALOG}")
        return cursor

    @contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._cursor_lock:
            if self._closed and not self._writer.is_alive():
                raise StoreClosed("the telemetry store is closed")
            cursor = self._cursor()
        try:
            with self._parallel():
                yield cursor
        finally:
            cursor.close()

    @contextmanager
    def _parallel(self) -> Iterator[None]:
        """DuckDB on all its threads while this runs (else ``WRITE_THREADS``)."""
        with self._threads_lock:
            if self._parallel_users == 0:
                self._threads_con.execute(f"SET threads = {self._threads}")
            self._parallel_users += 1
        try:
            yield
        finally:
            with self._threads_lock:
                self._parallel_users -= 1
                if self._parallel_users == 0:
                    self._threads_con.execute(f"SET threads = {WRITE_THREADS}")

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
        where, params = _filters(model=model, version=version, group=group, since=since, until=until)
        if device is not None:
            where.append("device_id = $device")
            params["device"] = device
        chosen = f"FROM batches WHERE {_where(where)}"
        with self._reader() as cur:

            def read(sql: str) -> pa.Table:
                return cur.sql(sql, params=params).to_arrow_table()

            cur.execute("BEGIN TRANSACTION")  # one snapshot: compaction may delete in between
            try:
                found = read(f"SELECT seq, payload {chosen} ORDER BY window_end, seq")
                features = _by_seq(
                    read(
                        'SELECT seq, feature AS name, edges, categories AS "values", counts, missing, '  # noqa: S608 (fixed SQL; values are bound)
                        f"out_of_range FROM batch_features WHERE seq IN (SELECT seq {chosen})"
                    )
                )
                scores = _by_seq(
                    read(
                        "SELECT seq, score AS name, edges, counts, missing FROM batch_scores "  # noqa: S608 (as above)
                        f"WHERE seq IN (SELECT seq {chosen})"
                    )
                )
            finally:
                cur.execute("ROLLBACK")  # read only: nothing to keep
        seqs, payloads = (found.column(c).to_pylist() for c in ("seq", "payload"))
        return [
            rebuilt(p, features.get(q, {}), scores.get(q, {})) for q, p in zip(seqs, payloads, strict=True)
        ]

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
        """The batches :meth:`batches` selects (same filters), pooled by the database; or None.

        ``window`` pools as :func:`edgeml.central.drift.pool` does (per model, version, group
        and epoch-aligned window of ``window_start``; ordered the same way); None pools each
        model, version and group into one window, as :func:`~edgeml.central.drift.pool_window`.
        The sums come from the child tables, so no payload is read or parsed; floating-point
        sums are added in batch order, as pooling the batches does, so the windows are the same
        with two exceptions: no row ``sample`` (it is in the payloads only), and a label counted
        0 times by every batch is not in ``predictions`` (``.get(label, 0)`` reads the same).

        None when a window cannot be pooled this way: its batches disagree on an input's or a
        score's bins (pooling the batches raises then), or a fingerprint is missing. The caller
        then pools :meth:`batches` itself (see :func:`edgeml.central.drift.pool_stored`).
        """
        where, params = _filters(model=model, version=version, group=group, since=since, until=until)
        with self._reader() as cur:
            return _pool_in_sql(cur, _where(where), params, window)

    def profiles(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> dict[tuple[str, int], str]:
        """(model, version) -> a firmware profile that sent batches in (``since``, ``until``].

        A version's manifests per profile carry the same reference data, so any one will do to
        judge its telemetry; the latest profile seen is taken.
        """
        where, params = _filters(model=None, version=None, group=None, since=since, until=until)
        sql = (
            "SELECT model, version, arg_max(profile, window_end) FROM batches "  # noqa: S608 (fixed SQL; values are bound)
            f"WHERE {_where(where)} GROUP BY model, version"
        )
        with self._reader() as cur:
            rows = cur.execute(sql, params).fetchall()
        return {(str(m), int(v)): str(p) for m, v, p in rows}

    def fetch(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows of a read-only query (diagnostics, tests); it sees what is committed."""
        with self._reader() as cur:
            return cur.execute(sql, params or []).fetchall()

    def batch_count(self) -> int:
        with self._reader() as cur:
            return int(cur.execute("SELECT count(*) FROM batches").fetchall()[0][0])

    def rows_over_time(self, since: datetime, bucket: timedelta) -> list[RowsPoint]:
        """Rows predicted per device group per time bucket (by window end), since ``since``."""
        sql = """
            SELECT device_group, epoch_us(time_bucket($bucket, window_end, $origin)) AS start,
                   sum(row_count)::BIGINT AS rows
            FROM batches WHERE window_end > $since GROUP BY ALL ORDER BY start, device_group
        """
        params = {"bucket": bucket, "since": since, "origin": since}
        with self._reader() as cur:
            found = cur.sql(sql, params=params).to_arrow_table().to_pylist()
        return [RowsPoint(group=r["device_group"], start=_from_us(r["start"]), rows=r["rows"]) for r in found]

    def feedback(
        self,
        model: str | None = None,
        version: int | None = None,
        group: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[FeedbackRecord]:
        """Labels received in (``since``, ``until``], the latest per prediction id, with the device group."""
        where, params = _filters(
            model=model, version=version, group=group, since=since, until=until, time="received_at"
        )
        # the filters apply to the latest label per id, so an older label cannot resurface
        latest = """
            SELECT f.*, d.device_group FROM feedback f LEFT JOIN devices d USING (device_id)
            QUALIFY row_number() OVER (PARTITION BY f.prediction_id ORDER BY f.received_at DESC) = 1
        """
        columns = "prediction_id, label, predicted, model, version, device_id, device_group, source"
        sql = (
            f"SELECT {columns}, epoch_us(received_at) AS received_us FROM ({latest}) "  # noqa: S608 (fixed SQL; values are bound)
            f"WHERE {_where(where)} ORDER BY received_at"
        )
        with self._reader() as cur:
            found = cur.sql(sql, params=params).to_arrow_table().to_pylist()
        return [
            FeedbackRecord(
                prediction_id=r["prediction_id"],
                label=json.loads(r["label"]),
                predicted=_loads(r["predicted"]),
                model=r["model"],
                version=r["version"],
                device_id=r["device_id"],
                group=r["device_group"],
                received_at=_from_us(r["received_us"]),
                source=r["source"],
            )
            for r in found
        ]


#: seconds between saves of the devices' telemetry state (last seen, version served, drops).
#: Updating the devices table in every group's transaction cost a third of the group's
#: write; in between, the state lives in memory, and a store opened after a crash rebuilds
#: it from the batches written since the last save (``_recover_devices``).
DEVICE_STATE_S = 5.0
#: write-ahead log size that makes DuckDB checkpoint (its default is 16 MB). A checkpoint
#: compresses and rewrites the table's last, partly filled row groups; at 16 MB that
#: happened every ~800 batches and cost a third of the write path's CPU. A larger log takes
#: longer to replay at start-up after a crash, and stays in the buffer pool until written.
CHECKPOINT_WAL = "128MB"
#: seconds to wait for another process's lock on the database file to go
LOCK_WAIT_S = 30.0
#: rows per row group of the telemetry file (DuckDB's default is 122,880). A checkpoint rewrote
#: more and more of the last row groups as they filled: with ``batch_features`` growing 20 rows
#: a batch, its stalls grew from 0.2 to over 1 s every few seconds of ingest. At this size they
#: stay flat, at ~25 µs a batch; a day of a fleet is pooled as fast.
ROW_GROUP_ROWS = 16_384
#: the name the telemetry file is attached as: every connection of the store uses it
CATALOG = "telemetry"
#: DuckDB threads while only telemetry is written. A group's insert is a few small pipelines:
#: with two threads DuckDB handed their tasks to its pool and waited for them, and a commit of
#: 64 batches took ~15% longer (more beside a busy serving process); reads that scan a fleet's
#: day, and compaction, get every thread while they run (``_parallel``).
WRITE_THREADS = 1


def _connect(path: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """The database (attached as ``CATALOG``, the default), once no other process holds it.

    A node killed (or restarted) leaves its store process finishing the writes it had
    queued, which takes a moment; a new node waits for it rather than failing.
    """
    deadline = time.monotonic() + LOCK_WAIT_S
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": memory_limit,
        "checkpoint_threshold": CHECKPOINT_WAL,
        # where DuckDB spills beyond memory_limit: beside the file, as when a file is opened directly
        # (an in-memory connection would spill into the working directory, read-only under systemd)
        "temp_directory": f"{path}.tmp",
    }
    con = duckdb.connect(config=config)
    quoted = str(path).replace("'", "''")
    while True:
        try:
            con.execute(f"ATTACH '{quoted}' AS {CATALOG} (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                con.close()
                raise
            time.sleep(0.1)
        else:
            con.execute(f"USE {CATALOG}")
            return con


def _by_seq(rows: pa.Table) -> dict[int, dict[str, dict[str, Any]]]:
    """Child-table rows (``seq``, ``name``, the histogram's fields) per batch and name."""
    out: dict[int, dict[str, dict[str, Any]]] = {}
    fields = [f for f in rows.column_names if f not in ("seq", "name")]
    seqs, names, *columns = (rows.column(f).to_pylist() for f in ("seq", "name", *fields))
    for seq, name, *values in zip(seqs, names, *columns, strict=True):
        out.setdefault(seq, {})[name] = dict(zip(fields, values, strict=True))
    return out


def _filters(
    *,
    model: str | None,
    version: int | None,
    group: str | None,
    since: datetime | None,
    until: datetime | None,
    time: str = "window_end",
) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}
    for column, name, value in (("model", "model", model), ("version", "version", version)):
        if value is not None:
            where.append(f"{column} = ${name}")
            params[name] = value
    if group is not None:
        where.append("device_group = $group")
        params["group"] = group
    if since is not None:
        where.append(f"{time} > $since")
        params["since"] = since
    if until is not None:
        where.append(f"{time} <= $until")
        params["until"] = until
    return where, params


def _where(conditions: list[str]) -> str:
    return " AND ".join(conditions) or "true"


def _insert(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    """Append ``data`` (columns in the table's order, see :data:`_COLUMNS`) to ``table``."""
    if data.num_rows:
        con.from_arrow(data).project(_select_list(table)).insert_into(table)


def _select_list(table: str, first_seq: int = 0) -> str:
    """The columns of ``table`` in order, from an Arrow table of :data:`_COLUMNS`, bins computed.

    ``seq``, where the table has it, is offset by ``first_seq``.
    """
    bins = _BINS.get(table)

    def column(name: str) -> str:
        if name == "bins" and bins:
            return f"{bins} AS bins"
        return f"seq + {int(first_seq)} AS seq" if name == "seq" and first_seq else f'"{name}"'

    return ", ".join(column(c) for c in _COLUMNS[table])


def _check_columns(con: duckdb.DuckDBPyConnection) -> None:
    """:func:`_insert` appends by position: the tables must have the columns it expects, in order."""
    for table, expected in _COLUMNS.items():
        found = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main' "
                "ORDER BY column_index",
                [table],
            ).fetchall()
        ]
        if found != expected:
            raise RuntimeError(f"table {table} has columns {found}, this version writes {expected}")


def _payload_compression(con: duckdb.DuckDBPyConnection) -> None:
    """Payloads (kilobytes of JSON each) are compressed with zstd, never DICT_FSST.

    DuckDB's default for strings analyses them for DICT_FSST at every checkpoint, which on
    payloads is ~15× slower than zstd: a checkpoint every few seconds stalled the writer for
    seconds. Files created with this schema say so per column; for an older file the method
    is turned off for the whole database (its short strings are then stored uncompressed).
    """
    sql = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'batches'").fetchall()[0][0]
    if "USING COMPRESSION ZSTD" not in sql.upper():
        con.execute("SET disabled_compression_methods = 'dict_fsst'")


_UPDATE_DEVICES = (
    "UPDATE devices SET last_seen = s.last_seen, last_window_end = s.last_window_end, "
    "serving_model = s.serving_model, serving_version = s.serving_version, "
    "dropped_total = s.dropped_total FROM _device_state s WHERE devices.device_id = s.device_id"
)


def _write_group(
    con: duckdb.DuckDBPyConnection, group: BatchGroup, first_seq: int, devices: list[Device]
) -> None:
    """One transaction: the group's rows (``seq`` from ``first_seq``) and, when given, devices' new state.

    The whole transaction is one ``execute`` of several statements, reading the Arrow tables
    through DuckDB's replacement scan of this function's local variables (``_new_batches``,
    ...): registering a view and dropping it again cost more than the insert of a small table.
    """
    _new_batches = group.batches
    _new_batch_features = group.features
    _new_batch_scores = group.scores
    _new_batch_labels = group.labels
    _device_state = _device_table(devices)
    statements = ["BEGIN TRANSACTION"]
    for table, data in group.tables().items():
        if data.num_rows:
            select = _select_list(table, first_seq)
            statements.append(f"INSERT INTO {table} SELECT {select} FROM _new_{table}")  # noqa: S608 (constants)
    if devices:
        statements.append(_UPDATE_DEVICES)
    statements.append("COMMIT")
    try:
        con.execute(";\n".join(statements))
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # none is open when BEGIN itself failed
            con.execute("ROLLBACK")
        raise


def _recover_devices(con: duckdb.DuckDBPyConnection) -> None:
    """Bring the devices' telemetry state up to the batches stored after it was last saved.

    A batch's devices are saved every ``DEVICE_STATE_S`` and when the store closes; after a
    crash, the batches received since a device's saved ``last_seen`` hold what was lost:
    the newest arrival, the spool drops they reported, and the newest window's model.
    """
    recovered = con.execute(
        """
        UPDATE devices SET
            last_seen = late.last_seen,
            dropped_total = devices.dropped_total + late.dropped,
            last_window_end = CASE WHEN devices.last_window_end IS NULL
                OR late.window_end >= devices.last_window_end THEN late.window_end
                ELSE devices.last_window_end END,
            serving_model = CASE WHEN devices.last_window_end IS NULL
                OR late.window_end >= devices.last_window_end THEN late.model
                ELSE devices.serving_model END,
            serving_version = CASE WHEN devices.last_window_end IS NULL
                OR late.window_end >= devices.last_window_end THEN late.version
                ELSE devices.serving_version END
        FROM (
            SELECT b.device_id, max(b.received_at) AS last_seen, sum(b.dropped_before) AS dropped,
                   max(b.window_end) AS window_end, arg_max(b.model, b.window_end) AS model,
                   arg_max(b.version, b.window_end) AS version
            FROM batches b JOIN devices d ON b.device_id = d.device_id
            WHERE (d.last_seen IS NULL OR b.received_at > d.last_seen)
              AND b.received_at > (  -- prunes row groups by their min/max: saves are recent
                  SELECT CASE WHEN count(*) > count(last_seen) THEN '-infinity'::TIMESTAMPTZ
                              ELSE min(last_seen) END FROM devices)
            GROUP BY b.device_id
        ) late
        WHERE devices.device_id = late.device_id
        """
    ).fetchall()[0][0]
    if recovered:
        log.info(
            "recovered the telemetry state of %d devices from batches stored after its last save", recovered
        )


def _save_devices(con: duckdb.DuckDBPyConnection, devices: list[Device]) -> None:
    """Devices' telemetry state (in the caller's transaction)."""
    _device_state = _device_table(devices)
    con.execute(_UPDATE_DEVICES)


def _device_table(devices: list[Device]) -> pa.Table:
    return pa.table(
        {
            "device_id": pa.array([d.device_id for d in devices], pa.string()),
            "last_seen": pa.array([d.last_seen for d in devices], STAMP),
            "last_window_end": pa.array([d.last_window_end for d in devices], STAMP),
            "serving_model": pa.array([d.serving_model for d in devices], pa.string()),
            "serving_version": pa.array([d.serving_version for d in devices], pa.int32()),
            "dropped_total": pa.array([d.dropped_total for d in devices], pa.int64()),
        }
    )


# --- pooling in SQL (TelemetryStore.pooled_windows) ------------------------------------------------


def _pool_in_sql(
    cur: duckdb.DuckDBPyConnection, where: str, params: dict[str, Any], window: timedelta | None
) -> list[PooledWindow] | None:
    if window is not None:
        step = window.total_seconds()
        if step <= 0:
            raise ValueError("the pooling window must be positive")
        # the float arithmetic of drift.pool: window_start.timestamp() / step, floored
        slot = "floor(epoch_us(window_start)::DOUBLE / 1e6 / $step)"
        key = f"model, version, coalesce(device_group, ''), {slot}"
        params = params | {"step": step}
    else:
        slot, key = "NULL::DOUBLE", "model, version, device_group"
    # each selected batch: its window (wid, in the order drift.pool returns windows) and its
    # place in the order batches() returns them (ord), which pooling adds them up in
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE _pool AS SELECT seq, model, version, device_group, "  # noqa: S608 (our SQL; values are bound)
        "window_start, window_end, row_count, calibrated_rows, expected_correct, errors, "
        f"{slot} AS slot, row_number() OVER (ORDER BY window_end, seq) AS ord, "
        f"dense_rank() OVER (ORDER BY {key}) AS wid FROM batches WHERE {where}",
        params,
    )
    try:
        return _pooled(cur, window)
    finally:
        cur.execute("DROP TABLE IF EXISTS _pool")


def _pooled(cur: duckdb.DuckDBPyConnection, window: timedelta | None) -> list[PooledWindow] | None:
    heads = cur.execute(
        "SELECT wid, any_value(model), any_value(version), arg_min_null(device_group, ord), any_value(slot), "
        "count(*), sum(row_count), epoch_us(min(window_start)), epoch_us(max(window_end)), arg_min(seq, ord) "
        "FROM _pool GROUP BY wid ORDER BY wid"
    ).fetchall()
    if not heads:
        return []
    firsts = [h[-1] for h in heads]
    features = _histograms(cur, "batch_features", "feature", firsts, filled_only=True)
    scores = _histograms(cur, "batch_scores", "score", firsts, filled_only=False)
    if features is None or scores is None:
        return None
    predictions: dict[int, dict[str, int]] = {}
    for wid, label, count in cur.execute(
        "SELECT p.wid, l.label, sum(l.predicted) FROM batch_labels l JOIN _pool p USING (seq) "
        "GROUP BY ALL HAVING sum(l.predicted) > 0 ORDER BY p.wid, min(p.ord)"
    ).fetchall():
        predictions.setdefault(wid, {})[label] = int(count)
    errors: dict[int, dict[str, int]] = {}
    for wid, kind, count in cur.execute(
        "SELECT p.wid, e.key, sum(e.value::BIGINT) FROM _pool p, json_each(p.errors) e "
        "WHERE p.errors <> '{}' GROUP BY ALL ORDER BY p.wid, min(p.ord)"
    ).fetchall():
        errors.setdefault(wid, {})[kind] = int(count)
    calibration = _calibration(cur)
    out = []
    for wid, model, version, group, slot, batches, rows, first_us, last_us, _ in heads:
        if window is not None:
            start = datetime.fromtimestamp(slot * window.total_seconds(), UTC)
            end = start + window
        else:
            start, end = _EPOCH + timedelta(microseconds=first_us), _EPOCH + timedelta(microseconds=last_us)
        out.append(
            PooledWindow(
                model=model,
                version=version,
                group=group,
                start=start,
                end=end,
                batches=int(batches),
                rows=int(rows),
                features=features.get(wid, {}),
                scores=scores.get(wid, {}),
                predictions=predictions.get(wid, {}),
                calibration=calibration.get(wid),
                errors=errors.get(wid, {}),
            )
        )
    return out


def _histograms(
    cur: duckdb.DuckDBPyConnection, table: str, name: str, firsts: list[int], *, filled_only: bool
) -> dict[int, dict[str, Any]] | None:
    """Per window and name, the summed histograms of ``table``; None where pooling would raise.

    ``filled_only`` (inputs): bins must agree among the batches that counted something, and the
    bins are the first such batch's (the last batch's when none did); otherwise (scores) bins
    must agree among all batches and are the first batch's. Counts must have one length.
    ``firsts``: the first batch of each window, whose histograms tell how many bins to sum.
    """
    # each bin is one sum() of a list element: as many as the histograms have, no more
    found_bins = cur.execute(
        f"SELECT max(len(counts)) FROM {table} WHERE seq IN (SELECT unnest($seqs))",  # noqa: S608 (our SQL)
        {"seqs": firsts},
    ).fetchall()[0][0]
    bins, precise = max(int(found_bins or 0), 1), False
    while True:
        rows = _histogram_rows(cur, table, name, bins, filled_only=filled_only, precise=precise)
        longest = max((r[4] or 0 for r in rows), default=0)
        if longest > bins:
            bins = longest
        elif not precise and not all(r[3] and r[3] == r[4] and r[5] == r[6] and not r[7] for r in rows):
            precise = True  # empty histograms, or bins that differ: see which batches count
        else:
            break
    needed: set[int] = set()
    for r in rows:
        (_, _, full, shortest, longest, low, high, unknown, first_full, first, last) = r[:11]
        if (full and shortest != longest) or low != high or unknown:
            return None  # pooling these batches raises: let it
        needed.update(s for s in (first_full, first, last) if s is not None)
    extra_cols = "categories" if filled_only else "NULL"
    looked_up = {
        (seq, n): (edges, values, rowid)
        for seq, n, edges, values, rowid in cur.execute(
            f"SELECT seq, {name}, edges, {extra_cols}, rowid FROM {table} "  # noqa: S608 (our SQL)
            "WHERE seq IN (SELECT unnest($seqs))",
            {"seqs": sorted(needed)},
        ).fetchall()
    }
    found: dict[int, list[tuple[int, int, str, Any]]] = {}
    for r in rows:
        (wid, n, full, shortest, _, _, _, _, first_full, first, last, first_ord, missing, oor, sums) = r
        length = shortest if full else 0
        counts = [int(c) for c in sums[:length]]
        if filled_only:
            edges, values, _ = looked_up[first_full if full else last, n]
            item: FeatureTelemetry | Histogram = FeatureTelemetry(
                edges=edges, values=values, counts=counts, missing=int(missing), out_of_range=int(oor)
            )
        else:
            edges = looked_up[first, n][0]
            item = Histogram(edges=edges, counts=counts, missing=int(missing))
        # dict order of pooling: first appearance (batch order, then the order within that batch)
        found.setdefault(wid, []).append((first_ord, looked_up[first, n][2], n, item))
    return {wid: {n: item for _, _, n, item in sorted(items)} for wid, items in found.items()}


def _histogram_rows(
    cur: duckdb.DuckDBPyConnection, table: str, name: str, bins: int, *, filled_only: bool, precise: bool
) -> list[tuple[Any, ...]]:
    """Per window and name: wid, name, batches that counted, their shortest and longest counts, lowest
    and highest bins fingerprint and how many are missing (among the batches whose bins must
    agree), first batch that counted, first batch, last batch, first batch's place, missing sum,
    out-of-range sum, the counts summed over ``bins`` positions.

    Not ``precise``: every batch taken as one that counted (exact when all did, which the shortest
    counts tell); the FILTER clauses of the precise query double the time of the sums.
    """
    sums = ", ".join(f"sum(h.counts[{i}])" for i in range(1, bins + 1))
    out_of_range = "sum(h.out_of_range)" if filled_only else "0"
    if not precise:
        rows = cur.execute(
            f"SELECT p.wid, h.{name}, count(*), min(len(h.counts)), max(len(h.counts)), min(h.bins), "  # noqa: S608 (our SQL)
            f"max(h.bins), count(*) - count(h.bins), arg_min(h.seq, p.ord), min(p.ord), sum(h.missing), "
            f"{out_of_range}, list_value({sums}) FROM {table} h JOIN _pool p USING (seq) GROUP BY ALL"
        ).fetchall()
        return [(*r[:9], r[8], None, *r[9:]) for r in rows]
    filled = "h.n > 0"
    agree = filled if filled_only else "true"
    return cur.execute(
        f"SELECT p.wid, h.{name}, count(*) FILTER ({filled}), min(h.n) FILTER ({filled}), "  # noqa: S608 (our SQL)
        f"max(h.n) FILTER ({filled}), min(h.bins) FILTER ({agree}), max(h.bins) FILTER ({agree}), "
        f"count(*) FILTER ({agree} AND h.bins IS NULL), arg_min(h.seq, p.ord) FILTER ({filled}), "
        f"arg_min(h.seq, p.ord), arg_max(h.seq, p.ord), min(p.ord), sum(h.missing), {out_of_range}, "
        f"list_value({sums}) FROM (SELECT seq, {name}, len(counts) AS n, counts, bins, missing"
        f"{', out_of_range' if filled_only else ''} FROM {table}) h JOIN _pool p USING (seq) GROUP BY ALL"
    ).fetchall()


def _calibration(cur: duckdb.DuckDBPyConnection) -> dict[int, CalibratedSums]:
    """Per window, the calibrated sums of its batches, added in batch order as pooling does.

    Floating-point addition depends on the order, so these are not SQL sums: the values come
    out in batch order and each run of them is added up left to right (``np.cumsum``).
    """
    per_batch = cur.sql(
        "SELECT wid, calibrated_rows, expected_correct FROM _pool WHERE calibrated_rows IS NOT NULL "
        "ORDER BY wid, ord"
    ).to_arrow_table()
    per_label = cur.sql(
        "SELECT p.wid, l.label, l.calibrated_sum FROM batch_labels l JOIN _pool p USING (seq) "
        "WHERE l.calibrated_sum IS NOT NULL AND p.calibrated_rows IS NOT NULL ORDER BY p.wid, l.label, p.ord"
    ).to_arrow_table()
    sums: dict[int, dict[str, float]] = {}
    labels = per_label.column("label").combine_chunks().dictionary_encode()
    names = labels.dictionary.to_pylist()
    label_ids = labels.indices.to_numpy(zero_copy_only=False)
    label_wids = per_label.column("wid").to_numpy()
    values = per_label.column("calibrated_sum").to_numpy()
    for run in _runs(label_wids, label_ids):
        wid, label = int(label_wids[run.start]), names[label_ids[run.start]]
        sums.setdefault(wid, {})[label] = float(np.cumsum(values[run])[-1])
    out: dict[int, CalibratedSums] = {}
    wids = per_batch.column("wid").to_numpy()
    expected = per_batch.column("expected_correct").to_numpy()
    rows = per_batch.column("calibrated_rows").to_numpy()
    for run in _runs(wids):
        wid = int(wids[run.start])
        out[wid] = CalibratedSums(
            sums=sums.get(wid, {}),
            expected_correct=float(np.cumsum(expected[run])[-1]),
            rows=int(rows[run].sum()),
        )
    return out


def _runs(*keys: np.ndarray) -> list[slice]:
    """The runs of equal consecutive keys (arrays of the same length), as slices."""
    if not len(keys[0]):
        return []
    change = np.zeros(len(keys[0]) - 1, dtype=bool)
    for key in keys:
        change |= key[1:] != key[:-1]
    bounds = [0, *(np.flatnonzero(change) + 1).tolist(), len(keys[0])]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a file written before schema 2 up to it, once: ``bins`` fingerprints, ``batch_scores``.

    Score histograms were only in the payloads then: they are read from there (DuckDB parses
    the JSON; its doubles are the ones the payload holds, bit for bit).
    """
    found = con.execute("SELECT value FROM meta WHERE key = ?", [_SCHEMA_KEY]).fetchall()
    if found:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        columns = con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'batch_features'"
        ).fetchall()
        if ("bins",) not in columns:
            con.execute("ALTER TABLE batch_features ADD COLUMN bins UBIGINT")
        con.execute(f"UPDATE batch_features SET bins = {_FEATURE_BINS} WHERE bins IS NULL")  # noqa: S608 (constant)
        con.execute(
            "INSERT INTO batch_scores (seq, score, edges, counts, missing, bins) "  # noqa: S608 (constant)
            f"SELECT seq, key, edges, counts, missing, {_SCORE_BINS} FROM ("
            "  SELECT b.seq, s.key, (s.value->'edges')::DOUBLE[] AS edges,"
            "    (s.value->'counts')::BIGINT[] AS counts, (s.value->>'missing')::BIGINT AS missing, s.id"
            "  FROM batches b, json_each(b.payload::JSON->'scores') s"
            "  WHERE b.seq NOT IN (SELECT seq FROM batch_scores))"
            " ORDER BY seq, id"  # as ingestion writes them: batch by batch, in the payload's order
        )
        con.execute("INSERT INTO meta VALUES (?, ?)", [_SCHEMA_KEY, _SCHEMA_VERSION])
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


#: the tables :func:`_insert` appends to, their columns in order (``insert_into`` is positional)
_COLUMNS: dict[str, list[str]] = {
    "batches": list(BATCH_TYPES),
    "batch_features": [*FEATURE_TYPES, "bins"],
    "batch_scores": [*SCORE_TYPES, "bins"],
    "batch_labels": list(LABEL_TYPES),
    "feedback": [
        "prediction_id",
        "label",
        "predicted",
        "model",
        "version",
        "device_id",
        "received_at",
        "source",
    ],
}
_BINS = {"batch_features": _FEATURE_BINS, "batch_scores": _SCORE_BINS}
