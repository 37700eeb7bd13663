"""`edgeml up` / `status` / `down` for real: every URL answers, then nothing is left running."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EDGEML = str(Path(sys.executable).with_name("edgeml"))


def edgeml(home: Path, *args: str, timeout: float = 300) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEML_", "RAY_"))}
    done = subprocess.run(
        [EDGEML, "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=environment | {"COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def status_rows(table: str) -> dict[str, str]:
    """service -> state, from the table `edgeml status` prints."""
    cells = [
        [c.strip() for c in line.split("│")[1:-1]] for line in table.splitlines() if line.count("│") == 5
    ]
    return {row[0]: row[1] for row in cells if row[0] != "service"}


def ray_port() -> int:
    """A free port whose next three (client server, dashboard agent, dashboard) are free too."""
    while True:
        port = free_port()
        try:
            for offset in (1, 2, 3):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port


def test_up_status_down(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = {"ray": ray_port(), "mlflow": free_port(), "central": free_port(), "prometheus": free_port()}
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    pids: list[int] = []
    try:
        out = edgeml(home, "up", *args)
        run = home / "run"
        pids = [json.loads(p.read_text())["pid"] for p in run.glob("*.pid")]
        for name, port in ports.items():
            if name == "prometheus" and shutil.which("prometheus") is None:
                continue
            assert f"127.0.0.1:{port}" in out, out
        assert httpx.get(f"http://127.0.0.1:{ports['central']}/healthz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['mlflow']}/health").status_code == 200
        socket.create_connection(("127.0.0.1", ports["ray"]), timeout=2).close()
        if shutil.which("prometheus"):
            prom = f"http://127.0.0.1:{ports['prometheus']}"
            assert httpx.get(f"{prom}/-/ready").status_code == 200
            rules = httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
            assert {g["name"] for g in rules} >= {"edgeml-fleet", "edgeml-serving"}
            jobs = {
                t["labels"]["job"]
                for t in httpx.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
            }
            assert "edgeml-central" in jobs
            # a device registered with the central node becomes an agent target (file_sd); "localhost"
            # as its host name keeps the scrape attempt on this machine
            bootstrap = (home / "central" / "bootstrap.token").read_text().strip()
            registered = httpx.post(
                f"http://127.0.0.1:{ports['central']}/v1/devices",
                json={"device_id": "localhost", "group": "line-a", "profile": "x86-64-generic", "model": "m"},
                headers={"Authorization": f"Bearer {bootstrap}"},
            )
            assert registered.status_code == 201, registered.text
            deadline = time.monotonic() + 30
            agents: list[dict[str, str]] = []
            while not agents and time.monotonic() < deadline:
                targets = httpx.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
                agents = [t["labels"] for t in targets if t["labels"]["job"] == "edgeml-agents"]
                time.sleep(0.5)
            assert agents, "Prometheus did not pick up the registered device"
            assert agents[0]["device"] == "localhost"
            assert agents[0]["group"] == "line-a"

        again = edgeml(home, "up", *args)  # a second up starts nothing new
        assert again.count("(already running)") == len(pids), again
        rows = status_rows(edgeml(home, "status"))
        for name in ports:
            if name != "prometheus" or shutil.which("prometheus"):
                assert rows[name] == "running", rows
    finally:
        down = edgeml(home, "down")
    assert "stopped:" in down
    assert pids
    assert not any(session_members(pid) for pid in pids), "processes outlived edgeml down"
    assert set(status_rows(edgeml(home, "status")).values()) == {"stopped"}
    assert not list((home / "run").glob("*.pid"))
