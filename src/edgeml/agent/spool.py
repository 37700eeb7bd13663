"""The telemetry spool: closed batches wait on disk until the central node has them.

SQLite in WAL mode with ``synchronous=FULL``: each ``put`` and ``ack`` is one transaction
whose WAL frames are fsynced before it returns. WAL alone already survives ``kill -9`` (a
process crash never tears a committed transaction, and the next open replays the WAL),
but with ``synchronous=NORMAL`` the last commits live only in the OS page cache until a
checkpoint and a power cut, common on edge devices, would lose batches the agent believed
stored. A batch is written once a window (a minute, typically), so the fsync costs nothing
that matters.

The spool is bounded by payload bytes (and optionally by batch count). When a new batch
does not fit, the oldest go first; each drop is counted (:data:`TELEMETRY_DROPPED`), and the
number dropped since the last stored batch is written into the next batch as
``dropped_before``, so the central node learns of every loss. That number is persisted with
the batch, and given back to the next one if the batch carrying it is itself dropped.
One process owns a spool file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from edgeml.observability import SPOOL_BATCHES, SPOOL_BYTES, TELEMETRY_DROPPED
from edgeml.telemetry.schema import TelemetryBatch

__all__ = ["Spool"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    dropped_before INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('unreported_drops', 0), ('dropped_total', 0);
"""


class Spool:
    """Batches in arrival order, at most ``max_bytes`` of payload (and ``max_batches``)."""

    def __init__(self, path: Path, *, max_bytes: int = 64 << 20, max_batches: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.max_batches = max_batches
        self._lock = threading.Lock()
        # autocommit mode: every transaction below is explicit (BEGIN IMMEDIATE ... COMMIT)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM batches").fetchone()
        self._count, self._bytes = int(count), int(size)
        self._claimed: str | None = None  # the batch the pusher is sending (see claim)
        self._gauges()

    def put(self, batch: TelemetryBatch) -> TelemetryBatch | None:
        """Store ``batch``, dropping the oldest to make room; the batch as stored, or None if dropped.

        The stored batch carries ``dropped_before``; putting a batch already here changes nothing.
        """
        with self._lock:
            try:
                with self._transaction():
                    stored, dropped = self._put(batch)
            finally:
                self._gauges()
        if dropped:
            TELEMETRY_DROPPED.inc(dropped)
        return stored

    def _put(self, batch: TelemetryBatch) -> tuple[TelemetryBatch | None, int]:
        """(the batch as stored or None, how many batches were dropped), inside a transaction."""
        row = self._db.execute("SELECT payload FROM batches WHERE batch_id = ?", (batch.batch_id,)).fetchone()
        if row is not None:
            return TelemetryBatch.model_validate_json(row[0]), 0
        unreported = self._counter("unreported_drops")
        stamped = batch.model_copy(update={"dropped_before": batch.dropped_before + unreported})
        payload = stamped.model_dump_json().encode()
        if len(payload) > self.max_bytes:  # alone too big for the spool: it is the one to go
            self._set("unreported_drops", unreported + 1)
            self._add("dropped_total", 1)
            return None, 1
        dropped = 0
        while self._count and (
            self._bytes + len(payload) > self.max_bytes
            or (self.max_batches is not None and self._count >= self.max_batches)
        ):
            carried = self._drop_oldest()
            if carried is None:  # only the batch being sent is left: over the bound by it, briefly
                break
            unreported += 1 + carried
            dropped += 1
            stamped = batch.model_copy(update={"dropped_before": batch.dropped_before + unreported})
            payload = stamped.model_dump_json().encode()
        self._db.execute(
            "INSERT INTO batches (batch_id, payload, size, dropped_before) VALUES (?, ?, ?, ?)",
            (batch.batch_id, payload, len(payload), stamped.dropped_before),
        )
        self._set("unreported_drops", 0)
        self._add("dropped_total", dropped)
        self._count += 1
        self._bytes += len(payload)
        return stamped, dropped

    def peek(self, n: int = 16) -> list[TelemetryBatch]:
        """The ``n`` oldest batches, left in the spool until acknowledged."""
        with self._lock:
            rows = self._db.execute("SELECT payload FROM batches ORDER BY seq LIMIT ?", (n,)).fetchall()
        return [TelemetryBatch.model_validate_json(payload) for (payload,) in rows]

    def claim(self, batch_id: str) -> bool:
        """Mark the batch about to be sent, so a full spool drops others; False if it was dropped already.

        A batch is thus never both delivered and counted as dropped. One claim at a time: the
        claim ends with :meth:`ack` or :meth:`release`.
        """
        with self._lock:
            here = self._db.execute("SELECT 1 FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
            self._claimed = batch_id if here else None
            return here is not None

    def release(self) -> None:
        """The claimed batch was not delivered and stays; it may be dropped again."""
        with self._lock:
            self._claimed = None

    def ack(self, batch_id: str) -> bool:
        """Forget a delivered (or rejected) batch; False if it was not here."""
        with self._lock, self._transaction():
            if self._claimed == batch_id:
                self._claimed = None
            row = self._db.execute("SELECT size FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))
            self._count -= 1
            self._bytes -= int(row[0])
        self._gauges()
        return True

    def __len__(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        """Payload bytes held."""
        return self._bytes

    @property
    def dropped_total(self) -> int:
        """Batches dropped because the spool was full, over the spool's life."""
        with self._lock:
            return self._counter("dropped_total")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _drop_oldest(self) -> int | None:
        """Delete the oldest batch not being sent; the drops it carried (to carry on), None if none."""
        row = self._db.execute(
            "SELECT seq, size, dropped_before FROM batches WHERE batch_id != ? ORDER BY seq LIMIT 1",
            (self._claimed or "",),
        ).fetchone()
        if row is None:
            return None
        seq, size, carried = row
        self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
        self._count -= 1
        self._bytes -= int(size)
        return int(carried)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; on error ROLLBACK, and the in-memory totals are restored."""
        saved = (self._count, self._bytes)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self._count, self._bytes = saved
            raise
        self._db.execute("COMMIT")

    def _counter(self, name: str) -> int:
        return int(self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

    def _set(self, name: str, value: int) -> None:
        self._db.execute("UPDATE counters SET value = ? WHERE name = ?", (value, name))

    def _add(self, name: str, value: int) -> None:
        if value:
            self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (value, name))

    def _gauges(self) -> None:
        SPOOL_BATCHES.set(self._count)
        SPOOL_BYTES.set(self._bytes)
