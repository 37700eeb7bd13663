"""Store operations are counted in edgeml's Prometheus registry."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeml.errors import ObjectNotFoundError
from edgeml.observability import REGISTRY, render_metrics
from edgeml.store import LocalStore, MemoryStore, ObjectStore


def ops(backend: str, operation: str, outcome: str) -> float:
    labels = {"backend": backend, "operation": operation, "outcome": outcome}
    return REGISTRY.get_sample_value("edgeml_store_operations_total", labels) or 0.0


def moved(backend: str, direction: str) -> float:
    labels = {"backend": backend, "direction": direction}
    return REGISTRY.get_sample_value("edgeml_store_bytes_total", labels) or 0.0


def timed(backend: str, operation: str) -> float:
    labels = {"backend": backend, "operation": operation}
    return REGISTRY.get_sample_value("edgeml_store_operation_seconds_count", labels) or 0.0


class Delta:
    """Counter values read before and after a block."""

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read
        self._before = read()

    @property
    def value(self) -> float:
        return self._read() - self._before


def delta(fn: Callable[..., float], *labels: str) -> Delta:
    return Delta(lambda: fn(*labels))


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return MemoryStore("metrics")


def test_put_counts_an_operation_and_bytes_up(store: ObjectStore) -> None:
    b = store.backend
    put_ok, up, seconds = delta(ops, b, "put", "ok"), delta(moved, b, "up"), delta(timed, b, "put")
    store.put("m/a", b"x" * 1000)
    store.put("m/b", io.BytesIO(b"y" * 24))
    assert put_ok.value == 2
    assert up.value == 1024
    assert seconds.value == 2


def test_reads_count_operations_and_bytes_down(store: ObjectStore) -> None:
    b = store.backend
    store.put("m/data", bytes(range(256)) * 4)
    get_ok, down = delta(ops, b, "get", "ok"), delta(moved, b, "down")
    assert len(store.get("m/data")) == 1024
    assert b"".join(store.stream("m/data", offset=1000)) == bytes(range(232, 256))
    assert get_ok.value == 2
    assert down.value == 1024 + 24


def test_partly_read_stream_counts_the_bytes_read(store: ObjectStore) -> None:
    store.put("m/chunks", b"z" * 1000)
    down = delta(moved, store.backend, "down")
    chunks = store.stream("m/chunks", chunk_size=100)
    assert len(next(chunks)) == 100
    chunks.close()  # type: ignore[attr-defined]
    assert down.value == 100


def test_stat_list_delete_are_counted(store: ObjectStore) -> None:
    b = store.backend
    store.put("m/k", b"1")
    counters = {op: delta(ops, b, op, "ok") for op in ("stat", "list", "delete")}
    store.stat("m/k")
    assert store.exists("m/k")  # exists is a stat
    assert store.keys("m/") == ["m/k"]
    store.delete("m/k")
    store.delete("m/k")  # deleting a missing key succeeds
    assert {op: d.value for op, d in counters.items()} == {"stat": 2, "list": 1, "delete": 2}


def test_failed_operations_count_as_errors(store: ObjectStore) -> None:
    b = store.backend
    stat_err, get_err, get_ok = (
        delta(ops, b, "stat", "error"),
        delta(ops, b, "get", "error"),
        delta(ops, b, "get", "ok"),
    )
    with pytest.raises(ObjectNotFoundError):
        store.stat("m/missing")
    assert not store.exists("m/missing")
    with pytest.raises(ObjectNotFoundError):
        store.stream("m/missing")
    with pytest.raises(ObjectNotFoundError):
        store.get("m/missing")
    assert stat_err.value == 2
    assert get_err.value == 2
    assert get_ok.value == 0


class Failing(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise OSError("disk read error")


def test_failed_put_counts_an_error_and_no_bytes(store: ObjectStore) -> None:
    b = store.backend
    put_err, put_ok, up = delta(ops, b, "put", "error"), delta(ops, b, "put", "ok"), delta(moved, b, "up")
    with pytest.raises(OSError, match="disk read error"):
        store.put("m/broken", io.BufferedReader(Failing()))
    assert (put_err.value, put_ok.value, up.value) == (1, 0, 0)


def test_backends_are_counted_apart(tmp_path: Path) -> None:
    local, memory = LocalStore(tmp_path / "s"), MemoryStore()
    local_put, memory_put = delta(ops, "local", "put", "ok"), delta(ops, "memory", "put", "ok")
    local.put("k", b"1")
    assert (local_put.value, memory_put.value) == (1, 0)
    memory.put("k", b"1")
    assert (local_put.value, memory_put.value) == (1, 1)


def test_metrics_are_exported() -> None:
    MemoryStore().put("k", b"1")
    text = render_metrics().decode()
    assert 'edgeml_store_operations_total{backend="memory",operation="put",outcome="ok"}' in text
    assert 'edgeml_store_bytes_total{backend="memory",direction="up"}' in text


@pytest.mark.integration
def test_s3_operations_are_counted(s3_server: Any) -> None:
    from edgeml.store.s3 import S3Store

    store = S3Store(s3_server.bucket, s3_server.settings(), prefix=f"metrics/{uuid.uuid4().hex}")
    put_ok, up, down = delta(ops, "s3", "put", "ok"), delta(moved, "s3", "up"), delta(moved, "s3", "down")
    get_ok, stat_err = delta(ops, "s3", "get", "ok"), delta(ops, "s3", "stat", "error")
    store.put("k", b"abc" * 100)
    assert store.get("k") == b"abc" * 100
    assert not store.exists("nope")
    assert (put_ok.value, up.value, get_ok.value, down.value, stat_err.value) == (1, 300, 1, 300, 1)
