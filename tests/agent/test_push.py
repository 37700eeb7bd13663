"""Delivery to a real HTTP server: at least once, idempotent by batch_id, polite when told to wait."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import numpy as np
import pytest

from bundle.conftest import make_manifest, write_model
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.push import TelemetryPusher, parse_retry_after
from edgeml.agent.spool import Spool
from edgeml.agent.telemetry import TelemetryWindow
from edgeml.observability import REGISTRY
from edgeml.telemetry.schema import TelemetryBatch

from .receiver import Receiver, Reply, unused_port
from .test_spool import make_batch

TOKEN = "device-token-1"


def sent(outcome: str) -> float:
    return REGISTRY.get_sample_value("edgeml_telemetry_sent_batches_total", {"outcome": outcome}) or 0.0


def dropped() -> float:
    return REGISTRY.get_sample_value("edgeml_telemetry_dropped_batches_total") or 0.0


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool.db") as opened:
        yield opened


def make_pusher(spool: Spool, url: str, **options: float) -> TelemetryPusher:
    settings = {"backoff_s": 0.02, "max_backoff_s": 0.1, "timeout_s": 2.0, "interval_s": 0.05} | options
    return TelemetryPusher(spool, url, TOKEN, **settings)  # type: ignore[arg-type]


def test_every_batch_is_delivered_with_the_device_token(spool: Spool, receiver: Receiver) -> None:
    batches = [spool.put(make_batch(i + 1)) for i in range(20)]
    before = sent("ok")
    with make_pusher(spool, receiver.url + "/", chunk=7) as pusher:
        result = pusher.drain_once()
    assert (result.sent, result.rejected, result.retry_in) == (20, 0, None)
    assert len(spool) == 0
    assert [h.batch_id for h in receiver.hits] == [b.batch_id for b in batches if b]
    assert {h.authorization for h in receiver.hits} == {f"Bearer {TOKEN}"}
    assert {h.path for h in receiver.hits} == {"/v1/telemetry"}
    assert list(receiver.stored.values()) == batches
    assert sent("ok") - before == 20


def test_a_4xx_is_not_retried_the_batch_is_dropped_and_logged(
    spool: Spool, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    bad, good = spool.put(make_batch(1)), spool.put(make_batch(2))
    assert bad is not None
    assert good is not None
    receiver.script.append(Reply(400))
    before = sent("rejected")
    with (
        caplog.at_level(logging.WARNING, "edgeml.agent.telemetry"),
        make_pusher(spool, receiver.url) as pusher,
    ):
        result = pusher.drain_once()
    assert (result.sent, result.rejected, result.retry_in) == (1, 1, None)
    assert [h.batch_id for h in receiver.hits] == [bad.batch_id, good.batch_id]  # bad once, never again
    assert len(spool) == 0
    assert sent("rejected") - before == 1
    assert bad.batch_id in caplog.text
    assert "refused with 400" in caplog.text  # the central node's answer is in the log


def test_a_refused_token_keeps_the_batches(spool: Spool, receiver: Receiver) -> None:
    spool.put(make_batch(1))
    receiver.script.append(Reply(401))
    with make_pusher(spool, receiver.url, max_backoff_s=8.0) as pusher:
        result = pusher.drain_once()
    assert result.retry_in is not None
    assert result.retry_in >= 4.0
    assert len(spool) == 1


def test_5xx_is_retried_and_a_repeat_is_harmless(spool: Spool, receiver: Receiver) -> None:
    batches = [spool.put(make_batch(i + 1)) for i in range(3)]
    # the 503 comes after the batch was stored (a lost answer): the device sends it again
    receiver.script.extend([Reply(500), Reply(503, stored=True), Reply(502)])
    before = sent("retry")
    with make_pusher(spool, receiver.url) as pusher:
        pusher.start()
        wait_until(lambda: len(spool) == 0)
        pusher.stop()
    first = batches[0]
    assert first is not None
    assert [h.status for h in receiver.hits] == [500, 503, 502, 200, 200, 200]
    assert receiver.deliveries[first.batch_id] == 2  # at least once ...
    assert list(receiver.stored.values()) == batches  # ... and one copy each by batch_id
    assert sent("retry") - before == 3


def test_retry_after_seconds_is_honoured(spool: Spool, receiver: Receiver) -> None:
    spool.put(make_batch(1))
    receiver.script.append(Reply(429, {"Retry-After": "1"}))
    with make_pusher(spool, receiver.url) as pusher:
        pusher.start()
        wait_until(lambda: len(spool) == 0)
        pusher.stop()
    first, second = receiver.hits
    assert (first.status, second.status) == (429, 200)
    assert 1.0 <= second.at - first.at < 1.5


def test_retry_after_as_an_http_date_is_honoured(spool: Spool, receiver: Receiver) -> None:
    spool.put(make_batch(1))
    # HTTP dates have whole seconds: three seconds ahead is more than two seconds away
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    receiver.script.append(Reply(503, {"Retry-After": when}))
    with make_pusher(spool, receiver.url) as pusher:
        pusher.start()
        wait_until(lambda: len(spool) == 0)
        pusher.stop()
    first, second = receiver.hits
    assert 1.5 <= second.at - first.at < 3.5


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_grows_with_jitter_while_central_is_down(spool: Spool) -> None:
    spool.put(make_batch(1))
    with make_pusher(spool, f"http://127.0.0.1:{unused_port()}", backoff_s=0.1, max_backoff_s=1.0) as pusher:
        waits = [pusher.drain_once().retry_in for _ in range(6)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for wait, ceiling in zip(waits, ceilings, strict=True):
        assert wait is not None
        assert ceiling / 2 <= wait <= ceiling
    assert len(spool) == 1


def test_stop_is_prompt_during_a_long_backoff(spool: Spool, receiver: Receiver) -> None:
    spool.put(make_batch(1))
    receiver.script.append(Reply(503, {"Retry-After": "30"}))
    with make_pusher(spool, receiver.url) as pusher:
        pusher.start()
        wait_until(lambda: len(receiver.hits) == 1)
        start = time.monotonic()
        pusher.stop()
        assert time.monotonic() - start < 5, "stop waited out the 30 s back-off"
    assert len(spool) == 1


def test_central_down_then_back_every_batch_not_dropped_arrives_exactly_once(tmp_path: Path) -> None:
    """Real windows from a real model, a bounded spool, the central node away and then back."""
    folder = tmp_path / "model"
    model = LoadedModel(folder, make_manifest(write_model(folder, seed=0, external=False)))
    window = TelemetryWindow("dev-1", window_rows=20, seed=0)
    holder = ModelHolder()
    holder.watch(window)
    rng = np.random.default_rng(0)

    def one_window() -> TelemetryBatch:
        columns = {"a": rng.normal(size=20).tolist(), "b": rng.normal(size=20).tolist()}
        holder.observe(model, columns, model.predict(columns), 0.001)  # 20 rows: the window closes
        (batch,) = window.collect()
        return batch

    def produce() -> None:
        batch = one_window()
        made.append(batch.batch_id)
        spool.put(batch)
        pusher.wake()

    port = unused_port()
    drops_before = dropped()
    first = one_window()
    made = [first.batch_id]
    with (
        Spool(tmp_path / "spool.db", max_bytes=len(first.model_dump_json()) * 11 // 2) as spool,
        make_pusher(spool, f"http://127.0.0.1:{port}") as pusher,
    ):
        spool.put(first)
        pusher.start()
        for _ in range(39):  # central is down: the spool fills and drops its oldest
            produce()
            time.sleep(0.01)
        assert len(spool) > 0
        assert spool.dropped_total > 0
        with Receiver(port) as receiver:
            for _ in range(10):  # it is back, and the device keeps producing meanwhile
                produce()
            wait_until(lambda: len(spool) == 0)
            pusher.stop()
        lost = spool.dropped_total

    assert len(made) == 50
    assert len(set(made)) == 50
    missing = set(made) - set(receiver.stored)
    assert len(missing) == lost
    assert set(receiver.deliveries.values()) == {1}  # exactly once each
    assert sum(b.dropped_before for b in receiver.stored.values()) == lost  # the central node knows
    assert dropped() - drops_before == lost
    assert sum(b.rows for b in receiver.stored.values()) == 20 * (50 - lost)
