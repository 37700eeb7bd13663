"""Real devices' delivery into a real server: exactly once, even through throttling and a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml

from edgeml.agent.push import TelemetryPusher
from edgeml.agent.spool import Spool
from edgeml.central.app import create_app
from edgeml.observability import REGISTRY
from edgeml.telemetry.db.store import DuckDBStore
from edgeml.telemetry.schema import TelemetryBatch
from telemetry.batches import make_batch

from .conftest import BOOTSTRAP, bearer, make_config, uvicorn_server

DEVICES = 4
BATCHES = 30


def drain(spool: Spool, pusher: TelemetryPusher, deadline: float) -> None:
    """What the agent's push thread does, without sleeping out a 429's Retry-After in full."""
    while len(spool):
        assert time.monotonic() < deadline, "the spool did not drain"
        result = pusher.drain_once()
        if result.retry_in is not None:
            time.sleep(0.01)


def test_agent_pushers_deliver_every_batch_exactly_once(tmp_path: Path) -> None:
    # a queue smaller than what four devices send at once: some posts get 429 and are retried
    config = make_config(tmp_path / "central", limits={"max_queued_batches": 2, "retry_after_s": 1})
    app = create_app(config)
    sent: dict[str, TelemetryBatch] = {}
    with uvicorn_server(app) as url:
        names, spools, pushers = [], [], []
        for n in range(DEVICES):
            name = f"edge-{n}"
            made = httpx.post(
                f"{url}/v1/devices",
                json={"device_id": name, "profile": "x86-64-generic", "model": "pump"},
                headers=bearer(BOOTSTRAP),
            )
            spool = Spool(tmp_path / name / "spool.db")
            for _ in range(BATCHES):
                stored = spool.put(make_batch(name))
                assert stored is not None
                sent[stored.batch_id] = stored
            names.append(name)
            spools.append(spool)
            pushers.append(TelemetryPusher(spool, url, made.json()["token"], timeout_s=10))
        throttled = _throttled()
        deadline = time.monotonic() + 30
        threads = [
            threading.Thread(target=drain, args=(s, p, deadline))
            for s, p in zip(spools, pushers, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        store: DuckDBStore = app.state.central.store
        received = store.batches()
        assert len(received) == DEVICES * BATCHES
        assert _throttled() > throttled  # some were refused with 429, and came again
        assert {b.batch_id: b for b in received} == sent

        # acknowledgements lost on the way: the devices send it all again; nothing doubles
        for name, spool, pusher in zip(names, spools, pushers, strict=True):
            for batch in store.batches(device=name):
                spool.put(batch)
            drain(spool, pusher, time.monotonic() + 30)
            pusher.close()
            spool.close()
        assert len(store.batches()) == DEVICES * BATCHES


def test_nothing_acknowledged_is_lost_when_the_server_is_killed(tmp_path: Path) -> None:
    folder = tmp_path / "central"
    config = make_config(folder)
    port = _free_port()
    config_file = folder / "central.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json") | {"port": port}))
    edgeml = str(Path(sys.executable).with_name("edgeml"))
    log = (tmp_path / "central.log").open("wb")
    proc = subprocess.Popen(
        [edgeml, "central", "run", "--config", str(config_file), "--host", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    acked: list[str] = []
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc, tmp_path / "central.log")
        token = httpx.post(
            f"{url}/v1/devices",
            json={"device_id": "dev-1", "profile": "x86-64-generic", "model": "pump"},
            headers=bearer(BOOTSTRAP),
        ).json()["token"]
        stop = threading.Event()
        headers = bearer(token) | {"Content-Type": "application/json"}

        def post_forever(client: httpx.Client) -> None:
            while not stop.is_set():
                batch = make_batch()
                try:
                    answer = client.post("/v1/telemetry", content=batch.model_dump_json(), headers=headers)
                except httpx.TransportError:
                    return  # the server died mid-request: that batch was never acknowledged
                if answer.status_code == 200:
                    acked.append(batch.batch_id)

        clients = [httpx.Client(base_url=url, timeout=10) for _ in range(4)]
        posters = [threading.Thread(target=post_forever, args=(c,)) for c in clients]
        for poster in posters:
            poster.start()
        deadline = time.monotonic() + 20
        while len(acked) < 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # while the posters keep posting
        proc.wait(10)
        stop.set()
        for poster in posters:
            poster.join(10)
        for client in clients:
            client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    with DuckDBStore(config.db_path) as store:
        stored = {b.batch_id for b in store.batches()}
    assert set(acked) <= stored
    assert len(stored) - len(acked) <= 4  # at most the ones in flight were stored unacknowledged


def _throttled() -> float:
    return (
        REGISTRY.get_sample_value("edgeml_central_telemetry_batches_total", {"outcome": "throttled"}) or 0.0
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError("the central node did not become ready")
