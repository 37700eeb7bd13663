"""Shared fixtures: real services on 127.0.0.1, temporary appliance homes.

Every service a test starts binds to 127.0.0.1 and is stopped by the fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeml.settings import S3Settings, Settings, load_settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (figures in tests/durations.json), each file's tests in their order:
    xdist's ``--dist loadfile`` hands files out in this order, so no long file starts last."""
    from durations import load

    seconds = load()
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0.0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass(frozen=True)
class S3Server:
    """A real S3-protocol server (moto in server mode) with IAM authentication on."""

    endpoint: str  # host:port
    access_key: str
    secret_key: str
    bucket: str

    def settings(self, **overrides: object) -> S3Settings:
        values: dict[str, object] = {
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "secure": False,
            "region": "us-east-1",
            "timeout_s": 5.0,
            "retries": 0,
        }
        values.update(overrides)
        return S3Settings.model_validate(values)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start moto's server in its own process with authentication enforced.

    The first four requests may go unauthenticated (moto's INITIAL_NO_AUTH_ACTION_COUNT):
    they create an admin user, its key and policy. Everything after is signed and checked,
    so wrong credentials really are refused.
    """
    import boto3

    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3", MOTO_ALLOW_NONEXISTENT_REGION="true")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="edgeml-admin")
        key = iam.create_access_key(UserName="edgeml-admin")["AccessKey"]
        iam.put_user_policy(
            UserName="edgeml-admin",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        server = S3Server(f"127.0.0.1:{port}", key["AccessKeyId"], key["SecretAccessKey"], "edgeml")
        from minio import Minio

        Minio(
            server.endpoint,
            access_key=server.access_key,
            secret_key=server.secret_key,
            secure=False,
            region="us-east-1",
        ).make_bucket(server.bucket)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty appliance home."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    """Settings for the embedded default under a temporary home, free of the caller's env."""
    return load_settings({"EDGEML_HOME": str(home)})


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Remove every EDGEML_* variable and point EDGEML_HOME at a temporary home."""
    for name in list(os.environ):
        if name.startswith("EDGEML_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EDGEML_HOME", str(home))
    return home


@dataclass
class Mosquitto:
    """A real mosquitto broker on 127.0.0.1 with persistence, restartable by tests."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "max_queued_messages 1000000\nmax_inflight_messages 1000\n"
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
            # As root, mosquitto would switch to user 'mosquitto', which cannot write our temp dir.
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # mosquitto saves its persistence file on SIGTERM
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh broker per test (mosquitto from the OS packages; `make test` installs it)."""
    broker = Mosquitto(free_port(), tmp_path / "mosquitto")
    broker.workdir.mkdir()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def two_node_cluster(tmp_path: Path) -> Iterator[object]:
    """A real two-node Ray cluster (1 CPU each) with its own auth token; stopped after the test."""
    from raycluster import two_node_cluster as start_cluster

    with start_cluster(tmp_path) as cluster:
        yield cluster


@pytest.fixture
def ray_local() -> None:
    """One local Ray per test process for every pipeline run in it: `edgeml pipeline run` uses a
    running Ray, so the process pays Ray's start (5-30 s here) once instead of once per module or run.
    Starting a local Ray itself is tested in tests/ingest/test_runtime.py and by the demo."""
    from raycluster import shared_local_ray

    shared_local_ray()  # on loopback, its state in a folder of its own


@pytest.fixture(scope="session", autouse=True)
def _local_ray_ends_with_the_session() -> Iterator[None]:
    """Fixtures start the process's local Ray on first use and leave it up (``shared_local_ray``);
    it goes when the session ends. A process that never imported Ray pays nothing."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def spans() -> Iterator[Any]:
    """edgeml's spans, kept by the OTel SDK's in-memory exporter while the test runs."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from edgeml.observability import install_tracer_provider, tracer_provider

    exporter = InMemorySpanExporter()
    install_tracer_provider(tracer_provider(SimpleSpanProcessor(exporter), "edgeml-test"))
    try:
        yield exporter
    finally:
        install_tracer_provider(None)


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's rich consoles 200 columns wide, so tables keep their cells whole. Rich fixes a
    console's width from ``COLUMNS`` when it is created (at import; xdist workers run with
    ``COLUMNS=80``), so setting the variable inside a test comes too late."""
    from edgeml.cli import _context

    for console in (_context.console, _context.err_console):
        monkeypatch.setattr(console, "_width", 200)
