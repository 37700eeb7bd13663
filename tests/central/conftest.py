"""A central node for tests: real config files, a real DuckDB file, the app on a real uvicorn."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from agent.conftest import publisher  # noqa: F401 (a fixture: a signing publisher on a local store)
from edgeml.central.app import create_app
from edgeml.central.config import CentralConfig
from edgeml.telemetry.schema import TelemetryBatch
from edgeml.telemetry.store import TelemetryStore

ADMIN = "admin-token-0123456789"
BOOTSTRAP = "bootstrap-token-0123456789"


def write_secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    os.chmod(path, 0o600)
    return path


def make_config(folder: Path, **overrides: Any) -> CentralConfig:
    """A config with token files in ``folder`` (written once) and the DB at folder/telemetry.duckdb."""
    folder.mkdir(parents=True, exist_ok=True)
    admin = folder / "admin.token"
    if not admin.exists():
        write_secret(admin, ADMIN)
        write_secret(folder / "bootstrap.token", BOOTSTRAP)
    data: dict[str, Any] = {
        "db_path": str(folder / "telemetry.duckdb"),
        "admin_token_file": str(admin),
        "bootstrap_token_file": str(folder / "bootstrap.token"),
        "targets_cache_s": 0,
    }
    data.update(overrides)
    return CentralConfig.model_validate(data)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Central:
    """The app on uvicorn and an HTTP client to it, with helpers for the calls every test makes."""

    app: FastAPI
    client: httpx.Client
    config: CentralConfig

    @property
    def store(self) -> TelemetryStore:
        store: TelemetryStore = self.app.state.central.store
        return store

    def register(self, device_id: str = "dev-1", group: str | None = None, model: str = "pump") -> str:
        answer = self.client.post(
            "/v1/devices",
            json={"device_id": device_id, "group": group, "profile": "x86-64-generic", "model": model},
            headers=bearer(BOOTSTRAP),
        )
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["token"]
        return token

    def post(self, batch: TelemetryBatch, token: str) -> httpx.Response:
        return self.client.post(
            "/v1/telemetry",
            content=batch.model_dump_json(),
            headers=bearer(token) | {"Content-Type": "application/json"},
        )


@contextmanager
def uvicorn_server(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn on 127.0.0.1 (lifespan on: the store closes at shutdown)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, access_log=False, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert thread.is_alive(), "uvicorn failed to start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()


@contextmanager
def running(config: CentralConfig) -> Iterator[Central]:
    """The central node on 127.0.0.1 until the block ends; its shutdown closes the store."""
    app = create_app(config)
    with uvicorn_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Central(app, client, config)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    with running(make_config(tmp_path / "central")) as c:
        yield c


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """The local store of a node that has one (landed labels, its audit trail)."""
    return tmp_path / "store"


@pytest.fixture
def central_on_lake(tmp_path: Path, lake: Path) -> Iterator[Central]:
    """A node whose central.yaml names the store at ``lake``."""
    with running(make_config(tmp_path / "central", store={"url": f"file://{lake}"})) as c:
        yield c
