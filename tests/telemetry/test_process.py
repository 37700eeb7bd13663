"""The telemetry store in its own process: the same answers as in-process, and no hang when it dies."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import threading
import time
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from edgeml.errors import BatchConflict, DeviceExists, Overloaded, StoreClosed, UnknownDevice
from edgeml.telemetry.db.store import WRITE_THREADS, DuckDBStore
from edgeml.telemetry.process import _SERVED, PIPE_BUFFER, PREPARE_CHUNK, Group, StoreProcess, _Remote, _widen
from edgeml.telemetry.schema import FeedbackItem, Ingested, Outcomes, TelemetryBatch
from edgeml.telemetry.store import TelemetryStore

from .batches import make_batch


def test_devices_telemetry_and_errors_answer_as_in_process(tmp_path: Path) -> None:
    with StoreProcess(tmp_path / "t.duckdb") as store:
        device, token = store.register_device(
            group="g", profile="x86-64-generic", model="pump", device_id="d1"
        )
        assert store.authenticate(token) == device  # the copy of the registry knows it at once
        with pytest.raises(DeviceExists, match="d1"):
            store.register_device(group="g", profile="x86-64-generic", model="pump", device_id="d1")
        with pytest.raises(UnknownDevice):
            store.decommission("nobody")

        batch = make_batch(device_id="d1", group="g")
        first = store.ingest(batch)
        assert not first.duplicate
        assert store.ingest(batch) == type(first)(first.ack, duplicate=True)  # the stored answer
        with pytest.raises(BatchConflict):
            store.ingest(batch.model_copy(update={"rows": batch.rows + 1}))
        seen = store.device("d1")
        assert seen is not None
        assert seen.last_seen == first.ack.received_at  # the copy follows what telemetry changed
        assert seen.serving_version == batch.version

        assert store.batches() == [batch]
        assert store.batch_count() == 1
        assert store.add_feedback([FeedbackItem(prediction_id="p1", label="ok")], source="admin") == 1
        assert [f.prediction_id for f in store.feedback()] == ["p1"]
        assert store.fetch("SELECT count(*) FROM batch_features") == [(len(batch.features),)]
        store.probe_write()

        retired = store.decommission("d1")
        assert not retired.active
        assert store.authenticate(token) is None  # the token stops working when decommission returns

    with DuckDBStore(tmp_path / "t.duckdb") as reopened:  # what the child wrote is on disk
        assert reopened.batch_count() == 1
        assert reopened.device("d1") == retired


def test_many_threads_ingest_and_read_at_once(tmp_path: Path) -> None:
    with StoreProcess(tmp_path / "t.duckdb") as store:
        store.register_device(group="g", profile="x86-64-generic", model="pump", device_id="d1")
        sent = [make_batch(device_id="d1") for _ in range(200)]
        errors: list[BaseException] = []

        def post(part: list) -> None:  # type: ignore[type-arg]
            try:
                for batch in part:
                    assert not store.ingest(batch).duplicate
                    store.batch_count()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=post, args=(sent[i::8],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert store.batch_count() == 200
        assert store.queued_batches == 0


def test_a_dead_store_process_fails_calls_instead_of_hanging(tmp_path: Path) -> None:
    store = StoreProcess(tmp_path / "t.duckdb", max_queued_batches=5)
    try:
        assert store.pid is not None
        os.kill(store.pid, signal.SIGSTOP)  # stalled: batches wait, answered by nobody yet
        waiting = [store.submit(make_batch()) for _ in range(5)]
        with pytest.raises(Overloaded):
            store.submit(make_batch())
        os.kill(store.pid, signal.SIGKILL)
        for future in waiting:
            with pytest.raises(StoreClosed):
                future.result(10)
        deadline = time.monotonic() + 10
        while store.writer_alive():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(StoreClosed):
            store.submit(make_batch())
        with pytest.raises(StoreClosed):
            store.batch_count()
    finally:
        store.close()


def test_a_store_that_cannot_open_says_why(tmp_path: Path) -> None:
    (tmp_path / "t.duckdb").mkdir()  # a folder where the database file should be
    with pytest.raises(Exception, match=r"t\.duckdb"):
        StoreProcess(tmp_path / "t.duckdb")


def test_the_store_waits_for_a_previous_process_to_let_go(tmp_path: Path) -> None:
    first = StoreProcess(tmp_path / "t.duckdb")
    first.ingest(make_batch())
    closing = threading.Timer(1.0, first.close)  # a node going away while the next one starts
    closing.start()
    try:
        with StoreProcess(tmp_path / "t.duckdb") as second:
            assert second.batch_count() == 1
    finally:
        closing.join()


def _members(cls: type) -> dict[str, str]:
    """Public members of a class: name -> 'property' or 'method'."""
    return {
        name: "property" if isinstance(value, property) else "method"
        for name, value in vars(cls).items()
        if not name.startswith("_")
    }


def test_the_proxy_exposes_exactly_the_store_interface() -> None:
    interface = _members(TelemetryStore)
    proxy = _members(StoreProcess)
    assert proxy.pop("pid") == "property"  # the child's id: for tests and tools that watch it
    assert proxy == interface
    assert _members(DuckDBStore).items() >= interface.items()
    # the proxy's remote methods take the store's signatures: they must be the interface's
    for name, kind in interface.items():
        if kind == "method":
            assert inspect.signature(getattr(DuckDBStore, name)) == inspect.signature(
                getattr(TelemetryStore, name)
            ), name


def test_the_child_serves_the_remote_methods_and_no_other(tmp_path: Path) -> None:
    remote = {name for name, value in vars(StoreProcess).items() if isinstance(value, _Remote)}
    assert remote == _SERVED
    assert {"submit", "authenticate", "close"}.isdisjoint(_SERVED)  # answered in this process
    with StoreProcess(tmp_path / "t.duckdb") as store:
        with pytest.raises(AttributeError, match="does not serve 'close'"):
            store._call("close", (), {}, 10)
        assert store.batch_count() == 0  # the store goes on


def test_batches_submitted_on_an_event_loop_while_the_store_writes_share_commits(tmp_path: Path) -> None:
    sent = [make_batch(device_id=f"d{i % 4}") for i in range(300)]
    repeat = sent[0]

    async def post_all(store: StoreProcess) -> list[Ingested | BaseException]:
        answers = [store.submit_async(batch) for batch in [*sent, repeat]]
        return await asyncio.gather(*answers, return_exceptions=True)

    with StoreProcess(tmp_path / "t.duckdb") as store:
        for i in range(4):
            store.register_device(group="g", profile="x86-64-generic", model="pump", device_id=f"d{i}")
        answers = asyncio.run(post_all(store))
        assert all(isinstance(a, Ingested) for a in answers)
        assert [a.ack.batch_id for a in answers if isinstance(a, Ingested)] == [
            b.batch_id for b in [*sent, repeat]
        ]
        assert [a.duplicate for a in answers if isinstance(a, Ingested)] == [False] * 300 + [True]
        commits = store.fetch("SELECT count(DISTINCT received_at) FROM batches")[0][0]
        assert commits < 100  # batches that waited while the store wrote went in one commit
        children = store.fetch(
            "SELECT count(*) FROM batches b JOIN batch_features f ON f.seq = b.seq WHERE f.feature = 'a'"
        )
        assert children == [(300,)]  # every feature row found its own batch
        assert store.batches() == sent  # in the order they were submitted
        assert store.queued_batches == 0
        device = store.device("d0")
        assert device is not None
        assert device.last_seen == max(a.ack.received_at for a in answers if isinstance(a, Ingested))


def _hold_a_group_and_send_parts_ahead(
    store: StoreProcess, ahead: list[int], parts: int
) -> list[Future[Ingested]]:
    """With the store process stopped: one group out, then ``parts`` full parts sent ahead, one at a time."""
    assert store.pid is not None
    os.kill(store.pid, signal.SIGSTOP)
    futures = [store.submit(make_batch(device_id="d0"))]
    deadline = time.monotonic() + 10
    while store._groups == {}:  # the first group is handed over
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for part in range(1, parts + 1):
        futures += [store.submit(make_batch(device_id="d0")) for _ in range(PREPARE_CHUNK)]
        while len(ahead) < part:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    return futures


def _counting_parts_sent_ahead(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    ahead: list[int] = []  # the size of each part sent ahead
    send_ahead = StoreProcess._send_ahead

    def counted(self: StoreProcess, frame: bytes) -> bool:
        ahead.append(len(frame))
        return send_ahead(self, frame)

    monkeypatch.setattr(StoreProcess, "_send_ahead", counted)
    return ahead


def test_batches_arriving_while_a_group_is_written_are_sent_ahead_and_joined_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ahead = _counting_parts_sent_ahead(monkeypatch)
    with StoreProcess(tmp_path / "t.duckdb") as store:
        store.register_device(group="g", profile="x86-64-generic", model="pump", device_id="d0")
        try:
            futures = _hold_a_group_and_send_parts_ahead(store, ahead, parts=3)
            futures += [store.submit(make_batch(device_id="d0")) for _ in range(5)]  # the last part
        finally:
            assert store.pid is not None
            os.kill(store.pid, signal.SIGCONT)
        answers = [f.result(10) for f in futures]
        assert len(ahead) == 3
        assert store.fetch("SELECT count(DISTINCT received_at) FROM batches")[0][0] == 2
        assert [b.batch_id for b in store.batches()] == [a.ack.batch_id for a in answers]  # in order
        children = store.fetch(
            "SELECT count(*) FROM batches b JOIN batch_features f ON f.seq = b.seq WHERE f.feature = 'a'"
        )
        assert children == [(len(futures),)]  # every feature row found its own batch, across the 4 parts
        assert store.fetch("SELECT count(DISTINCT seq) FROM batches")[0][0] == len(futures)


def test_closing_writes_the_parts_already_sent_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ahead = _counting_parts_sent_ahead(monkeypatch)
    store = StoreProcess(tmp_path / "t.duckdb")
    store.register_device(group="g", profile="x86-64-generic", model="pump", device_id="d0")
    try:
        futures = _hold_a_group_and_send_parts_ahead(store, ahead, parts=2)
    finally:
        assert store.pid is not None
        os.kill(store.pid, signal.SIGCONT)
    store.close()  # the first group may still be out; the parts ahead are not in a group yet
    answers = [f.result(10) for f in futures]
    with DuckDBStore(tmp_path / "t.duckdb") as reopened:
        assert sorted(b.batch_id for b in reopened.batches()) == sorted(a.ack.batch_id for a in answers)


def test_a_group_missing_a_part_sent_ahead_fails_alone(tmp_path: Path) -> None:
    with StoreProcess(tmp_path / "t.duckdb") as store:
        lost: Future[Outcomes] = Future()
        with store._lock:
            call_id = store._new_id()
            store._calls[call_id] = lost
        store._send(Group(call_id, 1, 0), call_id)  # says one part went ahead; none did
        with pytest.raises(StoreClosed, match="1 parts of the group were sent ahead, 0 came"):
            lost.result(10)
        store.ingest(make_batch())  # the store goes on
        assert store.batch_count() == 1


def test_closing_a_stalled_store_with_a_full_pipe_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeml.telemetry import process

    monkeypatch.setattr(process, "_STOP_TIMEOUT_S", 1.0)
    store = StoreProcess(tmp_path / "t.duckdb", max_queued_batches=1_000_000)
    assert store.pid is not None
    os.kill(store.pid, signal.SIGSTOP)  # hung: it reads nothing more
    futures: list[Future[Ingested]] = []
    deadline = time.monotonic() + 60
    while len(store._waiting) < 2 * PREPARE_CHUNK:  # the sender is blocked on the full pipe
        futures += [store.submit(make_batch()) for _ in range(200)]
        time.sleep(0.05)
        assert time.monotonic() < deadline
    closing = threading.Thread(target=store.close)
    closing.start()
    closing.join(60)
    assert not closing.is_alive()  # it used to wait for the pipe forever
    assert not store._process.is_alive()
    for future in futures:
        with pytest.raises(StoreClosed):
            future.result(10)


def test_reads_get_every_duckdb_thread_and_writes_one(tmp_path: Path) -> None:
    with DuckDBStore(tmp_path / "t.duckdb") as store:
        setting = "SELECT current_setting('threads')"
        reading = store.fetch(setting)[0][0]
        writing = store.write(lambda con: con.execute(setting).fetchall()[0][0]).result()
        assert writing == WRITE_THREADS
        assert reading == duckdb.connect().execute(setting).fetchall()[0][0]  # DuckDB's default
        assert store.write(lambda con: con.execute(setting).fetchall()[0][0]).result() == WRITE_THREADS


def test_the_pipe_to_the_store_holds_a_group_in_one_write() -> None:
    import multiprocessing

    ours, theirs = multiprocessing.Pipe()
    try:
        _widen(ours)
        with socket.socket(fileno=os.dup(ours.fileno())) as sock:
            sent = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        # Linux doubles what is asked, capped by net.core.wmem_max
        cap = int(Path("/proc/sys/net/core/wmem_max").read_text()) * 2
        assert sent >= min(PIPE_BUFFER, cap)
    finally:
        ours.close()
        theirs.close()


def _overflowing(batch: TelemetryBatch) -> TelemetryBatch:
    """``batch`` with a window end UTC cannot hold (the contract lets it through; Arrow does not)."""
    end = datetime.fromisoformat("9999-12-31T23:59:59-14:00")
    return batch.model_copy(update={"window_end": end})


def test_one_batch_arrow_refuses_fails_alone_in_its_group(tmp_path: Path) -> None:
    sent = [make_batch(device_id="d0") for _ in range(100)]
    sent[50] = _overflowing(sent[50])

    async def post_all(store: StoreProcess) -> list[Ingested | BaseException]:
        return await asyncio.gather(*(store.submit_async(b) for b in sent), return_exceptions=True)

    with StoreProcess(tmp_path / "t.duckdb") as store:
        store.register_device(group="g", profile="x86-64-generic", model="pump", device_id="d0")
        answers = asyncio.run(post_all(store))
        failed = [i for i, a in enumerate(answers) if not isinstance(a, Ingested)]
        assert failed == [50]
        assert isinstance(answers[50], OverflowError)
        assert store.batch_count() == 99
        assert store.queued_batches == 0


def test_the_in_process_writer_fails_the_refused_batch_alone(tmp_path: Path) -> None:
    sent = [make_batch(device_id="d0") for _ in range(100)]
    sent[7] = _overflowing(sent[7])
    release = threading.Event()
    with DuckDBStore(tmp_path / "t.duckdb") as store:
        held = store.write(lambda _con: release.wait(10))  # the writer waits: the batches queue up
        futures = [store.submit(b) for b in sent]
        release.set()
        held.result(10)
        outcomes = [f.exception(10) for f in futures]
        assert [i for i, e in enumerate(outcomes) if e is not None] == [7]
        assert store.batch_count() == 99
