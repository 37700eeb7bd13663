"""The one thread that writes to the telemetry file, fed by a queue.

The connection it owns is the only one that writes, so there are no write-write conflicts.
Telemetry waiting in the queue is bounded (``max_queued_batches``): beyond it
:meth:`Writer.enqueue` raises :class:`~edgeml.errors.Overloaded` and the HTTP layer answers
429. The telemetry that waits in the queue when the writer is free, batches submitted one by
one and groups laid out elsewhere (:class:`~edgeml.telemetry.db.batch_group.BatchGroup`), is
written in one transaction, as Arrow tables, never row by row. A batch's answer comes only
after ``COMMIT``, which makes DuckDB write and sync its write-ahead log, so an acknowledged
batch survives a crash of the process. Repeated batch ids are found by the primary key as the
group is inserted (see :meth:`Writer._write_batches`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from edgeml.errors import BatchConflict, Overloaded, StoreClosed
from edgeml.telemetry.db.batch_group import BatchGroup, Head, laid_out, payload_of
from edgeml.telemetry.db.devices import DEVICE_STATE_S, UPDATE_DEVICES, DeviceDirectory, device_table
from edgeml.telemetry.db.tables import EPOCH, select_list
from edgeml.telemetry.schema import Device, Ingested, Outcomes, Stored, TelemetryBatch

__all__ = ["MAX_GROUP", "Writer", "encode"]

log = logging.getLogger("edgeml.telemetry.db")

#: most queued jobs the writer takes into one transaction
MAX_GROUP = 512

T = TypeVar("T")
_J = TypeVar("_J", "_Ingest", "_Group")


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
    """The batch's stored payload (:func:`~edgeml.telemetry.db.batch_group.payload_of`) and the sha256
    of its canonical JSON (what a repeat is compared by)."""
    canonical = batch.model_dump_json()
    return payload_of(batch), hashlib.sha256(canonical.encode()).hexdigest()


class Writer:
    """The writer thread and its connection; jobs run in queue order, telemetry grouped.

    ``directory`` is kept in step with what it commits; devices' telemetry state waits in
    ``unsaved`` for the next save (every ``DEVICE_STATE_S`` s, at compaction and at close).
    """

    def __init__(
        self, con: duckdb.DuckDBPyConnection, directory: DeviceDirectory, max_queued_batches: int
    ) -> None:
        self.con = con
        self.directory = directory
        self.max_queued_batches = max_queued_batches
        self._next_seq = int(con.execute("SELECT coalesce(max(seq), 0) + 1 FROM batches").fetchall()[0][0])
        # devices' telemetry state not saved yet (see DEVICE_STATE_S); written by this thread only
        self.unsaved: dict[str, Device] = {}
        self._saved_at = time.monotonic()
        self._queue: queue.Queue[object] = queue.Queue()
        self.pending = 0  # telemetry jobs queued or being written
        self._pending_lock = threading.Lock()
        self.closed = False
        self._thread = threading.Thread(target=self._run, name="edgeml-central-writer", daemon=True)
        self._thread.start()

    def stop(self) -> bool:
        """Let nothing more in, write what is queued, end the thread; False if it was stopped before."""
        with self._pending_lock:
            if self.closed:
                return False
            self.closed = True
        self._queue.put(_STOP)
        self._thread.join()
        return True

    def running(self) -> bool:
        return self._thread.is_alive()

    def enqueue(self, job: _J, batches: int, *, limit: bool) -> _J:
        with self._pending_lock:
            if self.closed:
                raise StoreClosed("the telemetry store is closed")
            if limit and self.pending >= self.max_queued_batches:
                raise Overloaded(f"{self.pending} batches are waiting to be written")
            self.pending += batches
        self._queue.put(job)
        return job

    def submit(self, batch: TelemetryBatch) -> Future[Ingested]:
        return self.enqueue(_Ingest(batch, *encode(batch)), 1, limit=True).future

    def submit_group(self, group: BatchGroup) -> Future[Outcomes]:
        return self.enqueue(_Group(group), len(group), limit=False).future

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
            if self.closed:
                raise StoreClosed("the telemetry store is closed")
            self._queue.put(job)
        return job.future

    def mark_saved(self) -> None:
        """The devices' telemetry state was just written (writer thread only)."""
        self.unsaved = {}
        self._saved_at = time.monotonic()

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
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _call(self, job: _Call) -> None:
        try:
            with self.transaction() as con:
                result = job.fn(con)
            if job.after is not None:
                job.after(self.con, result)
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
            items = [(j.batch, j.payload, j.digest) for j in queued]
            laid, refused = laid_out(items, datetime.now(UTC))
            if refused:  # Arrow refused a value the contract let through: those batches fail alone
                log.error("%d telemetry batches could not be laid out for writing", len(refused))
                with self._pending_lock:
                    self.pending -= len(refused)
                for i, exc in refused.items():
                    queued[i].future.set_exception(exc)
            if laid is not None:
                parts.append((laid, [job for i, job in enumerate(queued) if i not in refused]))
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
                self.pending -= len(group)

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
        stored = self.con.execute(
            "SELECT b.device_id, b.batch_id, b.body_sha256, epoch_us(b.received_at) FROM batches b "
            "JOIN _keys k ON b.device_id = k.device_id AND b.batch_id = k.batch_id"
        ).fetchall()
        return {(d, b): (digest, EPOCH + timedelta(microseconds=us)) for d, b, digest, us in stored}

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
        unsaved = self.unsaved | {d.device_id: d for d in devices}
        save = time.monotonic() - self._saved_at >= DEVICE_STATE_S
        write_group(self.con, new, self._next_seq, list(unsaved.values()) if save else [])
        self._next_seq += len(group)
        if save:
            self.mark_saved()
        else:
            self.unsaved = unsaved
        self.directory.update(devices)
        return outcomes

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


def write_group(
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
    _device_state = device_table(devices)
    statements = ["BEGIN TRANSACTION"]
    for table, data in group.tables().items():
        if data.num_rows:
            select = select_list(table, first_seq)
            statements.append(f"INSERT INTO {table} SELECT {select} FROM _new_{table}")  # noqa: S608 (constants)
    if devices:
        statements.append(UPDATE_DEVICES)
    statements.append("COMMIT")
    try:
        con.execute(";\n".join(statements))
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # none is open when BEGIN itself failed
            con.execute("ROLLBACK")
        raise
