"""The telemetry store: one DuckDB file, one writer thread, readers on their own cursors.

Tables
------
``batches``
    One row per accepted batch: ``seq`` (store-assigned, joins the child tables),
    ``device_id`` + ``batch_id`` (primary key: the idempotency key), model, version, profile,
    ``device_group``, window start and end, row/request counts, ``errors`` (JSON), the
    spool drops it reports, calibrated-row count and expected-correct sum (CBPE),
    ``received_at``, ``body_sha256`` (of the batch's canonical JSON) and ``payload``: that
    JSON itself, from which :meth:`TelemetryStore.batches` rebuilds the exact
    :class:`TelemetryBatch` the device sent.
``batch_features``
    One row per batch and feature: reference ``edges`` or ``categories``, ``counts`` (a list,
    one per bin), ``missing``, ``out_of_range`` — histograms summed in SQL with ``UNNEST``.
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
and the HTTP layer answers 429. Consecutive batches in the queue are written in one
transaction, as Arrow tables (``INSERT ... SELECT * FROM arrow_table``), never row by
row. A batch's future resolves only after ``COMMIT``, which makes DuckDB write and sync
its write-ahead log, so an acknowledged batch survives a crash of the process.

The devices (a few thousand rows) are also kept in memory, so device authentication
costs no query; the writer updates the copy after each commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from edgeml.agent.telemetry import TelemetryBatch

__all__ = [
    "BatchConflict",
    "CompactResult",
    "Device",
    "DeviceExists",
    "FeedbackItem",
    "FeedbackRecord",
    "Ingested",
    "Overloaded",
    "RowsPoint",
    "StoreClosed",
    "TelemetryAck",
    "TelemetryStore",
    "UnknownDevice",
    "hash_token",
]

log = logging.getLogger("edgeml.central.db")

#: most queued jobs the writer takes into one transaction
MAX_GROUP = 512
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
    payload VARCHAR NOT NULL,
    PRIMARY KEY (device_id, batch_id)
);
CREATE TABLE IF NOT EXISTS batch_features (
    seq BIGINT NOT NULL,
    feature VARCHAR NOT NULL,
    edges DOUBLE[],
    categories VARCHAR[],
    counts BIGINT[] NOT NULL,
    missing BIGINT NOT NULL,
    out_of_range BIGINT NOT NULL
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


@dataclass
class _Ingest:
    batch: TelemetryBatch
    payload: str
    digest: str
    future: Future[Ingested] = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    after: Callable[[duckdb.DuckDBPyConnection, Any], None] | None
    future: Future[Any] = field(default_factory=Future)


_STOP = object()


class TelemetryStore:
    """The central node's database; see the module docstring. Use as a context manager or ``close()``."""

    def __init__(self, path: Path, *, max_queued_batches: int = 2000, retention_days: int = 30) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_queued_batches = max_queued_batches
        self.retention_days = retention_days
        self._db = duckdb.connect(str(path))
        self._db.execute("SET disabled_compression_methods = 'dict_fsst'")
        self._cursor_lock = threading.Lock()
        self._writer_con = self._db.cursor()
        self._writer_con.execute(_SCHEMA)
        self._next_seq = int(
            self._writer_con.execute("SELECT coalesce(max(seq), 0) + 1 FROM batches").fetchall()[0][0]
        )
        self._devices: dict[str, Device] = {}
        self._token_of: dict[str, str] = {}  # device id -> sha256 of its token
        self._by_token: dict[str, str] = {}  # sha256 of an active device's token -> device id
        self._memory_lock = threading.Lock()
        devices = f"SELECT {_DEVICE_COLUMNS} FROM devices"  # noqa: S608 (a constant)
        for row in self._writer_con.execute(devices).fetchall():
            device, token_hash = _device_row(row)
            self._remember(device, token_hash)
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
            self._writer_con.execute("CHECKPOINT")
        finally:
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
        payload = batch.model_dump_json()
        job = _Ingest(batch, payload, hashlib.sha256(payload.encode()).hexdigest())
        with self._pending_lock:
            if self._closed:
                raise StoreClosed("the telemetry store is closed")
            if self._pending >= self.max_queued_batches:
                raise Overloaded(f"{self._pending} batches are waiting to be written")
            self._pending += 1
        self._queue.put(job)
        return job.future

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
            if device.device_id in self._devices:
                raise DeviceExists(f"device {device.device_id} is already registered")
            con.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, 0)",
                [device.device_id, group, profile, model, token_hash, device.registered_at],
            )
            return device

        self.write(insert, after=lambda _con, d: self._remember(d, token_hash)).result()
        return device, token

    def decommission(self, device_id: str) -> Device:
        """Retire a device: its token stops working when this returns. Repeating it changes nothing."""

        def retire(con: duckdb.DuckDBPyConnection) -> Device:
            device = self._devices.get(device_id)
            if device is None:
                raise UnknownDevice(f"no device {device_id}")
            if not device.active:
                return device
            now = datetime.now(UTC)
            con.execute("UPDATE devices SET decommissioned_at = ? WHERE device_id = ?", [now, device_id])
            return device.model_copy(update={"decommissioned_at": now})

        def forget(_con: duckdb.DuckDBPyConnection, device: Device) -> None:
            self._remember(device, self._token_of[device_id])

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
                "received_at": pa.array([now] * len(items), _STAMP),
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
            for child in ("batch_features", "batch_labels"):
                con.execute(
                    f"DELETE FROM {child} WHERE seq IN (SELECT seq FROM batches WHERE window_end < ?)",  # noqa: S608 (a constant)
                    [cutoff],
                )
            batches = con.execute("DELETE FROM batches WHERE window_end < ?", [cutoff]).fetchall()[0][0]
            feedback = con.execute("DELETE FROM feedback WHERE received_at < ?", [cutoff]).fetchall()[0][0]
            return CompactResult(int(batches), int(feedback))

        def checkpoint(con: duckdb.DuckDBPyConnection, result: CompactResult) -> None:
            if result.batches or result.feedback:
                con.execute("CHECKPOINT")

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
            run: list[_Ingest] = []
            stop = False
            for job in jobs:
                if isinstance(job, _Ingest):
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

    def _ingest(self, jobs: list[_Ingest]) -> None:
        try:
            results = self._write_batches(jobs)
        except Exception as exc:  # the transaction rolled back: nothing of these is stored
            log.exception("telemetry write failed")
            results = [StoreClosed(f"the telemetry store could not write: {exc}")] * len(jobs)
        finally:
            with self._pending_lock:
                self._pending -= len(jobs)
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _write_batches(self, jobs: list[_Ingest]) -> list[Ingested | Exception]:
        con = self._writer_con
        keys = pa.table(
            {"device_id": [j.batch.device_id for j in jobs], "batch_id": [j.batch.batch_id for j in jobs]}
        )
        con.register("_keys", keys)
        try:
            stored = con.execute(
                "SELECT b.device_id, b.batch_id, b.body_sha256, epoch_us(b.received_at) FROM batches b "
                "JOIN _keys k ON b.device_id = k.device_id AND b.batch_id = k.batch_id"
            ).fetchall()
        finally:
            con.unregister("_keys")
        known: dict[tuple[str, str], tuple[str, TelemetryAck]] = {
            (d, b): (digest, TelemetryAck(device_id=d, batch_id=b, received_at=_from_us(us)))
            for d, b, digest, us in stored
        }
        now = datetime.now(UTC)
        rows = _Rows()
        results: list[Ingested | Exception] = []
        accepted: list[TelemetryBatch] = []
        seq = self._next_seq
        for job in jobs:
            batch = job.batch
            key = (batch.device_id, batch.batch_id)
            if key in known:
                digest, ack = known[key]
                results.append(
                    Ingested(ack, duplicate=True)
                    if hmac.compare_digest(digest, job.digest)
                    else BatchConflict(
                        f"batch {batch.batch_id} was already received from {batch.device_id} "
                        "with a different body"
                    )
                )
                continue
            ack = TelemetryAck(device_id=batch.device_id, batch_id=batch.batch_id, received_at=now)
            known[key] = (job.digest, ack)
            rows.add(seq, batch, job, now)
            accepted.append(batch)
            results.append(Ingested(ack, duplicate=False))
            seq += 1
        if not accepted:
            return results
        devices = self._seen(accepted, now)
        with self._transaction() as con:
            _insert(con, "batches", rows.batches())
            _insert(con, "batch_features", rows.features())
            _insert(con, "batch_labels", rows.labels())
            _update_devices(con, devices)
        self._next_seq = seq
        with self._memory_lock:
            for device in devices:
                self._devices[device.device_id] = device
        return results

    def _seen(self, batches: list[TelemetryBatch], now: datetime) -> list[Device]:
        """The devices' new state after these batches arrived (not stored yet)."""
        changed: dict[str, Device] = {}
        for batch in batches:
            device = changed.get(batch.device_id) or self._devices.get(batch.device_id)
            if device is None:  # not registered: stored anyway (callers authenticate), no fleet entry
                continue
            update: dict[str, Any] = {
                "last_seen": now,
                "dropped_total": device.dropped_total + batch.dropped_before,
            }
            if device.last_window_end is None or batch.window_end >= device.last_window_end:
                update |= {
                    "last_window_end": batch.window_end,
                    "serving_model": batch.model,
                    "serving_version": batch.version,
                }
            changed[batch.device_id] = device.model_copy(update=update)
        return list(changed.values())

    def _remember(self, device: Device, token_hash: str) -> None:
        with self._memory_lock:
            self._devices[device.device_id] = device
            self._token_of[device.device_id] = token_hash
            if device.active:
                self._by_token[token_hash] = device.device_id
            else:
                self._by_token.pop(token_hash, None)

    # --- reads --------------------------------------------------------------------------------

    def authenticate(self, token: str) -> Device | None:
        """The active device holding ``token``, or None."""
        presented = hash_token(token)
        with self._memory_lock:
            device_id = self._by_token.get(presented)
            if device_id is None or not hmac.compare_digest(self._token_of[device_id], presented):
                return None
            return self._devices[device_id]

    def device(self, device_id: str) -> Device | None:
        with self._memory_lock:
            return self._devices.get(device_id)

    def devices(self) -> list[Device]:
        """Every device ever registered, decommissioned ones included, by id."""
        with self._memory_lock:
            return sorted(self._devices.values(), key=lambda d: d.device_id)

    @contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._cursor_lock:
            if self._closed and not self._writer.is_alive():
                raise StoreClosed("the telemetry store is closed")
            cursor = self._db.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

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
        sql = f"SELECT payload FROM batches WHERE {_where(where)} ORDER BY window_end, seq"  # noqa: S608 (fixed SQL; values are bound)
        with self._reader() as cur:
            payloads = cur.sql(sql, params=params).to_arrow_table().column("payload").to_pylist()
        return [TelemetryBatch.model_validate_json(p) for p in payloads]

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
    if data.num_rows == 0:
        return
    name = f"_new_{table}"
    con.register(name, data)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")  # noqa: S608 (our table names)
    finally:
        con.unregister(name)


def _update_devices(con: duckdb.DuckDBPyConnection, devices: list[Device]) -> None:
    if not devices:
        return
    table = pa.table(
        {
            "device_id": [d.device_id for d in devices],
            "last_seen": pa.array([d.last_seen for d in devices], _STAMP),
            "last_window_end": pa.array([d.last_window_end for d in devices], _STAMP),
            "serving_model": [d.serving_model for d in devices],
            "serving_version": pa.array([d.serving_version for d in devices], pa.int32()),
            "dropped_total": pa.array([d.dropped_total for d in devices], pa.int64()),
        }
    )
    con.register("_seen", table)
    try:
        con.execute(
            "UPDATE devices SET last_seen = s.last_seen, last_window_end = s.last_window_end, "
            "serving_model = s.serving_model, serving_version = s.serving_version, "
            "dropped_total = s.dropped_total FROM _seen s WHERE devices.device_id = s.device_id"
        )
    finally:
        con.unregister("_seen")


class _Rows:
    """Column lists for one transaction's new batches and their child rows."""

    def __init__(self) -> None:
        self.b: dict[str, list[Any]] = {name: [] for name in _BATCH_TYPES}
        self.f: dict[str, list[Any]] = {name: [] for name in _FEATURE_TYPES}
        self.lb: dict[str, list[Any]] = {name: [] for name in _LABEL_TYPES}

    def add(self, seq: int, batch: TelemetryBatch, job: _Ingest, now: datetime) -> None:
        cal = batch.calibration
        for name, value in (
            ("seq", seq),
            ("device_id", batch.device_id),
            ("batch_id", batch.batch_id),
            ("model", batch.model),
            ("version", batch.version),
            ("profile", batch.profile),
            ("device_group", batch.group),
            ("window_start", batch.window_start),
            ("window_end", batch.window_end),
            ("row_count", batch.rows),
            ("request_count", batch.requests),
            ("errors", json.dumps(batch.errors)),
            ("dropped_before", batch.dropped_before),
            ("calibrated_rows", cal.rows if cal else None),
            ("expected_correct", cal.expected_correct if cal else None),
            ("received_at", now),
            ("body_sha256", job.digest),
            ("payload", job.payload),
        ):
            self.b[name].append(value)
        f = self.f
        for feature, counts in batch.features.items():
            f["seq"].append(seq)
            f["feature"].append(feature)
            f["edges"].append(counts.edges)
            f["categories"].append(counts.values)
            f["counts"].append(counts.counts)
            f["missing"].append(counts.missing)
            f["out_of_range"].append(counts.out_of_range)
        sums = cal.sums if cal else {}
        for label in dict.fromkeys([*batch.predictions, *sums]):
            self.lb["seq"].append(seq)
            self.lb["label"].append(label)
            self.lb["predicted"].append(batch.predictions.get(label, 0))
            self.lb["calibrated_sum"].append(sums.get(label))

    def batches(self) -> pa.Table:
        return _table(self.b, _BATCH_TYPES)

    def features(self) -> pa.Table:
        return _table(self.f, _FEATURE_TYPES)

    def labels(self) -> pa.Table:
        return _table(self.lb, _LABEL_TYPES)


def _table(columns: dict[str, list[Any]], types: dict[str, pa.DataType]) -> pa.Table:
    return pa.table({name: pa.array(values, types[name]) for name, values in columns.items()})


_STAMP = pa.timestamp("us", tz="UTC")
_BATCH_TYPES: dict[str, pa.DataType] = {
    "seq": pa.int64(),
    "device_id": pa.string(),
    "batch_id": pa.string(),
    "model": pa.string(),
    "version": pa.int32(),
    "profile": pa.string(),
    "device_group": pa.string(),
    "window_start": _STAMP,
    "window_end": _STAMP,
    "row_count": pa.int64(),
    "request_count": pa.int64(),
    "errors": pa.string(),
    "dropped_before": pa.int64(),
    "calibrated_rows": pa.int64(),
    "expected_correct": pa.float64(),
    "received_at": _STAMP,
    "body_sha256": pa.string(),
    "payload": pa.string(),
}
_FEATURE_TYPES: dict[str, pa.DataType] = {
    "seq": pa.int64(),
    "feature": pa.string(),
    "edges": pa.list_(pa.float64()),
    "categories": pa.list_(pa.string()),
    "counts": pa.list_(pa.int64()),
    "missing": pa.int64(),
    "out_of_range": pa.int64(),
}
_LABEL_TYPES: dict[str, pa.DataType] = {
    "seq": pa.int64(),
    "label": pa.string(),
    "predicted": pa.int64(),
    "calibrated_sum": pa.float64(),
}
