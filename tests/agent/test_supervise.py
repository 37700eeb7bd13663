"""Supervised agent threads: a failing round is logged once, counted, shown in /agent/status,
/v2/health/ready and /metrics, and the loop goes on with backoff until it recovers."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from edgeml.agent.supervise import Supervisor
from edgeml.observability import AGENT_THREAD_DOWN_SINCE, AGENT_THREAD_FAILURES

from .conftest import DeviceConfig, Publisher
from .live import live_agent


def failures(thread: str) -> float:
    return AGENT_THREAD_FAILURES.labels(thread)._value.get()


def test_a_failure_is_logged_once_counted_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor("unit-test", backoff_s=0.5, max_backoff_s=4)
    before = failures("unit-test")

    def broken() -> int:
        raise KeyError("state")

    with caplog.at_level(logging.DEBUG, logger="edgeml.agent"):
        for _ in range(5):
            assert supervisor.call(broken) is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # the traceback once; the same failure again is a debug line
    assert errors[0].exc_info is not None
    assert sum(1 for r in caplog.records if r.levelno == logging.DEBUG) == 4
    assert failures("unit-test") == before + 5
    assert AGENT_THREAD_DOWN_SINCE.labels("unit-test")._value.get() == supervisor.down_since > 0
    status = supervisor.status()
    assert (status["up"], status["failures_in_a_row"]) == (False, 5)
    assert status["last_error"] == "KeyError: 'state'"
    assert 2 <= supervisor.backoff() <= 4  # 0.5 * 2**4 = 8, capped at 4, jittered down to half
    assert supervisor.call(lambda: 7) == 7
    assert supervisor.up
    assert AGENT_THREAD_DOWN_SINCE.labels("unit-test")._value.get() == 0


def test_a_loop_goes_on_after_failures() -> None:
    supervisor = Supervisor("unit-loop", backoff_s=0.01, max_backoff_s=0.02)
    calls: list[int] = []
    stop = threading.Event()

    def round_() -> float:
        calls.append(1)
        if len(calls) < 4:
            raise RuntimeError("flaky")
        stop.set()
        return 0.0

    supervisor.start(round_, stop)
    supervisor.join(5)
    assert len(calls) == 4
    assert supervisor.status()["failures_total"] == 3
    assert supervisor.up


def wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_sync_thread_that_fails_shows_in_status_readiness_and_metrics_then_recovers(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    publisher.release(1)
    with live_agent(device_config()) as (agent, http):
        agent.syncer.supervisor.backoff_s = agent.syncer.supervisor.max_backoff_s = 0.1
        wait_for(lambda: http.get("/agent/status").json()["version"] == 1)
        assert http.get("/v2/health/ready").status_code == 200
        before = failures("sync")

        # the disk under the agent's state goes wrong: state.json cannot be replaced any more
        state = agent.syncer.install.root / "state.json"
        state.unlink()
        state.mkdir()
        (state / "blocker").write_text("x")
        wait_for(lambda: not http.get("/agent/status").json()["threads"]["sync"]["up"])
        status = http.get("/agent/status").json()
        assert "IsADirectoryError" in status["threads"]["sync"]["last_error"]
        assert status["version"] == 1  # still serving
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "sync" in ready.json()["down"]
        assert http.post("/predict", json={"a": 1.0, "b": 2.0}).status_code == 200
        wait_for(lambda: failures("sync") >= before + 2)  # the loop goes on
        metrics = http.get("/metrics").text
        assert 'edgeml_agent_thread_failures_total{thread="sync"}' in metrics
        down = 'edgeml_agent_thread_down_since_timestamp_seconds{thread="sync"} '
        assert float(metrics.split(down)[1].split()[0]) > 0

        shutil.rmtree(state)
        wait_for(lambda: http.get("/agent/status").json()["threads"]["sync"]["up"])
        assert http.get("/v2/health/ready").status_code == 200
        assert set(http.get("/agent/status").json()["threads"]) == {"sync", "telemetry-collect"}


@pytest.mark.slow
def test_a_failing_mqtt_handler_is_counted_and_the_network_loop_goes_on(
    publisher: Publisher, device_config: DeviceConfig, mosquitto: Any
) -> None:
    """A publish that raises inside paho's callback (here: a topic_out with a wildcard) used to
    end paho's network thread at the first reading; supervised, every reading is still handled."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    publisher.release(1)
    mqtt_config = {"broker": mosquitto.url, "topic_in": "sensors/in", "topic_out": "predictions/#"}
    config = device_config(mqtt=mqtt_config)
    before = failures("mqtt")
    with live_agent(config) as (agent, http):
        wait_for(lambda: http.get("/agent/status").json()["version"] == 1)
        sender = mqtt.Client(CallbackAPIVersion.VERSION2)
        sender.connect("127.0.0.1", mosquitto.port)
        sender.loop_start()
        try:
            wait_for(lambda: agent.stream is not None and agent.stream._client.is_connected())
            time.sleep(0.3)  # the agent's subscription is made on connect
            for _ in range(3):
                sender.publish("sensors/in", json.dumps({"a": 1.0, "b": 2.0}), qos=1).wait_for_publish(5)
            wait_for(lambda: failures("mqtt") >= before + 3)
        finally:
            sender.loop_stop()
            sender.disconnect()
        mqtt_status = http.get("/agent/status").json()["threads"]["mqtt"]
        assert not mqtt_status["up"]
        assert "wildcards" in mqtt_status["last_error"]
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "mqtt" in ready.json()["down"]
