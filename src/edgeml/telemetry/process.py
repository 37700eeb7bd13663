"""The telemetry store in a process of its own, behind the store's own methods.

DuckDB's Python client takes the GIL back after every task of a query, to check for Ctrl-C.
In the process that serves HTTP, the event loop holds the GIL nearly all the time under load
(validating JSON, writing answers), so each of those checks waits for it: a query that takes
0.16 s alone took 1.4 s beside one busy Python thread (at a 0.5 ms switch interval), and the
telemetry writer spent most of its time waiting, capping ingest at about one core. In a
process of its own, the store's threads only share the GIL with each other, and DuckDB works
on the second core while the first serves HTTP.

:class:`StoreProcess` is a :class:`~edgeml.telemetry.store.DuckDBStore`: the child runs a
:class:`~edgeml.telemetry.db.store.DuckDBStore`, and each store method the parent cannot answer
itself is a :class:`_Remote`: one typed message (:class:`Call`) over a pipe, pickled, and its
:class:`Reply`. Telemetry goes in groups, laid out in this process as the store's
tables (:class:`~edgeml.telemetry.db.batch_group.BatchGroup`, from the batches the serving path
has parsed already), so the store process only inserts them. One group is out at a time
(``GROUPS_IN_FLIGHT``); the batches arriving while it is written are laid out in parts as
they come and sent ahead, and become the next group when its answer arrives: a commit costs
~6 ms whatever its size, so it takes everything that waited, and the store process has
loaded all but the last part by then. The device registry is copied: the
child sends it at start-up and the new state of the devices with every answer that changed
them, so authentication and fleet reads stay in the serving process, without a round trip.
The child is started by a fork server that has imported the store's modules once, so a new
store starts in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from edgeml.errors import Overloaded, StoreClosed
from edgeml.telemetry.db.batch_group import BatchGroup, laid_out
from edgeml.telemetry.db.devices import DeviceDirectory, hash_token
from edgeml.telemetry.db.sealed import UNSAFE_CRYPTO_ENV
from edgeml.telemetry.db.store import DuckDBStore
from edgeml.telemetry.db.tables import DEFAULT_MEMORY_LIMIT
from edgeml.telemetry.db.writer import MAX_GROUP, encode
from edgeml.telemetry.schema import Device, Ingested, Outcomes, TelemetryBatch

__all__ = ["StoreProcess", "tune_runtime"]

log = logging.getLogger("edgeml.central.store")

P = ParamSpec("P")
R = TypeVar("R")

#: reads and admin writes the child runs at once (telemetry has the writer's own thread)
_CALL_THREADS = 4
#: telemetry groups handed over and not answered yet. One: what arrives while the store writes
#: is laid out and sent ahead, and becomes the next group when the answer comes, so a commit
#: takes everything that waited; with two, the store took each group as it came, smaller
#: groups, and a commit costs ~6 ms whatever its size
GROUPS_IN_FLIGHT = 1
#: batches waiting while a group is in flight that are laid out as a part of the next group
PREPARE_CHUNK = 16
#: bytes the pipe to the store process may hold (a group of telemetry is ~20 kB a batch)
PIPE_BUFFER = 4 << 20
#: seconds the child gets to write what is queued, checkpoint and exit
_STOP_TIMEOUT_S = 120.0

# --- the messages ----------------------------------------------------------------------------
# Parent -> child: Call, Group, Part (a frame follows), Stop. Child -> parent: Ready or Failed
# once, then Replies. Each is pickled into one frame of the pipe.


@dataclass(frozen=True, slots=True)
class Call:
    """Run the store method ``name`` in the child; its :class:`Reply` answers ``call_id``."""

    call_id: int
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Group:
    """A group of telemetry: the ``sent_ahead`` parts that came before it, then ``frames`` more."""

    call_id: int
    sent_ahead: int
    frames: int


@dataclass(frozen=True, slots=True)
class Part:
    """A part of the next group, sent ahead while the store writes; it follows as a frame."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Write what is queued and stop."""


@dataclass(frozen=True, slots=True)
class Ready:
    """The store is open: every device with its token's hash, for the parent's copy."""

    devices: list[tuple[Device, str]]


@dataclass(frozen=True, slots=True)
class Failed:
    """The store could not be opened."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a call or a group: its result or its exception, and the devices it changed."""

    call_id: int
    ok: bool
    value: Any
    devices: list[Device]


@dataclass(frozen=True, slots=True)
class Replies:
    """Every answer ready when the child's sender woke (a group commit answers many at once)."""

    replies: list[Reply]


#: who waits for a batch's answer: a thread, or a coroutine on an event loop
_Waiter = Future[Ingested] | asyncio.Future[Ingested]
#: a batch waiting to be handed over, and who waits for its answer
_Waiting = tuple[TelemetryBatch, _Waiter]


def _dumps(message: object) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())  # noqa: S301 (the other end is our own process)


#: the message before a part of the next group sent ahead
_PART = _dumps(Part())


def _widen(conn: Connection) -> None:
    """Let the pipe (a socket pair) hold a group: one write instead of a hand-off per 200 kB.

    Each hand-off makes both threads wait for their process's GIL again. The kernel caps the
    size at net.core.wmem_max / rmem_max.
    """
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as sock:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, PIPE_BUFFER)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(_dumps(exc))  # noqa: S301 (our own bytes)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


#: young-generation threshold of the cyclic GC while serving (CPython's default is 700)
GC_THRESHOLD = 20_000
#: seconds a thread holds the GIL while another waits for it (CPython's default is 0.005)
SWITCH_INTERVAL_S = 0.0005


def tune_runtime() -> None:
    """The interpreter set for telemetry: the serving process's and the store process's.

    Garbage collection: a batch allocates hundreds of container objects, and batches live
    until their commit, so at CPython's defaults a collection ran every few batches and a full
    one every few seconds, walking every long-lived object of the application (~15% of the
    event loop's time under load). Objects alive at start-up are frozen out of collections;
    young collections run after ``GC_THRESHOLD`` allocations.

    Switch interval: DuckDB's Python client takes the GIL back after every task of a query;
    a thread that waits for it while another one is busy waits up to the switch interval. In
    the store process the thread reading requests is the busy one.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    sys.setswitchinterval(SWITCH_INTERVAL_S)


# --- the child --------------------------------------------------------------------------------


def _serve(conn: Connection, path: str, options: dict[str, Any]) -> None:
    """The child's main: a DuckDBStore answering the parent until it says stop or goes away."""
    # Ctrl-C and a service manager's SIGTERM reach the whole group: the parent decides when the
    # store stops (it says so, or its end of the pipe closes), so queued writes are not cut off
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        store = DuckDBStore(Path(path), **options)
        tune_runtime()
    except BaseException as exc:
        conn.send_bytes(_dumps(Failed(_portable(exc))))
        return
    replies: queue.SimpleQueue[Reply | None] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_replies, args=(conn, replies), name="edgeml-store-replies")
    sender.start()
    calls = ThreadPoolExecutor(_CALL_THREADS, thread_name_prefix="edgeml-store-call")
    conn.send_bytes(_dumps(Ready(store.directory.snapshot())))
    ahead: list[BatchGroup] = []  # parts of the next group, sent ahead
    try:
        while True:
            try:
                message = _loads(conn)
                match message:
                    case Part():  # of the next group, sent ahead while the store writes
                        ahead.append(_loads(conn))
                    case Group(call_id, sent_ahead, frames):  # its last parts follow, a frame each
                        parts = ahead + [_loads(conn) for _ in range(frames)]
                        if len(ahead) != sent_ahead:  # answers go by position: never to the wrong batches
                            lost = StoreClosed(
                                f"{sent_ahead} parts of the group were sent ahead, {len(ahead)} came"
                            )
                            replies.put(Reply(call_id, False, lost, []))
                        else:
                            _ingest(store, replies, call_id, parts)
                        ahead = []
                    case Call():
                        calls.submit(_call, store, replies, message)
                    case _:
                        break
            except (EOFError, OSError):
                break  # the parent is gone (perhaps while sending): write what is queued and stop
    finally:
        calls.shutdown(wait=True)
        store.close()  # writes everything queued; its futures answer through ``replies``
        replies.put(None)
        sender.join()


def _ingest(
    store: DuckDBStore, replies: queue.SimpleQueue[Reply | None], call_id: int, parts: list[BatchGroup]
) -> None:
    try:  # a group that cannot be joined or queued fails alone; the store goes on
        group = BatchGroup.joined(parts)
        future = store.submit_group(group)
    except Exception as exc:
        replies.put(Reply(call_id, False, _portable(exc), []))
        return
    future.add_done_callback(partial(_ingested, store, replies, call_id, group))


def _ingested(
    store: DuckDBStore,
    replies: queue.SimpleQueue[Reply | None],
    call_id: int,
    group: BatchGroup,
    future: Future[Outcomes],
) -> None:
    exc = future.exception()
    if exc is not None:
        replies.put(Reply(call_id, False, _portable(exc), []))
        return
    seen = dict.fromkeys(device_id for device_id, _ in group.ids())
    devices = [device for device_id in seen if (device := store.device(device_id)) is not None]
    replies.put(Reply(call_id, True, future.result(), devices))


def _call(store: DuckDBStore, replies: queue.SimpleQueue[Reply | None], call: Call) -> None:
    try:
        if call.name not in _SERVED:
            raise AttributeError(f"the store process does not serve {call.name!r}")
        result = getattr(store, call.name)(*call.args, **call.kwargs)
    except Exception as exc:
        replies.put(Reply(call.call_id, False, _portable(exc), []))
    else:
        replies.put(Reply(call.call_id, True, result, []))


def _send_replies(conn: Connection, replies: queue.SimpleQueue[Reply | None]) -> None:
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
            conn.send_bytes(_dumps(Replies([r for r in batch if r is not None])))
        except OSError:
            return  # the parent is gone


# --- the parent -------------------------------------------------------------------------------


class _Remote(Generic[P, R]):
    """A store method run in the child: on a :class:`StoreProcess`, the method of the same
    signature that sends a :class:`Call` and waits for its :class:`Reply`.

    ``after`` runs in the parent with the result (keeping the device copy in step); ``wait``
    says how long to wait for the answer, from the call's arguments (None: as long as it takes).
    """

    def __init__(
        self,
        method: Callable[Concatenate[DuckDBStore, P], R],
        *,
        after: Callable[[StoreProcess, R], None] | None = None,
        wait: Callable[P, float] | None = None,
    ) -> None:
        self.name = method.__name__
        self.after = after
        self.wait = wait

    @overload
    def __get__(self, proxy: None, owner: type) -> _Remote[P, R]: ...
    @overload
    def __get__(self, proxy: StoreProcess, owner: type) -> Callable[P, R]: ...
    def __get__(self, proxy: StoreProcess | None, owner: type) -> _Remote[P, R] | Callable[P, R]:
        if proxy is None:
            return self
        remote = self

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            wait = None if remote.wait is None else remote.wait(*args, **kwargs)
            result: R = proxy._call(remote.name, args, kwargs, wait)
            if remote.after is not None:
                remote.after(proxy, result)
            return result

        return call


def _registered(proxy: StoreProcess, result: tuple[Device, str]) -> None:
    device, token = result
    proxy.directory.remember(device, hash_token(token))


def _decommissioned(proxy: StoreProcess, device: Device) -> None:
    proxy.directory.remember(device, proxy.directory.token_hash(device.device_id))


def _reassigned(proxy: StoreProcess, result: tuple[Device, Device]) -> None:
    proxy.directory.update([result[1]])


def _probe_wait(timeout: float = 5.0) -> float:
    return timeout + 5.0


class StoreProcess:
    """A :class:`~edgeml.telemetry.db.store.DuckDBStore` in a child process; a context manager.

    Telemetry and the device registry are answered here (see the module docstring); every
    other method of :class:`~edgeml.telemetry.store.DuckDBStore` is a :class:`_Remote`.
    """

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
        for end in (self._conn, child):
            _widen(end)
        options = {
            "max_queued_batches": max_queued_batches,
            "retention_days": retention_days,
            "memory_limit": memory_limit,
            # the child forks from a forkserver started earlier: it does not see this environment
            "unsafe_crypto": os.environ.get(UNSAFE_CRYPTO_ENV) == "1",
        }
        self._process = context.Process(
            target=_serve, args=(child, str(path), options), name="edgeml-central-store", daemon=True
        )
        self._process.start()
        child.close()
        try:
            started = _loads(self._conn)
        except (EOFError, OSError) as exc:
            self._process.join(10)
            raise StoreClosed(
                f"the store process ended at start-up (exit code {self._process.exitcode}); "
                "its log lines above say why"
            ) from exc
        if isinstance(started, Failed):
            self._process.join(10)
            raise started.error
        self.directory = DeviceDirectory()
        for device, token_hash in started.devices:
            self.directory.remember(device, token_hash)
        self._lock = threading.Condition()  # the fields below
        self._calls: dict[int, Future[Any]] = {}  # call id -> its answer
        self._groups: dict[int, list[_Waiting]] = {}  # call id -> the batches of a group handed over
        self._waiting: list[_Waiting] = []  # batches not handed over yet
        self._next_id = 0
        self._pending = 0  # telemetry batches submitted and not answered yet
        self._closed = False
        self._pipe_lock = threading.Lock()  # the pipe's sending end
        self._reader = threading.Thread(
            target=self._read_replies, name="edgeml-central-store-replies", daemon=True
        )
        self._reader.start()
        self._sender = threading.Thread(
            target=self._send_groups, name="edgeml-central-store-groups", daemon=True
        )
        self._sender.start()

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Write everything queued, checkpoint, stop the child. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        self._sender.join(_STOP_TIMEOUT_S)  # hands over what was submitted
        # a stalled child leaves the sender blocked on a full pipe, holding its lock: then the
        # stop cannot be said, and the child is killed below
        if self._pipe_lock.acquire(timeout=_STOP_TIMEOUT_S):
            try:
                with contextlib.suppress(OSError):
                    self._conn.send_bytes(_dumps(Stop()))
            finally:
                self._pipe_lock.release()
        self._reader.join(_STOP_TIMEOUT_S)
        self._process.join(_STOP_TIMEOUT_S)
        if self._process.is_alive():  # it ignores SIGTERM (see _serve): only a kill stops it
            log.error("the store process did not stop in %.0f s: killing it", _STOP_TIMEOUT_S)
            self._process.kill()
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
        """As :meth:`DuckDBStore.submit <edgeml.telemetry.db.store.DuckDBStore.submit>`."""
        future: Future[Ingested] = Future()
        self._queue(batch, future)
        return future

    def submit_async(self, batch: TelemetryBatch) -> asyncio.Future[Ingested]:
        """:meth:`submit` for the running event loop: the answer as a future of that loop.

        The answers of a group reach the loop in one call, not one wake-up per batch.
        """
        waiter: asyncio.Future[Ingested] = asyncio.get_running_loop().create_future()
        self._queue(batch, waiter)
        return waiter

    def _queue(self, batch: TelemetryBatch, waiter: _Waiter) -> None:
        with self._lock:
            if self._closed or not self._reader.is_alive():
                raise StoreClosed("the telemetry store is closed")
            if self._pending >= self.max_queued_batches:
                raise Overloaded(f"{self._pending} batches are waiting to be written")
            self._pending += 1
            self._waiting.append((batch, waiter))
            if len(self._waiting) in (1, PREPARE_CHUNK):
                self._lock.notify_all()

    def ingest(self, batch: TelemetryBatch, timeout: float = 30.0) -> Ingested:
        """:meth:`submit` and wait for the commit."""
        return self.submit(batch).result(timeout)

    # --- devices, from the copy -------------------------------------------------------------------

    def authenticate(self, token: str) -> Device | None:
        return self.directory.authenticate(token)

    def device(self, device_id: str) -> Device | None:
        return self.directory.device(device_id)

    def devices(self) -> list[Device]:
        return self.directory.devices()

    # --- everything else, in the child ------------------------------------------------------------

    register_device = _Remote(DuckDBStore.register_device, after=_registered)
    decommission = _Remote(DuckDBStore.decommission, after=_decommissioned)
    reassign = _Remote(DuckDBStore.reassign, after=_reassigned)
    add_feedback = _Remote(DuckDBStore.add_feedback)
    add_labels = _Remote(DuckDBStore.add_labels)
    add_predictions = _Remote(DuckDBStore.add_predictions)
    labelled_count = _Remote(DuckDBStore.labelled_count)
    labelled_rows = _Remote(DuckDBStore.labelled_rows)
    prediction_traces = _Remote(DuckDBStore.prediction_traces)
    compact = _Remote(DuckDBStore.compact)
    erase_predictions = _Remote(DuckDBStore.erase_predictions)
    probe_write = _Remote(DuckDBStore.probe_write, wait=_probe_wait)
    batches = _Remote(DuckDBStore.batches)
    pooled_windows = _Remote(DuckDBStore.pooled_windows)
    profiles = _Remote(DuckDBStore.profiles)
    fetch = _Remote(DuckDBStore.fetch)
    batch_count = _Remote(DuckDBStore.batch_count)
    rows_over_time = _Remote(DuckDBStore.rows_over_time)
    feedback = _Remote(DuckDBStore.feedback)

    # --- the pipe -------------------------------------------------------------------------------

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], wait: float | None) -> Any:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed or not self._reader.is_alive():
                raise StoreClosed("the telemetry store is closed")
            call_id = self._new_id()
            self._calls[call_id] = future
        self._send(Call(call_id, name, args, kwargs), call_id)
        return future.result(wait)

    def _new_id(self) -> int:
        call_id = self._next_id
        self._next_id += 1
        return call_id

    def _send(self, message: Call | Group, call_id: int, *frames: bytes) -> None:
        """Send ``message``, then ``frames``; if the pipe is broken, fail what waits on ``call_id``."""
        try:
            data = _dumps(message)
            with self._pipe_lock:
                self._conn.send_bytes(data)
                for frame in frames:
                    self._conn.send_bytes(frame)
        except Exception as exc:
            failure = exc if not isinstance(exc, OSError) else StoreClosed("the store process is gone")
            self._fail([call_id], failure)

    def _send_groups(self) -> None:
        """Hand the waiting batches over as groups, while fewer than GROUPS_IN_FLIGHT are out.

        While the store writes, the batches arriving are laid out in parts of PREPARE_CHUNK
        or more and sent ahead: the store process loads each as it comes, and joins them when
        the group is sent, so when the store's answer comes the next group only has its last
        part left to lay out and send.
        """
        ahead: list[_Waiting] = []  # the batches of the parts sent ahead
        parts_ahead = 0
        while True:
            with self._lock:
                while not self._closed and not self._can_send(ahead) and len(self._waiting) < PREPARE_CHUNK:
                    self._lock.wait()
                items = self._waiting[:MAX_GROUP]
                del self._waiting[:MAX_GROUP]
                if not items and not ahead:
                    return  # closed, and everything submitted was handed over
            frame = None
            if items:
                encoded = [(batch, *encode(batch)) for batch, _ in items]
                group, failed = laid_out(encoded, datetime.now(UTC))
                if failed:  # Arrow refused a value the contract let through: those fail alone
                    log.error("%d telemetry batches could not be laid out for writing", len(failed))
                    for i, exc in failed.items():
                        self._drop([items[i]], exc)
                    items = [item for i, item in enumerate(items) if i not in failed]
                if group is not None:
                    frame = _dumps(group)
            with self._lock:
                ready = bool(ahead or items) and (self._closed or len(self._groups) < GROUPS_IN_FLIGHT)
                if ready:
                    call_id = self._new_id()
                    self._groups[call_id] = ahead + items
            if ready:
                frames = [frame] if frame is not None else []
                self._send(Group(call_id, parts_ahead, len(frames)), call_id, *frames)
                ahead, parts_ahead = [], 0
            elif frame is not None:
                if self._send_ahead(frame):
                    ahead.extend(items)
                    parts_ahead += 1
                else:
                    self._drop(items, StoreClosed("the store process is gone"))

    def _send_ahead(self, frame: bytes) -> bool:
        """Send a part of the next group; False if the pipe is broken."""
        try:
            with self._pipe_lock:
                self._conn.send_bytes(_PART)
                self._conn.send_bytes(frame)
        except OSError:
            return False
        return True

    def _can_send(self, ahead: list[_Waiting]) -> bool:
        return len(self._groups) < GROUPS_IN_FLIGHT and bool(self._waiting or ahead)

    def _drop(self, items: list[_Waiting], exc: BaseException) -> None:
        """Answer batches that will not be handed over with ``exc``."""
        with self._lock:
            self._pending -= len(items)
        _answer(items, exc)

    def _read_replies(self) -> None:
        try:
            while True:
                self._settle(_loads(self._conn).replies)
        except (EOFError, OSError):
            pass  # the child stopped (or died)
        finally:
            with self._lock:
                ids = [*self._calls, *self._groups]
            self._fail(ids, StoreClosed("the store process ended before answering"))

    def _settle(self, replies: list[Reply]) -> None:
        self.directory.update([device for reply in replies for device in reply.devices])
        for reply in replies:
            self._resolve(reply.call_id, reply.ok, reply.value)

    def _fail(self, call_ids: list[int], exc: BaseException) -> None:
        """Fail the calls and groups ``call_ids`` (those still waiting) with ``exc``."""
        for call_id in call_ids:
            self._resolve(call_id, False, exc)

    def _resolve(self, call_id: int, ok: bool, value: Any) -> None:
        """Settle the call or group ``call_id``, if it still waits, with its result or exception."""
        with self._lock:
            call = self._calls.pop(call_id, None)
            items = self._groups.pop(call_id, None)
            if items is not None:
                self._pending -= len(items)
                self._lock.notify_all()  # a group may go out
        if call is not None:
            if ok:
                call.set_result(value)
            else:
                call.set_exception(value)
        elif items is not None:
            _answer(items, value)


#: the store methods the child runs for the parent: the remote ones, and no other
_SERVED = frozenset(name for name, value in vars(StoreProcess).items() if isinstance(value, _Remote))


def _answer(items: list[_Waiting], result: Outcomes | BaseException) -> None:
    """Settle each batch of a group: its outcome, or the group's failure."""
    on_loops: dict[asyncio.AbstractEventLoop, list[tuple[_Waiter, Ingested | BaseException]]] = {}
    for i, (batch, waiter) in enumerate(items):
        outcome = result if isinstance(result, BaseException) else result[i]
        answer = outcome if isinstance(outcome, BaseException) else outcome.answer(batch)
        if isinstance(waiter, asyncio.Future):
            on_loops.setdefault(waiter.get_loop(), []).append((waiter, answer))
        else:
            _deliver([(waiter, answer)])
    for loop, answers in on_loops.items():
        with contextlib.suppress(RuntimeError):  # the loop was closed: nobody waits any more
            loop.call_soon_threadsafe(_deliver, answers)


def _deliver(answers: list[tuple[_Waiter, Ingested | BaseException]]) -> None:
    for waiter, answer in answers:
        if waiter.done():  # a request cancelled while its batch was written
            continue
        if isinstance(answer, BaseException):
            waiter.set_exception(answer)
        else:
            waiter.set_result(answer)
