"""The telemetry store on DuckDB: one file, one writer thread, readers on their own cursors.

:class:`DuckDBStore` is the :class:`~edgeml.telemetry.store.TelemetryStore` of one DuckDB file
(:mod:`.tables`): writes go through its :class:`~edgeml.telemetry.db.writer.Writer`, reads
(:mod:`.queries`) run on cursors of their own, with all of DuckDB's threads while they run
(the writer runs on ``WRITE_THREADS``). The device registry (:mod:`.devices`) is kept in
memory. The central node runs this store in a process of its own
(:mod:`edgeml.telemetry.process`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from edgeml.errors import DeviceExists, StoreClosed, UnknownDevice
from edgeml.telemetry.db import queries
from edgeml.telemetry.db.batch_group import STAMP, BatchGroup
from edgeml.telemetry.db.devices import (
    DEVICE_COLUMNS,
    DeviceDirectory,
    device_row,
    hash_token,
    recover_devices,
    save_devices,
)
from edgeml.telemetry.db.sealed import encryption_key
from edgeml.telemetry.db.tables import CATALOG, DEFAULT_MEMORY_LIMIT, connect, create, insert
from edgeml.telemetry.db.writer import Writer
from edgeml.telemetry.schema import (
    CompactResult,
    Device,
    ErasedPredictions,
    FeedbackItem,
    FeedbackRecord,
    Ingested,
    LabelledRow,
    LabelsStored,
    Outcomes,
    PooledWindow,
    PredictionLogBatch,
    RowsPoint,
    TelemetryBatch,
)

__all__ = ["REASSIGNABLE", "WRITE_THREADS", "DuckDBStore"]

#: what an admin may change of a device's enrolment (:meth:`DuckDBStore.reassign`)
REASSIGNABLE = ("group", "model", "profile")

log = logging.getLogger("edgeml.telemetry.db")

T = TypeVar("T")

#: DuckDB threads while only telemetry is written. A group's insert is a few small pipelines:
#: with two threads DuckDB handed their tasks to its pool and waited for them, and a commit of
#: 64 batches took ~15% longer (more beside a busy serving process); reads that scan a fleet's
#: day, and compaction, get every thread while they run (``_parallel``).
WRITE_THREADS = 1


class DuckDBStore:
    """The central node's database; see the module docstring. Use as a context manager or ``close()``."""

    def __init__(
        self,
        path: Path,
        *,
        max_queued_batches: int = 2000,
        retention_days: int = 30,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        unsafe_crypto: bool | None = None,
    ) -> None:
        """``unsafe_crypto``: allow DuckDB's weak built-in crypto for a sealed file (None: as
        ``EDGEML_TELEMETRY_UNSAFE_CRYPTO`` says; see :mod:`.sealed`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_queued_batches = max_queued_batches
        self.retention_days = retention_days
        self._db = connect(path, memory_limit, encryption_key(path), unsafe_crypto)
        self._cursor_lock = threading.Lock()
        self._threads_con = self._cursor()  # sets DuckDB's threads (under _threads_lock)
        self._threads_lock = threading.Lock()
        self._threads = int(self._threads_con.execute("SELECT current_setting('threads')").fetchall()[0][0])
        self._threads_con.execute(f"SET threads = {WRITE_THREADS}")
        self._parallel_users = 0
        self._writer_con = self._cursor()
        create(self._writer_con)
        recover_devices(self._writer_con)
        self.directory = DeviceDirectory()
        devices = f"SELECT {DEVICE_COLUMNS} FROM devices"  # noqa: S608 (a constant)
        for row in self._writer_con.execute(devices).fetchall():
            self.directory.remember(*device_row(row))
        self._writer = Writer(self._writer_con, self.directory, max_queued_batches)

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Write everything queued, checkpoint, close. Safe to call twice."""
        if not self._writer.stop():
            return
        try:
            if self._writer.unsaved:
                with self._writer.transaction() as con:
                    save_devices(con, list(self._writer.unsaved.values()))
            with self._parallel():
                self._writer_con.execute("CHECKPOINT")
        finally:
            self._threads_con.close()
            self._writer_con.close()
            self._db.close()

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def queued_batches(self) -> int:
        return self._writer.pending

    def writer_alive(self) -> bool:
        return not self._writer.closed and self._writer.running()

    # --- writes -------------------------------------------------------------------------------

    def submit(self, batch: TelemetryBatch) -> Future[Ingested]:
        """Queue ``batch``; the future resolves after it is committed (or was already stored).

        Raises :class:`~edgeml.errors.Overloaded` when ``max_queued_batches`` wait already. The
        future fails with :class:`~edgeml.errors.BatchConflict` when the id was used with a
        different body.
        """
        return self._writer.submit(batch)

    def submit_group(self, group: BatchGroup) -> Future[Outcomes]:
        """Queue a group built elsewhere; it is committed with the telemetry waiting beside it.

        The future holds each batch's outcome, in order, once committed, or fails (the group
        was not stored). Not refused for overload: the caller bounds what it hands over (the
        serving process of the central node counts its batches against ``max_queued_batches``).
        """
        return self._writer.submit_group(group)

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
        """:meth:`Writer.write <edgeml.telemetry.db.writer.Writer.write>`: ``fn`` in the writer's queue."""
        return self._writer.write(fn, after=after)

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

    def reassign(self, device_id: str, changes: dict[str, str | None]) -> tuple[Device, Device]:
        """Change what a device is enrolled with (``group``, ``model``, ``profile``); (before, after)."""
        unknown = set(changes) - set(REASSIGNABLE)
        if unknown:
            raise ValueError(f"cannot reassign {sorted(unknown)}: only {', '.join(REASSIGNABLE)}")

        def change(con: duckdb.DuckDBPyConnection) -> tuple[Device, Device]:
            device = self.directory.device(device_id)
            if device is None:
                raise UnknownDevice(f"no device {device_id}")
            after = device.model_copy(update=changes)
            con.execute(
                "UPDATE devices SET device_group = ?, profile = ?, model = ? WHERE device_id = ?",
                [after.group, after.profile, after.model, device_id],
            )
            return device, after

        def remember(_con: duckdb.DuckDBPyConnection, result: tuple[Device, Device]) -> None:
            self.directory.update([result[1]])

        result: tuple[Device, Device] = self.write(change, after=remember).result()
        return result

    def add_feedback(self, items: list[FeedbackItem], source: str) -> int:
        """Store labels; ``source`` is 'admin' or the device that sent them."""
        now = datetime.now(UTC)
        table = pa.table(
            {
                "prediction_id": [i.prediction_id for i in items],
                "label": [json.dumps(i.label) for i in items],
                "predicted": [None if i.predicted is None else json.dumps(i.predicted) for i in items],
                "model": [i.model for i in items],
                "version": pa.array([i.version for i in items], pa.int32()),
                "device_id": [i.device_id for i in items],
                "received_at": pa.array([now] * len(items), STAMP),
                "source": [source] * len(items),
            }
        )

        def append(con: duckdb.DuckDBPyConnection) -> int:
            insert(con, "feedback", table)
            return len(items)

        count: int = self.write(append).result()
        return count

    def add_labels(self, items: list[FeedbackItem], source: str) -> LabelsStored:
        """Store labels, skipping a repeat of a stored (prediction id, label); say which join a prediction."""
        now = datetime.now(UTC)
        labels = [json.dumps(i.label) for i in items]

        def append(con: duckdb.DuckDBPyConnection) -> LabelsStored:
            offered = pa.table(
                {"prediction_id": [i.prediction_id for i in items], "label": labels, "n": range(len(items))}
            )
            con.register("offered", offered)
            try:
                # the first of equal labels in the request, and only if not stored before
                fresh = {
                    r[0]
                    for r in con.execute(
                        "SELECT min(n) FROM offered o WHERE NOT EXISTS (SELECT 1 FROM feedback f "
                        "WHERE f.prediction_id = o.prediction_id AND f.label = o.label) "
                        "GROUP BY prediction_id, label"
                    ).fetchall()
                }
                known = {
                    r[0]
                    for r in con.execute(
                        "SELECT DISTINCT prediction_id FROM offered JOIN predictions USING (prediction_id)"
                    ).fetchall()
                }
            finally:
                con.unregister("offered")
            kept = [i for n, i in enumerate(items) if n in fresh]
            table = pa.table(
                {
                    "prediction_id": [i.prediction_id for i in kept],
                    "label": [labels[n] for n in sorted(fresh)],
                    "predicted": [None if i.predicted is None else json.dumps(i.predicted) for i in kept],
                    "model": [i.model for i in kept],
                    "version": pa.array([i.version for i in kept], pa.int32()),
                    "device_id": [i.device_id for i in kept],
                    "received_at": pa.array([now] * len(kept), STAMP),
                    "source": [source] * len(kept),
                }
            )
            insert(con, "feedback", table)
            unknown = [i.prediction_id for i in kept if i.prediction_id not in known]
            return LabelsStored(
                accepted=len(kept),
                duplicates=len(items) - len(kept),
                joined=len(kept) - len(unknown),
                unknown=len(unknown),
                unknown_ids=unknown[:20],
            )

        stored: LabelsStored = self.write(append).result()
        return stored

    def add_predictions(self, batch: PredictionLogBatch) -> int:
        """Store a device's logged predictions; an id stored before keeps its first row. Rows new."""
        now = datetime.now(UTC)
        rows = batch.predictions
        table = pa.table(
            {
                "prediction_id": [r.prediction_id for r in rows],
                "model": [r.model for r in rows],
                "version": pa.array([r.version for r in rows], pa.int32()),
                "device_id": [batch.device_id] * len(rows),
                "predicted_at": pa.array([r.at for r in rows], STAMP),
                "inputs": [json.dumps(r.inputs) for r in rows],
                "prediction": [None if r.prediction is None else json.dumps(r.prediction) for r in rows],
                "traceparent": pa.array([r.traceparent for r in rows], pa.string()),
                "received_at": pa.array([now] * len(rows), STAMP),
            }
        )

        def append(con: duckdb.DuckDBPyConnection) -> int:
            con.register("offered", table)
            try:
                fresh = con.sql(
                    "SELECT * FROM offered o WHERE NOT EXISTS "
                    "(SELECT 1 FROM predictions p WHERE p.prediction_id = o.prediction_id) "
                    "QUALIFY row_number() OVER (PARTITION BY prediction_id) = 1"
                ).to_arrow_table()
            finally:
                con.unregister("offered")
            insert(con, "predictions", fresh)
            return int(fresh.num_rows)

        count: int = self.write(append).result()
        return count

    def prediction_traces(self, prediction_ids: list[str]) -> dict[str, str]:
        """The W3C traceparent of each prediction (of those stored and traced)."""
        with self._reader() as cur:
            found = cur.execute(
                "SELECT prediction_id, min(traceparent) FROM predictions WHERE prediction_id IN "
                "(SELECT unnest(?)) AND traceparent IS NOT NULL GROUP BY prediction_id",
                [prediction_ids],
            ).fetchall()
        return {str(pid): str(tp) for pid, tp in found}

    def labelled_count(self, model: str, since: datetime | None = None) -> int:
        """:func:`queries.labelled_count <edgeml.telemetry.db.queries.labelled_count>`."""
        return queries.labelled_count(self._reader, model, since)

    def labelled_rows(self, model: str, since: datetime | None = None) -> list[LabelledRow]:
        """:func:`queries.labelled_rows <edgeml.telemetry.db.queries.labelled_rows>`."""
        return queries.labelled_rows(self._reader, model, since)

    def compact(self, now: datetime | None = None, models: Mapping[str, int] | None = None) -> CompactResult:
        """Delete telemetry whose window ended, and feedback received, over ``retention_days`` ago.

        ``models`` keeps a model's rows fewer days than that: its spec's ``retention_days`` (as its
        signed manifests say), so telemetry and labels age out with the lake rows they describe.
        A CHECKPOINT follows, so the freed blocks are reused by new data.

        Logged predictions age out by the same two rules. Compliance rule: every table that keeps
        rows about predictions or labels ages out here, and is listed in docs/compliance.md.
        """
        at = now or datetime.now(UTC)
        cutoff = at - timedelta(days=self.retention_days)
        shorter = [
            (m, at - timedelta(days=d)) for m, d in sorted((models or {}).items()) if d < self.retention_days
        ]
        writer = self._writer

        def delete(con: duckdb.DuckDBPyConnection) -> CompactResult:
            # first the devices' unsaved state, which recovery would rebuild from batches deleted here
            if writer.unsaved:
                save_devices(con, list(writer.unsaved.values()))
            for child in ("batch_features", "batch_scores", "batch_labels"):
                con.execute(
                    f"DELETE FROM {child} WHERE seq IN (SELECT seq FROM batches WHERE window_end < ?)",  # noqa: S608 (a constant)
                    [cutoff],
                )
            batches = con.execute("DELETE FROM batches WHERE window_end < ?", [cutoff]).fetchall()[0][0]
            feedback = con.execute("DELETE FROM feedback WHERE received_at < ?", [cutoff]).fetchall()[0][0]
            con.execute("DELETE FROM predictions WHERE received_at < ?", [cutoff])
            for model, before in shorter:
                old = "SELECT seq FROM batches WHERE model = ? AND window_end < ?"
                for table in ("batch_features", "batch_scores", "batch_labels", "batches"):
                    sql = f"DELETE FROM {table} WHERE seq IN ({old})"  # noqa: S608 (constants)
                    deleted = con.execute(sql, [model, before]).fetchall()[0][0]
                batches += deleted
                # labels by the model they name (one sent without a model ages out with the node's period)
                sql = "DELETE FROM feedback WHERE model = ? AND received_at < ?"
                feedback += con.execute(sql, [model, before]).fetchall()[0][0]
                con.execute("DELETE FROM predictions WHERE model = ? AND received_at < ?", [model, before])
            return CompactResult(int(batches), int(feedback))

        def checkpoint(con: duckdb.DuckDBPyConnection, result: CompactResult) -> None:
            writer.mark_saved()
            if result.batches or result.feedback:
                con.execute("CHECKPOINT")

        with self._parallel():
            result: CompactResult = self.write(delete, after=checkpoint).result()
        log.info("compaction: %d batches and %d labels deleted", result.batches, result.feedback)
        return result

    def erase_predictions(
        self, column: str, value: str | int | float, model: str | None = None
    ) -> ErasedPredictions:
        """Delete the logged predictions whose input ``column`` equals ``value``, and their labels;
        take the matching rows out of the telemetry batches' row samples (compliance ``none``).

        A number matches the input's number (or text that reads as it); text matches text. A
        CHECKPOINT follows, so the deleted rows leave the file's blocks rather than waiting there.
        A batch keeps its ``body_sha256``: the device's retry of it is still known as a repeat.
        """
        if not column.isidentifier():
            raise ValueError(f"not a column name: {column!r}")
        path = f'$."{column}"'
        target: list[object]
        if isinstance(value, str):
            match, target = "json_extract_string(inputs, ?) = ?", [path, value]
        else:
            match, target = "TRY_CAST(json_extract_string(inputs, ?) AS DOUBLE) = ?", [path, float(value)]
        scope, scoped = ("AND model = ?", [model]) if model is not None else ("", [])

        def delete(con: duckdb.DuckDBPyConnection) -> ErasedPredictions:
            logged = con.execute(
                f"SELECT count(*) FROM predictions WHERE json_exists(inputs, ?) {scope}",  # noqa: S608 (constants)
                [path, *scoped],
            ).fetchall()[0][0]
            ids = [
                r[0]
                for r in con.execute(
                    f"SELECT prediction_id FROM predictions WHERE {match} {scope}",  # noqa: S608 (constants)
                    [*target, *scoped],
                ).fetchall()
            ]
            labels = con.execute(
                "DELETE FROM feedback WHERE prediction_id IN (SELECT unnest(?))", [ids]
            ).fetchall()[0][0]
            predictions = con.execute(
                "DELETE FROM predictions WHERE prediction_id IN (SELECT unnest(?))", [ids]
            ).fetchall()[0][0]
            samples = _erase_samples(con, column, value, scope, scoped)
            return ErasedPredictions(int(predictions), int(labels), bool(logged), samples)

        def checkpoint(con: duckdb.DuckDBPyConnection, result: ErasedPredictions) -> None:
            if result.predictions or result.labels or result.samples:
                con.execute("CHECKPOINT")

        erased: ErasedPredictions = self.write(delete, after=checkpoint).result()
        return erased

    def probe_write(self, timeout: float = 5.0) -> None:
        """Commit a tiny write: raises unless the database accepts writes within ``timeout``."""

        def touch(con: duckdb.DuckDBPyConnection) -> None:
            con.execute("DELETE FROM meta WHERE key = 'probe'")
            con.execute("INSERT INTO meta VALUES ('probe', ?)", [datetime.now(UTC).isoformat()])

        self.write(touch).result(timeout)

    # --- reads --------------------------------------------------------------------------------

    def authenticate(self, token: str) -> Device | None:
        """The active device holding ``token``, or None."""
        return self.directory.authenticate(token)

    def device(self, device_id: str) -> Device | None:
        return self.directory.device(device_id)

    def devices(self) -> list[Device]:
        """Every device ever registered, decommissioned ones included, by id."""
        return self.directory.devices()

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
        """:func:`queries.batches <edgeml.telemetry.db.queries.batches>`."""
        return queries.batches(self._reader, model, version, group, since, until, device=device)

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
        """:func:`queries.pooled_windows <edgeml.telemetry.db.queries.pooled_windows>`."""
        return queries.pooled_windows(
            self._reader, window, since=since, until=until, model=model, version=version, group=group
        )

    def profiles(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> dict[tuple[str, int], str]:
        """:func:`queries.profiles <edgeml.telemetry.db.queries.profiles>`."""
        return queries.profiles(self._reader, since, until)

    def fetch(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows of a read-only query (diagnostics, tests); it sees what is committed."""
        with self._reader() as cur:
            return cur.execute(sql, params or []).fetchall()

    def batch_count(self) -> int:
        with self._reader() as cur:
            return int(cur.execute("SELECT count(*) FROM batches").fetchall()[0][0])

    def rows_over_time(self, since: datetime, bucket: timedelta) -> list[RowsPoint]:
        """:func:`queries.rows_over_time <edgeml.telemetry.db.queries.rows_over_time>`."""
        return queries.rows_over_time(self._reader, since, bucket)

    def feedback(
        self,
        model: str | None = None,
        version: int | None = None,
        group: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[FeedbackRecord]:
        """:func:`queries.feedback <edgeml.telemetry.db.queries.feedback>`."""
        return queries.feedback(self._reader, model, version, group, since, until)

    # --- cursors ------------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own to the store's database (a cursor starts in DuckDB's default one)."""
        cursor = self._db.cursor()
        cursor.execute(f"USE {CATALOG}")
        return cursor

    @contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._cursor_lock:
            if self._writer.closed and not self._writer.running():
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


def _same(found: object, value: str | int | float) -> bool:
    """As :meth:`DuckDBStore.erase_predictions` matches a logged input: text as text, numbers as numbers."""
    if found is None or isinstance(found, dict | list):
        return False
    if isinstance(value, str):
        return (found if isinstance(found, str) else json.dumps(found)) == value
    if isinstance(found, bool):
        return False
    try:
        return float(found) == float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _erase_samples(
    con: duckdb.DuckDBPyConnection,
    column: str,
    value: str | int | float,
    scope: str,
    scoped: Sequence[object],
) -> int:
    """Take the row samples whose input ``column`` matches out of the stored batch payloads; how many."""
    found = con.execute(
        f"SELECT seq, payload FROM batches WHERE json_array_length(payload, '$.sample') > 0 {scope}",  # noqa: S608 (constants)
        scoped,
    )
    changed: list[tuple[str, int]] = []
    erased = 0
    while chunk := found.fetchmany(1000):
        for seq, payload in chunk:
            data = json.loads(payload)
            kept = [r for r in data["sample"] if not _same(r.get("inputs", {}).get(column), value)]
            if len(kept) < len(data["sample"]):
                erased += len(data["sample"]) - len(kept)
                data["sample"] = kept
                changed.append((json.dumps(data, separators=(",", ":")), seq))
    if changed:
        con.executemany("UPDATE batches SET payload = ? WHERE seq = ?", changed)
    return erased
