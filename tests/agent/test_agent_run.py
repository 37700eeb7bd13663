"""`edgeml agent run` as a device runs it: a real process, a real store, real HTTP and MQTT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from edgeml.agent.config import AgentConfig
from edgeml.agent.spool import Spool

from .conftest import DeviceConfig, Publisher

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class AgentProcess:
    def __init__(self, config: AgentConfig, path: Path) -> None:
        path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("edgeml")),
                "agent",
                "run",
                "--config",
                str(path),
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving on" not in line:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"the agent did not start: {line}{err}")
        self.url = line.split("serving on ")[1].strip()
        self.client = httpx.Client(base_url=self.url, timeout=5)

    def wait_for_version(self, version: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.get("/agent/status").json()
            if status["version"] == version and not status["on_probation"]:
                return
            time.sleep(0.1)
        raise AssertionError(f"agent never served v{version}: {status}")

    def stop(self) -> str:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        return err


@pytest.fixture
def agent(publisher: Publisher, device_config: DeviceConfig, tmp_path: Path) -> Iterator[Any]:
    started: list[AgentProcess] = []

    def start(**overrides: object) -> AgentProcess:
        config = device_config(**overrides)
        process = AgentProcess(config, tmp_path / f"agent-{len(started)}.yaml")
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.stop()


def test_the_agent_pulls_serves_swaps_under_load_and_spools_telemetry(
    publisher: Publisher, agent: Any, tmp_path: Path
) -> None:
    publisher.release(1)
    device = agent(
        sync={"interval_s": 0.3, "health_window_s": 0.5}, telemetry={"window_s": 0.5, "sample_rows": 3}
    )
    device.wait_for_version(1)
    ready = device.client.get("/v2/health/ready")
    assert ready.status_code == 200
    answer = device.client.post("/predict", json={"a": 1.0, "b": 2.0})
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 1
    assert device.client.post("/predict", json={"a": 99.0, "b": 2.0}).status_code == 422  # a's max is 10

    # One client's steady requests while v2 arrives: no failure, and never back to v1 once on v2.
    # The swap happens only once many requests have been answered by v1, and the load goes on until
    # many more have been answered by v2 (events, not durations: a slow CPU only makes it last longer).
    versions: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=device.url, timeout=5) as client:
            while not stop.is_set():
                started = time.perf_counter()
                response = client.post("/predict", json={"a": 0.5, "b": -1.0})
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                else:
                    versions.append(response.json()["version"])
                time.sleep(max(0.0, 0.005 - (time.perf_counter() - started)))

    client_thread = threading.Thread(target=load)
    client_thread.start()
    wait_for(lambda: versions.count(1) >= 100 or bool(failures))
    publisher.release(2)
    device.wait_for_version(2)
    wait_for(lambda: versions.count(2) >= 100 or bool(failures))
    stop.set()
    client_thread.join()
    assert failures == []
    assert versions[0] == 1
    assert versions[-1] == 2
    first_v2 = versions.index(2)
    assert set(versions[first_v2:]) == {2}
    assert versions.count(1) >= 100
    assert versions.count(2) >= 100

    metrics = device.client.get("/metrics").text
    assert (
        'edgeml_inference_requests_total{model="pump",outcome="ok",protocol="predict",version="2"}' in metrics
    )
    err = device.stop()
    assert "agent stopped" in err
    with Spool(tmp_path / "devices" / "dev-1" / "telemetry.sqlite") as spool:
        stored = spool.peek(10_000)
    assert {b.version for b in stored} == {1, 2}
    assert sum(b.rows for b in stored) == len(versions) + 1  # every answered row is counted
    assert sum(b.errors.get("bad-input", 0) for b in stored) == 1
    # the configured sample: at most 3 rows a window, full in windows of 3 rows or more
    assert all(len(b.sample) == min(3, b.rows) for b in stored)


def test_mqtt_mode_computes_windows_online_and_publishes_predictions(
    publisher: Publisher, agent: Any, mosquitto: Any, tmp_path: Path
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from bundle.conftest import make_manifest, write_model
    from edgeml.agent.runtime import ModelRuntime
    from edgeml.bundle.build import publish_bundle
    from edgeml.bundle.manifest import Windows
    from edgeml.bundle.rollout import publish
    from edgeml.spec.models import WindowFeature

    from .conftest import with_golden

    # the model's input b is the mean of a over each machine's last 3 readings
    folder = tmp_path / "windowed"
    manifest = make_manifest(write_model(folder, 1), 1)
    windows = Windows(
        entity="machine",
        timestamp="ts",
        features=[WindowFeature(name="b", column="a", agg="mean", size=3)],
    )
    manifest = with_golden(manifest.model_copy(update={"windows": windows}), folder)
    publish_bundle(publisher.store, publisher.signer, manifest, folder)
    publish(publisher.store, publisher.signer, "pump", 1, "stable")
    device = agent(
        mqtt={"broker": mosquitto.url, "topic_in": "sensors/pumps", "topic_out": "predictions/pumps"}
    )
    device.wait_for_version(1)

    received: list[dict[str, Any]] = []
    subscribed = threading.Event()
    listener = mqtt.Client(CallbackAPIVersion.VERSION2)
    listener.on_connect = lambda c, *_: c.subscribe("predictions/pumps", qos=1)
    listener.on_subscribe = lambda *_: subscribed.set()
    listener.on_message = lambda c, u, msg: received.append(json.loads(msg.payload))
    listener.connect("127.0.0.1", mosquitto.port)
    listener.loop_start()
    assert subscribed.wait(5)
    readings = [
        {"machine": m, "ts": 1_700_000_000 + i, "a": float(v)}
        for i, (m, v) in enumerate([("m1", 1), ("m2", 5), ("m1", 2), ("m1", 3), ("m2", 7), ("m1", 9)])
    ]
    readings.append({"machine": "m1", "ts": 1_700_000_100, "a": 99.0})  # out of range: refused, not fatal
    for reading in readings:
        listener.publish("sensors/pumps", json.dumps(reading), qos=1)
    deadline = time.monotonic() + 10
    while len(received) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    listener.loop_stop()
    listener.disconnect()
    assert len(received) == 6
    runtime = ModelRuntime(folder, manifest)
    history: dict[str, list[float]] = {}
    for reading, message in zip(readings, received, strict=False):
        history.setdefault(reading["machine"], []).append(reading["a"])
        b = float(np.mean(history[reading["machine"]][-3:]))
        expected = runtime.predict_records([{"a": reading["a"], "b": b}])["variable"]
        assert message["entity"] == reading["machine"]
        assert message["version"] == 1
        assert message["prediction"] == pytest.approx(float(expected.ravel()[0]))
    metrics = device.client.get("/metrics").text
    assert 'protocol="mqtt",version="1"} 6.0' in metrics
    assert 'outcome="bad_input",protocol="mqtt"' in metrics
