"""A real two-node Ray cluster on this machine, for tests that must show work on both nodes.

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

import atexit
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["Cluster", "last_json", "run_python", "shared_local_ray", "start_local_ray", "two_node_cluster"]

RAY = Path(sys.executable).with_name("ray")
READY = "will now block"


_LOCAL_TEMP: list[str] = []


def start_local_ray(num_cpus: int = 2) -> None:
    """The test session's local Ray: on loopback (as the appliance starts it), its state in a
    folder of its own that goes when the session ends, never the system temp folder's ``ray/``.

    The folder is created once per process (Ray keeps one session folder per start in it); a short
    path under /tmp, because Ray's socket paths must fit in 107 characters.
    """
    from edgeml.ingest.runtime import init_ray

    if not _LOCAL_TEMP:
        _LOCAL_TEMP.append(tempfile.mkdtemp(prefix="edgeml-ray-", dir="/tmp"))
        atexit.register(shutil.rmtree, _LOCAL_TEMP[0], ignore_errors=True)
    init_ray(None, num_cpus=num_cpus, _temp_dir=_LOCAL_TEMP[0])


def shared_local_ray() -> None:
    """The test process's local Ray, started on first use and left up for every later test in the
    process: a start costs 5-30 s on 2 cores, and its warm workers skip their imports next time.
    ``ray_session`` sees it running and reuses it; the root conftest shuts it down with the session."""
    import ray

    if not ray.is_initialized():
        start_local_ray()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]
    dashboard: str | None = None  # http://127.0.0.1:PORT when started with the dashboard (state API)


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


@contextlib.contextmanager
def two_node_cluster(tmp_path: Path, *, dashboard: bool = False) -> Iterator[Cluster]:
    """``dashboard``: run the head's dashboard on 127.0.0.1, for Ray's state API (task records)."""
    port = free_port()
    dashboard_port = free_port()
    board = (
        ["--include-dashboard=true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port)]
        if dashboard
        else ["--include-dashboard=false"]
    )
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
            *board,
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
        yield Cluster(f"127.0.0.1:{port}", env, f"http://127.0.0.1:{dashboard_port}" if dashboard else None)
    finally:
        _stop(procs)
        for handle in logs:
            handle.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not any(_session_members(p.pid) for p in procs), "Ray processes outlived the test"


def run_python(code: str, *args: str, env: dict[str, str], timeout: float = 240) -> str:
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


def last_json(stdout: str) -> dict[str, Any]:
    line = next(line for line in reversed(stdout.splitlines()) if line.startswith("{"))
    return dict(json.loads(line))
