"""``edgeml up`` / ``down`` / ``status``: the single-node appliance as background processes.

What runs, each from the binaries next to this Python (the venv) or on ``PATH``:

- a local Ray head (``ray start --head --block``) bound to 127.0.0.1: drivers connect with
  ``RAY_ADDRESS=127.0.0.1:<port>``, Ray clients at ``ray://127.0.0.1:<port + 1>``;
- the MLflow server on the SQLite file ``edgeml train`` already uses (``$EDGEML_HOME/mlflow.db``);
- the central node (``edgeml central run``), with a config written by ``edgeml central init``
  into ``$EDGEML_HOME/central`` on first start;
- Prometheus with the appliance's scrape jobs and alert rules, when ``prometheus`` is installed;
- MinIO on ``$EDGEML_HOME/run/minio/data``, when ``minio`` is installed.

Each process starts in a session of its own, with its log in ``$EDGEML_HOME/run/<name>.log``
and a pid file ``$EDGEML_HOME/run/<name>.pid`` (JSON: pid, the process' start time, URL), so
``down`` signals only the processes ``up`` started — a recycled pid is recognised and left
alone — and every child they spawned (Ray's raylet and workers stay in the session).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgeml.errors import UserError
from edgeml.settings import Settings

__all__ = ["DEFAULT_PORTS", "Ports", "ServiceState", "Started", "down", "status", "up"]

#: the ports each service listens on unless told otherwise
DEFAULT_PORTS = {"ray": 6379, "mlflow": 5000, "central": 8080, "prometheus": 9090, "minio": 9000}
#: the order services start in (and are listed in); they stop in reverse
ORDER = ("ray", "mlflow", "central", "prometheus", "minio")


@dataclass(frozen=True)
class Ports:
    ray: int = DEFAULT_PORTS["ray"]
    mlflow: int = DEFAULT_PORTS["mlflow"]
    central: int = DEFAULT_PORTS["central"]
    prometheus: int = DEFAULT_PORTS["prometheus"]
    minio: int = DEFAULT_PORTS["minio"]


@dataclass(frozen=True)
class _Service:
    name: str
    argv: list[str]
    url: str  # what the user connects to
    probe: str  # an http:// URL answering 2xx when ready, or tcp://host:port
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 60.0


@dataclass(frozen=True)
class Started:
    name: str
    url: str
    pid: int
    already_running: bool


@dataclass(frozen=True)
class ServiceState:
    name: str
    state: str  # running, not answering, stopped
    pid: int | None
    url: str | None


def _run_dir(settings: Settings) -> Path:
    return settings.home / "run"


def _bin(name: str) -> str | None:
    """An executable next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    return shutil.which(name)


def _ray_temp_dir(settings: Settings) -> Path:
    # Ray's unix socket paths must stay under ~107 bytes: a short folder per appliance home.
    digest = hashlib.sha256(str(settings.home.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"edgeml-ray-{digest}"  # noqa: S108 (a fixed, per-home name is the point)


def appliance_dir() -> Path | None:
    """The repository's ``appliance/`` folder (Prometheus jobs and rules), in a source checkout."""
    candidate = Path(__file__).resolve().parents[3] / "appliance"
    return candidate if (candidate / "prometheus.yml").is_file() else None


def _prometheus_config(settings: Settings, ports: Ports, appliance: Path) -> Path:
    """appliance/prometheus.yml with this appliance's addresses, ports and files."""
    from edgeml.ops.prometheus_sd import write_sd_file

    run = _run_dir(settings) / "prometheus"
    run.mkdir(parents=True, exist_ok=True)
    agents = run / "agents.json"
    if not agents.exists():
        write_sd_file([], agents)
    config = yaml.safe_load((appliance / "prometheus.yml").read_text(encoding="utf-8"))
    config["rule_files"] = [str((appliance / f).resolve()) for f in config.get("rule_files", [])]
    files = {
        "edgeml-agents": [str(agents)],
        "ray": [str(_ray_temp_dir(settings) / "prom_metrics_service_discovery.json")],
    }
    targets = {"edgeml-central": f"127.0.0.1:{ports.central}", "prometheus": f"127.0.0.1:{ports.prometheus}"}
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name in files:
            job["file_sd_configs"][0]["files"] = files[name]
        if name in targets:
            job["static_configs"][0]["targets"] = [targets[name]]
    path = run / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _central_config(settings: Settings, port: int) -> Path:
    from edgeml.central.run import init_central

    folder = settings.home / "central"
    config = folder / "central.yaml"
    if not config.exists():
        init_central(folder, store_url=settings.store_url, keyring=None, keys_home=settings.home, port=port)
        # the central node keeps the Prometheus this command starts told where the agents are
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        data["prometheus_sd"] = {"file": str(_run_dir(settings) / "prometheus" / "agents.json")}
        config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return config


def _minio_credentials(run: Path) -> dict[str, str]:
    """MinIO's root user and password for this appliance, made once, kept 0600."""
    path = run / "minio" / "credentials.json"
    if path.exists():
        return dict(json.loads(path.read_text(encoding="utf-8")))
    path.parent.mkdir(parents=True, exist_ok=True)
    creds = {"MINIO_ROOT_USER": "edgeml", "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(24)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(creds, out)
    return creds


def _services(settings: Settings, ports: Ports) -> tuple[list[_Service], list[str]]:
    """What to start, and a note for each optional part that is not installed."""
    run = _run_dir(settings)
    services: list[_Service] = []
    notes: list[str] = []
    ray, mlflow, edgeml = _bin("ray"), _bin("mlflow"), _bin("edgeml")
    if ray is None or mlflow is None or edgeml is None:
        raise UserError(
            "edgeml up needs ray, mlflow and edgeml next to this Python",
            hint="install the cluster extra: pip install 'edgeml[cluster]'",
        )
    services.append(
        _Service(
            "ray",
            [
                ray,
                "start",
                "--head",
                "--block",
                "--port",
                str(ports.ray),
                "--node-ip-address",
                "127.0.0.1",
                # the dashboard writes the metrics service-discovery file Prometheus reads
                "--include-dashboard=true",
                "--dashboard-host",
                "127.0.0.1",
                # fixed defaults (10001, 52365, 8265) would collide with another Ray on the machine
                "--ray-client-server-port",
                str(ports.ray + 1),
                "--dashboard-agent-listen-port",
                str(ports.ray + 2),
                "--dashboard-port",
                str(ports.ray + 3),
                "--temp-dir",
                str(_ray_temp_dir(settings)),
                "--disable-usage-stats",
            ],
            f"127.0.0.1:{ports.ray}",
            f"tcp://127.0.0.1:{ports.ray}",
            env={"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},  # nothing to drain on SIGTERM
            timeout_s=120.0,
        )
    )
    artifacts = settings.home / "mlartifacts"
    services.append(
        _Service(
            "mlflow",
            [
                mlflow,
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports.mlflow),
                "--backend-store-uri",
                f"sqlite:///{(settings.home / 'mlflow.db').resolve()}",
                "--artifacts-destination",
                artifacts.resolve().as_uri(),
                "--workers",
                "1",
            ],
            f"http://127.0.0.1:{ports.mlflow}",
            f"http://127.0.0.1:{ports.mlflow}/health",
            timeout_s=120.0,
        )
    )
    central = _central_config(settings, ports.central)
    services.append(
        _Service(
            "central",
            [
                edgeml,
                "central",
                "run",
                "--config",
                str(central),
                "--host",
                "127.0.0.1",
                "--port",
                str(ports.central),
            ],
            f"http://127.0.0.1:{ports.central}",
            f"http://127.0.0.1:{ports.central}/healthz",
        )
    )
    prometheus, appliance = _bin("prometheus"), appliance_dir()
    if prometheus is None:
        notes.append("prometheus: not installed (apt-get install prometheus), not started")
    elif appliance is None:
        notes.append("prometheus: the appliance/ folder (a source checkout) was not found, not started")
    else:
        services.append(
            _Service(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={_prometheus_config(settings, ports, appliance)}",
                    f"--storage.tsdb.path={run / 'prometheus' / 'data'}",
                    f"--web.listen-address=127.0.0.1:{ports.prometheus}",
                ],
                f"http://127.0.0.1:{ports.prometheus}",
                f"http://127.0.0.1:{ports.prometheus}/-/ready",
            )
        )
    minio = _bin("minio")
    if minio is None:
        notes.append("minio: not installed, not started (the store stays the local folder)")
    else:
        services.append(
            _Service(
                "minio",
                [
                    minio,
                    "server",
                    "--address",
                    f"127.0.0.1:{ports.minio}",
                    "--console-address",
                    f"127.0.0.1:{ports.minio + 1}",
                    str(run / "minio" / "data"),
                ],
                f"http://127.0.0.1:{ports.minio}",
                f"http://127.0.0.1:{ports.minio}/minio/health/live",
                env=_minio_credentials(run),
            )
        )
    return services, notes


# --- processes ---------------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """The process' start time in clock ticks since boot (tells a recycled pid apart), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":  # a zombie has finished: only its exit status is left
        return None
    return int(fields[19])


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@dataclass(frozen=True)
class _PidFile:
    path: Path
    pid: int
    start_time: int
    url: str
    probe: str

    @classmethod
    def read(cls, path: Path) -> _PidFile | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, int(data["pid"]), int(data["start_time"]), str(data["url"]), str(data["probe"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start_time

    def write(self) -> None:
        payload = {"pid": self.pid, "start_time": self.start_time, "url": self.url, "probe": self.probe}
        self.path.write_text(json.dumps(payload) + "\n", encoding="utf-8")


def _answers(probe: str, timeout: float = 2.0) -> bool:
    if probe.startswith("tcp://"):
        host, port = probe.removeprefix("tcp://").rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except OSError:
            return False
        return True
    import urllib.error
    import urllib.request  # here: `edgeml --help` should not pay for http.client

    try:
        with urllib.request.urlopen(probe, timeout=timeout) as response:  # noqa: S310 (our own http URL)
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _spawn(service: _Service, run: Path) -> _PidFile:
    log_path = run / f"{service.name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 (argv built here from installed binaries)
            service.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **service.env},
            start_new_session=True,  # its own session: down ends it and everything it spawned
            cwd=run,
        )
    start = _start_time(proc.pid)
    pid_file = _PidFile(run / f"{service.name}.pid", proc.pid, start or 0, service.url, service.probe)
    pid_file.write()
    return pid_file


def _stop(pid_file: _PidFile, timeout: float = 60.0) -> None:
    """SIGTERM the session's leader, wait, then SIGKILL whatever is left of its session."""
    if pid_file.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid_file.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_file.alive():
            time.sleep(0.2)
    # children (Ray's raylet, workers; uvicorn's) shut down with their parent; give them a moment
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _session_members(pid_file.pid):
        time.sleep(0.2)
    for pid in _session_members(pid_file.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pid_file.path.unlink(missing_ok=True)


def up(
    settings: Settings, ports: Ports = Ports(), on_ready: Callable[[Started], None] | None = None
) -> tuple[list[Started], list[str]]:
    """Start every service not yet running and wait until each answers; return them and the notes.

    A service that does not come up stops the ones this call started, and its log tail is the
    error message.
    """
    run = _run_dir(settings)
    run.mkdir(parents=True, exist_ok=True)
    services, notes = _services(settings, ports)
    launched: list[tuple[_Service, _PidFile]] = []
    results: list[Started] = []
    for service in services:
        existing = _PidFile.read(run / f"{service.name}.pid")
        if existing is not None and existing.alive():
            results.append(Started(service.name, existing.url, existing.pid, already_running=True))
            continue
        launched.append((service, _spawn(service, run)))
    for service, pid_file in launched:
        deadline = time.monotonic() + service.timeout_s
        while not _answers(service.probe):
            if not pid_file.alive() or time.monotonic() > deadline:
                for _, begun in reversed(launched):
                    _stop(begun)
                log = run / f"{service.name}.log"
                raise UserError(
                    f"{service.name} did not come up; the end of {log}:\n{_tail(log)}",
                    hint=f"is port {service.url.rsplit(':', 1)[-1]} free? pick others with edgeml up --help",
                )
            time.sleep(0.25)
        started = Started(service.name, service.url, pid_file.pid, already_running=False)
        results.append(started)
        if on_ready is not None:
            on_ready(started)
    results.sort(key=lambda s: ORDER.index(s.name))
    return results, notes


def status(settings: Settings) -> list[ServiceState]:
    """Each known service: running (and answering), not answering, or stopped."""
    run = _run_dir(settings)
    states = []
    for name in ORDER:
        pid_file = _PidFile.read(run / f"{name}.pid")
        if pid_file is None or not pid_file.alive():
            states.append(ServiceState(name, "stopped", None, None))
            continue
        state = "running" if _answers(pid_file.probe) else "not answering"
        states.append(ServiceState(name, state, pid_file.pid, pid_file.url))
    return states


def down(settings: Settings) -> list[str]:
    """Stop every service ``up`` started (newest first); return the names stopped."""
    run = _run_dir(settings)
    stopped = []
    for name in reversed(ORDER):
        pid_file = _PidFile.read(run / f"{name}.pid")
        if pid_file is None:
            continue
        if pid_file.alive() or _session_members(pid_file.pid):
            stopped.append(name)
        _stop(pid_file)
    shutil.rmtree(_ray_temp_dir(settings), ignore_errors=True)
    return stopped
