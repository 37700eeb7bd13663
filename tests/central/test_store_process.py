"""The telemetry store in its own process: the same answers as in-process, and no hang when it dies."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from edgeml.central.db import (
    BatchConflict,
    DeviceExists,
    FeedbackItem,
    Overloaded,
    StoreClosed,
    TelemetryStore,
    UnknownDevice,
)
from edgeml.central.store_process import StoreProcess

from .conftest import make_batch


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

    with TelemetryStore(tmp_path / "t.duckdb") as reopened:  # what the child wrote is on disk
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


def test_every_call_the_child_serves_is_a_store_method_on_both_sides() -> None:
    from edgeml.central.store_process import _CALLS

    for name in _CALLS:
        assert callable(getattr(TelemetryStore, name)), name
        assert callable(getattr(StoreProcess, name)), name
