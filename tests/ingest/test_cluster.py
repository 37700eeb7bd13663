"""Ingest on a real two-node Ray cluster: both nodes read and land blocks.

How the cluster is run, and why:

- Token authentication (on by default since Ray 2.60): the cluster gets a token of its own
  (``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` in the environment of both ``ray start``
  and the driver), independent of whatever ``~/.ray/auth_token`` holds. A driver with another
  token is refused, which the test checks.
- Addresses: ``--node-ip-address 127.0.0.1`` is passed as asked, but Ray rewrites a loopback
  address to the machine's routable one (``resolve_ip_for_localhost``), and the only way to
  keep loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) makes worker nodes refuse to start.
  Several Ray services bind all interfaces whatever the flags; the token keeps them closed.
- Stopping: ``ray stop --force`` kills every Ray process of the user on the machine (the
  test session's own local Ray, another run's), so it is not used. Each node runs as
  ``ray start --block`` in a session of its own; it is stopped with SIGTERM (Ray shuts its
  processes down; draining first is turned off), then anything still in those sessions is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from edgeml.ingest.lake import list_snapshots, read_parts
from edgeml.settings import load_settings
from edgeml.spec import load_spec
from edgeml.store import store_from_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RAY = Path(sys.executable).with_name("ray")
READY = "will now block"

WAIT_FOR_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="WARNING")
deadline = time.monotonic() + 60
while True:
    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    if len(alive) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(" ".join(alive))
"""

CONNECT = """
import sys, ray
try:
    ray.init(address=sys.argv[1], log_to_driver=False, logging_level="WARNING")
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
else:
    print("CONNECTED", len(ray.nodes()))
"""

INGEST = """
import json, sys
from edgeml.ingest.run import ingest
from edgeml.settings import load_settings
from edgeml.spec import load_spec

spec = load_spec(sys.argv[1])
settings = load_settings({"EDGEML_HOME": sys.argv[2], "RAY_ADDRESS": sys.argv[3]})
report = ingest(spec, settings, progress_bars=False)
print(json.dumps({
    "snapshot": report.snapshot.id,
    "rows": report.snapshot.rows,
    "sources": [
        {"name": s.name, "rows_in": s.rows_in, "rows_clean": s.rows_clean, "parts": len(s.parts),
         "nodes": sorted(s.nodes)}
        for s in report.sources
    ],
}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if READY in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start` exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"`ray start` not ready after {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def _session_members(sid: int) -> list[int]:
    """Processes in session ``sid`` (a ``ray start`` started in a session of its own, and its children)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # state, ppid, pgrp, session
            members.append(int(entry.name))
    return members


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):  # the worker first, then the head
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_session_members(p.pid) for p in procs):
        time.sleep(0.2)
    for proc in procs:
        for pid in _session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def two_node_cluster(tmp_path: Path) -> Iterator[Cluster]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"  # nothing to drain: no 30 s wait on SIGTERM
    # Short: Ray's unix sockets live under it, and their paths are limited to ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="edgeml-ray-", dir="/tmp")
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]
    commands = {
        "head": [
            str(RAY),
            "start",
            "--head",
            "--port",
            str(port),
            "--include-dashboard=false",
            "--ray-client-server-port",
            str(free_port()),
            "--temp-dir",
            temp_dir,
            "--dashboard-agent-listen-port",
            str(free_port()),
            *common,
        ],
        "worker": [
            str(RAY),
            "start",
            "--address",
            f"127.0.0.1:{port}",
            "--dashboard-agent-listen-port",
            str(free_port()),
            *common,
        ],
    }
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[BinaryIO] = []
    try:
        for name, command in commands.items():
            log_path = tmp_path / f"ray-{name}.log"
            log = log_path.open("wb")
            logs.append(log)
            proc = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            procs.append(proc)
            _wait_ready(proc, log_path)
        yield Cluster(f"127.0.0.1:{port}", env)
    finally:
        _stop(procs)
        for handle in logs:
            handle.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not any(_session_members(p.pid) for p in procs), "Ray processes outlived the test"


def _python(code: str, *args: str, env: dict[str, str], timeout: float = 240) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _last_json(stdout: str) -> dict[str, Any]:
    line = next(line for line in reversed(stdout.splitlines()) if line.startswith("{"))
    return dict(json.loads(line))


def test_ingest_spreads_over_both_nodes(
    two_node_cluster: Cluster,
    tmp_path: Path,
    write_spec_file: Callable[..., Path],
    sensor_csvs: Callable[..., tuple[list[Path], int]],
) -> None:
    _, rows = sensor_csvs(tmp_path / "data", files=8, machines=4, readings=1000)
    spec_path = write_spec_file(tmp_path, "{name: history, kind: file, path: data/*.csv}")
    home = tmp_path / "home"
    address, env = two_node_cluster.address, two_node_cluster.env

    # A driver holding another token is turned away (it takes a while: it runs alongside).
    intruder = subprocess.Popen(
        [sys.executable, "-c", CONNECT, address],
        env={**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        nodes = _python(WAIT_FOR_NODES, address, env=env).split()
        assert len(nodes) == 2, f"the worker node did not join: {nodes}"

        report = _last_json(_python(INGEST, str(spec_path), str(home), address, env=env))
        (source,) = report["sources"]
        assert source["rows_in"] == source["rows_clean"] == rows
        assert report["rows"] == rows
        assert len(set(source["nodes"])) == 2, source
        assert set(source["nodes"]) == set(nodes)

        # What the nodes wrote is one lake, read back here without Ray.
        settings = load_settings({"EDGEML_HOME": str(home)})
        store = store_from_settings(settings)
        (snapshot,) = list_snapshots(store, "pumps")
        assert snapshot.id == report["snapshot"]
        assert read_parts(store, snapshot.parts, load_spec(spec_path).schema_).num_rows == rows

        out, err = intruder.communicate(timeout=120)
        assert "REFUSED" in out, f"{out}\n{err[-2000:]}"
    finally:
        if intruder.poll() is None:
            intruder.kill()
            intruder.communicate()
