"""The Ansible playbook: lint, syntax, and a real run of the central and edge_agent roles into a prefix.

The real run goes against localhost (connection local) with every path under a temporary
``edgeml_prefix``, services rendered but not started (``edgeml_manage_services: false``), edgeml
installed from a wheel of this source tree. A second run must change nothing, and the agent
must start from what the role wrote: the unit's ExecStart, the config, key ring and token.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from agent.conftest import Publisher
from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
EDGEML = str(BIN / "edgeml")


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEML_", "ANSIBLE_"))}
    return clean | {
        "PATH": f"{BIN}:{clean.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }


def run(argv: list[str], cwd: Path = ANSIBLE, timeout: float = 600) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env(), capture_output=True, text=True, check=False, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_ansible_lint_is_clean() -> None:
    out = run([str(BIN / "ansible-lint"), "--offline", "--nocolor"])
    assert "failure" not in out.lower() or "0 failure(s)" in out


def test_the_site_playbook_parses_with_the_example_inventory() -> None:
    run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory/hosts.example.yml", "site.yml"])


@pytest.mark.parametrize(
    ("profile", "extras"),
    [("x86-64-generic", "edge"), ("arm64-rpi4", "edge"), ("intel-nuc-openvino", "edge,openvino")],
)
def test_a_device_gets_the_extras_of_its_firmware_profile_runtime(profile: str, extras: str) -> None:
    out = run(
        [str(BIN / "ansible"), "-i", "localhost,", "localhost", "-c", "local", "-m", "ansible.builtin.debug",
         "-a", "var=edgeml_agent_extras", "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", "@roles/edge_agent/defaults/main.yml", "-e", f"edgeml_agent_profile={profile}",
         "-e", f"edgeml_agent_profiles_dir={ROOT / 'src' / 'edgeml' / 'firmware_profiles'}"],
    )  # fmt: skip
    assert f'"edgeml_agent_extras": "{extras}"' in out, out


@pytest.fixture
def central(tmp_path: Path, publisher: Publisher) -> Iterator[tuple[str, str]]:
    """A running central node (edgeml central init + run): its URL and bootstrap token."""
    port = free_port()
    conf = tmp_path / "central-conf"
    subprocess.run(
        [EDGEML, "--home", str(tmp_path / "home"), "central", "init", "--out", str(conf),
         "--store", publisher.store.url, "--keyring", str(publisher.ring), "--port", str(port)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    log = (tmp_path / "central.log").open("wb")
    proc = subprocess.Popen(
        [EDGEML, "central", "run", "--config", str(conf / "central.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a bound for a hang: a loaded 2-core machine took over 30 s
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "central.log").read_text()
            assert time.monotonic() < deadline, "the central node never answered"
            time.sleep(0.2)
        yield url, (conf / "bootstrap.token").read_text().strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def recap(out: str) -> dict[str, int]:
    line = next(x for x in out.splitlines() if x.startswith("localhost") and "ok=" in x)
    return {k: int(v) for k, v in (part.split("=") for part in line.split()[2:])}


@pytest.mark.slow
def test_central_and_edge_agent_roles_install_idempotently_and_the_agent_starts(
    tmp_path: Path, publisher: Publisher, central: tuple[str, str]
) -> None:
    central_url, bootstrap = central
    publisher.release(1)
    # build from a copy: an in-tree build would leave build/ in the repository
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(source)],
        check=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    wheel = next(wheels.glob("edgeml-*.whl"))

    prefix = tmp_path / "root"
    agent_port = free_port()
    variables = {
        "ansible_python_interpreter": sys.executable,
        "edgeml_python": sys.executable,
        "edgeml_prefix": str(prefix),
        "edgeml_user": "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
        "edgeml_group": "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
        "edgeml_manage_services": False,
        "edgeml_wheel": str(wheel),
        # no byte-compiling of every file in the venvs at install (Python compiles what it imports):
        # 129 s instead of 221 s for one edge venv on the loaded 2-core machine; twice per run
        "edgeml_pip_args": "--no-compile",
        "edgeml_lock": str(ROOT / "requirements.lock"),
        "edgeml_keyring_src": str(publisher.ring),
        "edgeml_admin_token": "admin-token-for-the-test-0123456789",
        "edgeml_bootstrap_token": bootstrap,
        # the central role's venv gets the two packages the central node needs beyond [edge]
        # instead of all of [cluster] (torch, Ray, MLflow: minutes of installing)
        "edgeml_central_extras": "edge",
        "edgeml_central_requirements": ["duckdb", "pyarrow"],
        "edgeml_central_store_url": publisher.store.url,
        "edgeml_agent_store_url": publisher.store.url,
        "edgeml_central_url": central_url,
        "edgeml_agent_model": publisher.model,
        "edgeml_agent_host": "127.0.0.1",
        "edgeml_agent_port": agent_port,
        "edgeml_agent_sync_interval_s": 1,
        "grafana_admin_password": "grafana-test-password",
    }
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "central": {"hosts": {"localhost": {"ansible_connection": "local"}}},
                        "edge": {
                            "hosts": {
                                "dev-7": {
                                    "ansible_connection": "local",
                                    "ansible_host": "127.0.0.1",
                                    "edgeml_agent_group": "line-a",
                                    "edgeml_agent_profile": "x86-64-generic",
                                }
                            }
                        },
                    }
                }
            }
        )
    )
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {"name": "Central node", "hosts": "central", "gather_facts": False,
                 "roles": ["central", "prometheus", "grafana"]},
                {"name": "Edge devices", "hosts": "edge", "gather_facts": False, "roles": ["edge_agent"]},
            ],
            sort_keys=False,
        )
    )  # fmt: skip
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(variables))
    argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), "-e", f"@{extra}"]

    first = recap(run(argv))
    assert first["failed"] == 0
    assert first["changed"] > 0
    second = recap(run(argv))
    assert second["changed"] == 0, second

    etc = prefix / "etc" / "edgeml"
    for secret in (
        etc / "central" / "admin.token",
        etc / "central" / "bootstrap.token",
        etc / "agent" / "device.token",
    ):
        assert secret.stat().st_mode & 0o777 == 0o600, secret
    assert (etc / "agent" / "agent.yaml").stat().st_mode & 0o777 == 0o600
    units = prefix / "etc" / "systemd" / "system"
    assert {p.name for p in units.iterdir()} == {"edgeml-central.service", "edgeml-agent.service"}
    central_config = yaml.safe_load((etc / "central" / "central.yaml").read_text())
    assert central_config["db_path"].startswith(str(prefix))
    run(["promtool", "check", "config", str(prefix / "etc" / "prometheus" / "prometheus.yml")])
    targets = json.loads((prefix / "etc" / "prometheus" / "sd" / "agents.json").read_text())
    assert targets == [
        {
            "targets": ["127.0.0.1:8500"],
            "labels": {"device": "dev-7", "group": "line-a", "profile": "x86-64-generic"},
        }
    ]

    # the agent, exactly as systemd would start it
    unit = (units / "edgeml-agent.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    command = shlex.split(exec_start.removeprefix("ExecStart="))
    assert command[0].startswith(str(prefix))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"serving on http://127.0.0.1:{agent_port}" in line, line + (
            proc.stderr.read() if proc.stderr else ""
        )
        with httpx.Client(base_url=f"http://127.0.0.1:{agent_port}", timeout=5) as client:
            deadline = time.monotonic() + 30
            while client.get("/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline, "the agent never became ready"
                time.sleep(0.2)
            answer = client.post("/predict", json={"a": 1.0, "b": 2.0})
            assert answer.status_code == 200, answer.text
            status = client.get("/agent/status").json()
        assert (status["device_id"], status["group"]) == ("dev-7", "line-a")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "agent stopped" in err
