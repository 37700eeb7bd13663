"""The telemetry store in a process of its own, behind the store's own methods.

DuckDB's Python client takes the GIL back after every task of a query, to check for Ctrl-C.
In the process that serves HTTP, the event loop holds the GIL nearly all the time under load
(validating JSON, writing answers), so each of those checks waits for it: a query that takes
0.16 s alone took 1.4 s beside one busy Python thread (at a 0.5 ms switch interval), and the
telemetry writer spent most of its time waiting, capping ingest at about one core. In a
process of its own, the store's threads only share the GIL with each other, and DuckDB works
on the second core while the first serves HTTP.

:class:`StoreProcess` has the methods the central node uses of
:class:`~edgeml.central.db.TelemetryStore`. The child runs a ``TelemetryStore``; requests go
over a pipe (pickled), telemetry as the batch's canonical JSON and its digest
(:func:`~edgeml.central.db.encode`), parsed again by the store's writer thread. The device
registry is copied: the child sends it at start-up and the new state of a device with every
answer that changed it, so authentication and fleet reads stay in the serving process,
without a round trip. The child is started by a fork server that has imported the store's
modules once, so a new store starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import queue
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeml.agent.telemetry import TelemetryBatch
from edgeml.central.db import (
    DEFAULT_MEMORY_LIMIT,
    CompactResult,
    Device,
    DeviceDirectory,
    FeedbackItem,
    FeedbackRecord,
    Ingested,
    Overloaded,
    RowsPoint,
    StoreClosed,
    TelemetryStore,
    encode,
    hash_token,
)
from edgeml.central.drift import PooledWindow
from edgeml.central.run import tune_runtime

__all__ = ["Store", "StoreProcess"]

log = logging.getLogger("edgeml.central.store")

#: the store methods a client may call in the child (besides telemetry)
_CALLS = frozenset(
    {
        "register_device",
        "decommission",
        "add_feedback",
        "compact",
        "probe_write",
        "batches",
        "pooled_windows",
        "profiles",
        "batch_count",
        "rows_over_time",
        "feedback",
        "fetch",
    }
)
#: reads and admin writes the child runs at once (telemetry has the writer's own thread)
_CALL_THREADS = 4
#: seconds the child gets to write what is queued, checkpoint and exit
_STOP_TIMEOUT_S = 120.0

_Reply = tuple[int, bool, Any, Device | None]  # call id, succeeded, result or exception, device now


def _dumps(message: object) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(_dumps(exc))  # noqa: S301 (our own bytes)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


# --- the child --------------------------------------------------------------------------------


def _serve(conn: Connection, path: str, options: dict[str, Any]) -> None:
    """The child's main: a TelemetryStore answering the parent until it says stop or goes away."""
    # Ctrl-C and a service manager's SIGTERM reach the whole group: the parent decides when the
    # store stops (it says so, or its end of the pipe closes), so queued writes are not cut off
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        store = TelemetryStore(Path(path), **options)
        tune_runtime()
    except BaseException as exc:
        conn.send_bytes(_dumps(("failed", _portable(exc))))
        return
    replies: queue.SimpleQueue[_Reply | None] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_replies, args=(conn, replies), name="edgeml-store-replies")
    sender.start()
    calls = ThreadPoolExecutor(_CALL_THREADS, thread_name_prefix="edgeml-store-call")
    conn.send_bytes(_dumps(("ready", store.directory.snapshot())))
    try:
        while True:
            try:
                message = pickle.loads(conn.recv_bytes())  # noqa: S301 (from our parent, over a pipe)
            except (EOFError, OSError):
                break  # the parent is gone: write what is queued and stop
            if message[0] == "ingest":
                _, call_id, payload, digest = message
                _ingest(store, replies, call_id, payload, digest)
            elif message[0] == "call":
                _, call_id, name, args, kwargs = message
                calls.submit(_call, store, replies, call_id, name, args, kwargs)
            else:
                break
    finally:
        calls.shutdown(wait=True)
        store.close()  # writes everything queued; its futures answer through ``replies``
        replies.put(None)
        sender.join()


def _ingest(
    store: TelemetryStore, replies: queue.SimpleQueue[_Reply | None], call_id: int, payload: str, digest: str
) -> None:
    try:
        future = store.submit_json(payload, digest)
    except Exception as exc:
        replies.put((call_id, False, _portable(exc), None))
        return
    future.add_done_callback(partial(_ingested, store, replies, call_id))


def _ingested(
    store: TelemetryStore,
    replies: queue.SimpleQueue[_Reply | None],
    call_id: int,
    future: Future[Ingested],
) -> None:
    exc = future.exception()
    if exc is not None:
        replies.put((call_id, False, _portable(exc), None))
    else:
        result = future.result()
        replies.put((call_id, True, result, store.device(result.ack.device_id)))


def _call(
    store: TelemetryStore,
    replies: queue.SimpleQueue[_Reply | None],
    call_id: int,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    try:
        if name not in _CALLS:
            raise AttributeError(f"the store process does not serve {name!r}")
        result = getattr(store, name)(*args, **kwargs)
    except Exception as exc:
        replies.put((call_id, False, _portable(exc), None))
    else:
        replies.put((call_id, True, result, None))


def _send_replies(conn: Connection, replies: queue.SimpleQueue[_Reply | None]) -> None:
    """Send answers as they come, all those waiting in one message (a group commit answers many)."""
    done = False
    while not done:
        batch = [replies.get()]
        while True:
            try:
                batch.append(replies.get_nowait())
            except queue.Empty:
                break
        done = None in batch
        try:
            conn.send_bytes(_dumps(("replies", [r for r in batch if r is not None])))
        except OSError:
            return  # the parent is gone


# --- the parent -------------------------------------------------------------------------------


class StoreProcess:
    """A :class:`~edgeml.central.db.TelemetryStore` in a child process; a context manager, or ``close()``."""

    def __init__(
        self,
        path: Path,
        *,
        max_queued_batches: int = 2000,
        retention_days: int = 30,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        self.path = path
        self.max_queued_batches = max_queued_batches
        self.retention_days = retention_days
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        self._conn, child = context.Pipe()
        options = {
            "max_queued_batches": max_queued_batches,
            "retention_days": retention_days,
            "memory_limit": memory_limit,
        }
        self._process = context.Process(
            target=_serve, args=(child, str(path), options), name="edgeml-central-store", daemon=True
        )
        self._process.start()
        child.close()
        try:
            kind, value = pickle.loads(self._conn.recv_bytes())  # noqa: S301 (our child, over a pipe)
        except (EOFError, OSError) as exc:
            self._process.join(10)
            raise StoreClosed(
                f"the store process ended at start-up (exit code {self._process.exitcode}); "
                "its log lines above say why"
            ) from exc
        if kind == "failed":
            self._process.join(10)
            raise value
        self.directory = DeviceDirectory()
        for device, token_hash in value:
            self.directory.remember(device, token_hash)
        self._lock = threading.Lock()  # the fields below, and the pipe's sending end
        self._futures: dict[int, tuple[Future[Any], bool]] = {}  # call id -> (future, is telemetry)
        self._next_id = 0
        self._pending = 0  # telemetry batches sent and not answered yet
        self._closed = False
        self._reader = threading.Thread(
            target=self._read_replies, name="edgeml-central-store-replies", daemon=True
        )
        self._reader.start()

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Write everything queued, checkpoint, stop the child. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                self._conn.send_bytes(_dumps(("stop",)))
        self._reader.join(_STOP_TIMEOUT_S)
        self._process.join(_STOP_TIMEOUT_S)
        if self._process.is_alive():
            log.error("the store process did not stop in %.0f s: terminating it", _STOP_TIMEOUT_S)
            self._process.terminate()
            self._process.join(10)
        self._conn.close()

    def __enter__(self) -> StoreProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The store process's id."""
        return self._process.pid

    @property
    def queued_batches(self) -> int:
        return self._pending

    def writer_alive(self) -> bool:
        return not self._closed and self._process.is_alive() and self._reader.is_alive()

    # --- telemetry ------------------------------------------------------------------------------

    def submit(self, batch: TelemetryBatch) -> Future[Ingested]:
        """As :meth:`TelemetryStore.submit <edgeml.central.db.TelemetryStore.submit>`."""
        payload, digest = encode(batch)
        with self._lock:
            if self._closed or not self._reader.is_alive():
                raise StoreClosed("the telemetry store is closed")
            if self._pending >= self.max_queued_batches:
                raise Overloaded(f"{self._pending} batches are waiting to be written")
            self._pending += 1
            future: Future[Ingested] = self._send_locked(("ingest", payload, digest), telemetry=True)
        return future

    def ingest(self, batch: TelemetryBatch, timeout: float = 30.0) -> Ingested:
        """:meth:`submit` and wait for the commit."""
        return self.submit(batch).result(timeout)

    # --- devices --------------------------------------------------------------------------------

    def register_device(
        self, *, group: str | None, profile: str, model: str, device_id: str | None = None
    ) -> tuple[Device, str]:
        device, token = self._call(
            "register_device", group=group, profile=profile, model=model, device_id=device_id
        )
        self.directory.remember(device, hash_token(token))
        return device, token

    def decommission(self, device_id: str) -> Device:
        device: Device = self._call("decommission", device_id)
        self.directory.remember(device, self.directory.token_hash(device_id))
        return device

    def authenticate(self, token: str) -> Device | None:
        return self.directory.authenticate(token)

    def device(self, device_id: str) -> Device | None:
        return self.directory.device(device_id)

    def devices(self) -> list[Device]:
        return self.directory.devices()

    # --- everything else, in the child ------------------------------------------------------------

    def add_feedback(self, items: list[FeedbackItem], source: str) -> int:
        count: int = self._call("add_feedback", items, source)
        return count

    def compact(self, now: datetime | None = None) -> CompactResult:
        result: CompactResult = self._call("compact", now)
        return result

    def probe_write(self, timeout: float = 5.0) -> None:
        self._call("probe_write", timeout, wait=timeout + 5.0)

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
        found: list[TelemetryBatch] = self._call(
            "batches", model, version, group, since, until, device=device
        )
        return found

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
        found: list[PooledWindow] | None = self._call(
            "pooled_windows", window, since=since, until=until, model=model, version=version, group=group
        )
        return found

    def profiles(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> dict[tuple[str, int], str]:
        found: dict[tuple[str, int], str] = self._call("profiles", since, until)
        return found

    def batch_count(self) -> int:
        count: int = self._call("batch_count")
        return count

    def rows_over_time(self, since: datetime, bucket: timedelta) -> list[RowsPoint]:
        found: list[RowsPoint] = self._call("rows_over_time", since, bucket)
        return found

    def feedback(
        self,
        model: str | None = None,
        version: int | None = None,
        group: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[FeedbackRecord]:
        found: list[FeedbackRecord] = self._call("feedback", model, version, group, since, until)
        return found

    def fetch(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = self._call("fetch", sql, params)
        return found

    # --- the pipe -------------------------------------------------------------------------------

    def _call(self, name: str, *args: Any, wait: float | None = None, **kwargs: Any) -> Any:
        with self._lock:
            if self._closed or not self._reader.is_alive():
                raise StoreClosed("the telemetry store is closed")
            future: Future[Any] = self._send_locked(("call", name, args, kwargs), telemetry=False)
        return future.result(wait)

    def _send_locked(self, message: tuple[Any, ...], *, telemetry: bool) -> Future[Any]:
        call_id = self._next_id
        self._next_id += 1
        future: Future[Any] = Future()
        self._futures[call_id] = (future, telemetry)
        try:
            self._conn.send_bytes(_dumps((message[0], call_id, *message[1:])))
        except OSError as exc:
            del self._futures[call_id]
            if telemetry:
                self._pending -= 1
            raise StoreClosed("the store process is gone") from exc
        return future

    def _read_replies(self) -> None:
        try:
            while True:
                _, replies = pickle.loads(self._conn.recv_bytes())  # noqa: S301 (our child)
                self._settle(replies)
        except (EOFError, OSError):
            pass  # the child stopped (or died)
        finally:
            with self._lock:
                left = list(self._futures.values())
                self._futures.clear()
                self._pending = 0
            for future, _ in left:
                future.set_exception(StoreClosed("the store process ended before answering"))

    def _settle(self, replies: list[_Reply]) -> None:
        self.directory.update([device for *_, device in replies if device is not None])
        settled: list[tuple[Future[Any], bool, Any]] = []
        with self._lock:
            for call_id, ok, value, _ in replies:
                future, telemetry = self._futures.pop(call_id)
                if telemetry:
                    self._pending -= 1
                settled.append((future, ok, value))
        for future, ok, value in settled:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


#: either store: in this process (tools, tests of the store itself) or in its own (the node)
Store = TelemetryStore | StoreProcess
