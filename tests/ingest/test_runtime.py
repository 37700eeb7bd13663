"""Where Ray runs: a local Ray listens on loopback only; a bad cluster address fails fast and says why."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeml.errors import UserError
from edgeml.ingest.runtime import check_cluster_address
from raycluster import free_port

EDGEML = str(Path(sys.executable).with_name("edgeml"))

SINGLE_NODE_RUN = """
import ipaddress, json, sys
import psutil
from edgeml.ingest.run import ingest
from edgeml.ingest.runtime import ray_session
from edgeml.settings import load_settings
from edgeml.spec import load_spec

settings = load_settings({"EDGEML_HOME": sys.argv[2]})
with ray_session(None, progress_bars=False):
    report = ingest(load_spec(sys.argv[1]), settings, progress_bars=False)
    me = psutil.Process()
    listening = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.Error:
            continue
        listening += [[name, c.laddr.ip, c.laddr.port] for c in conns if c.status == psutil.CONN_LISTEN]
print(json.dumps({"rows": report.snapshot.rows, "listening": listening}))
"""


def _is_loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _child_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("EDGEML_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["EDGEML_HOME"] = str(tmp_path / "home")
    return env


@pytest.mark.slow
def test_a_single_node_run_listens_on_loopback_only(
    tmp_path: Path,
    write_spec_file: Callable[..., Path],
    sensor_csvs: Callable[..., tuple[list[Path], int]],
) -> None:
    _, rows = sensor_csvs(tmp_path / "data", files=2, machines=2, readings=100)
    spec = write_spec_file(tmp_path, "{name: history, kind: file, path: data/*.csv}")
    done = subprocess.run(
        [sys.executable, "-c", SINGLE_NODE_RUN, str(spec), str(tmp_path / "home")],
        env=_child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rows"] == rows
    listening = result["listening"]
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names, listening  # Ray's own services were seen
    exposed = [entry for entry in listening if not _is_loopback(entry[1])]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_a_closed_port_fails_fast_naming_the_address(tmp_path: Path) -> None:
    port = free_port()  # bound once and released: nothing listens there
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: pumps\nsources: [{name: a, kind: file, path: x.csv}]\n"
        "schema: {columns: {x: {type: float}}}\ntask: clustering\nsearch: {families: [kmeans]}\n"
    )
    start = time.monotonic()
    done = subprocess.run(
        [EDGEML, "ingest", str(spec), "--ray-address", f"127.0.0.1:{port}"],
        env=_child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 2, done.stderr[-2000:]
    message = done.stderr + done.stdout
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in message
    assert "ray status" in message
    assert "6379" in message
    assert "Traceback" not in message
    assert elapsed < 30


@pytest.fixture
def not_ray() -> Iterator[int]:
    """A TCP server that accepts connections and answers like a web server, not like Ray."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_a_port_that_is_not_ray_is_named_as_such(not_ray: int) -> None:
    expected = f"127.0.0.1:{not_ray} accepts connections but does not answer as a Ray"
    with pytest.raises(UserError, match=expected):
        check_cluster_address(f"127.0.0.1:{not_ray}", timeout_s=2)


@pytest.mark.parametrize("address", ["head-node", "head:port", "ray://head:99999", ":6379"])
def test_a_malformed_address_says_what_form_it_takes(address: str) -> None:
    with pytest.raises(UserError, match="is not host:port") as info:
        check_cluster_address(address)
    assert "6379" in (info.value.hint or "")
