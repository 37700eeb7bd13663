"""The demo's second half: a fleet in the field, drift, retraining, a canary and its promotion.

A central node and three agents (each a real process, in its own group and firmware
profile) serve the published model; a gateway sends them simulated readings and, for the
realized accuracy, the true labels. Then one group's sensors drift: the central node's
monitor flags it, posts an alert to a webhook and submits retraining (the same pipeline,
as a job) on the data landed since; the new version goes to that group's canary. The central
node's quality gate compares the canary's realized accuracy with the old model's on that
group; the canary holds through its soak time, the gate promotes it, and every agent moves
to it, with traffic flowing and no failed request.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from edgeml.bundle.keys import KeyRing
from edgeml.bundle.manifest import Manifest
from edgeml.demo.common import DAILY_SWING, DRIFTED_GROUP, FleetOptions, FleetResult
from edgeml.errors import EdgemlError
from edgeml.settings import Settings
from edgeml.simulate.sensors import Drift, SensorSimulation, simulate_sensors, write_csv
from edgeml.simulate.traffic import TrafficResult, readings_to_records, send
from edgeml.store import store_from_settings

__all__ = ["DEVICES", "run_fleet"]

Stage = Callable[[str], AbstractContextManager[Callable[[str], None]]]

#: (device id, group, firmware profile)
DEVICES = (
    ("pump-gw-a", "line-a", "x86-64-generic"),
    ("pump-gw-b", "line-b", "arm64-rpi4"),
    ("pump-gw-c", "line-c", "x86-64-generic"),
)

#: the drift injected into that group: a sensor fault on the temperature line and worn mounts
DRIFT = (Drift("temperature", "offset", 15.0, start=0.0), Drift("vibration", "scale", 1.8, start=0.0))


class _Webhook:
    """A local alert receiver (what Alertmanager or a chat hook would be in production)."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Process:
    """A child edgeml process with its log in ``run/``."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own executable
                [str(Path(sys.executable).with_name("edgeml")), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ | env,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait(what: str, check: Callable[[], bool], timeout: float, poll: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    raise EdgemlError(f"the demo fleet timed out waiting for {what}")


def _readings(group: str, seed: int, options: FleetOptions, drift: tuple[Drift, ...] = ()) -> Any:
    """A group's pumps on a later day than training; pump numbers by group (line-b: pump-100, ...)."""
    line = "abcdefghij".index(group[-1]) if group[-1] in "abcdefghij" else 9
    sim = SensorSimulation(
        machines=options.machines,
        readings=options.readings,
        seed=seed,
        drift=drift,
        daily_swing=DAILY_SWING,
        start=datetime(2026, 1, 6 + seed % 20, tzinfo=UTC),
    )
    columns = simulate_sensors(sim)
    rename = {f"pump-{i:03d}": f"pump-{100 * line + i:03d}" for i in range(options.machines)}
    columns["machine_id"] = np.array([rename[m] for m in columns["machine_id"]])
    columns["msg_id"] = np.array([f"{group}-{seed}-{m}" for m in columns["msg_id"]])
    return columns


@contextmanager
def _fleet(
    settings: Settings, result: FleetResult, spec_path: Path, webhook: _Webhook
) -> Iterator[dict[str, httpx.Client]]:
    """Central node + agents up for the duration; every child stopped at the end."""
    from edgeml.central.run import init_central

    run = settings.home / "run"
    central_dir = run / "central"
    port = _free_port()
    files = init_central(
        central_dir, store_url=settings.store_url, keyring=None, keys_home=settings.home, port=port
    )
    config = yaml.safe_load(files.config.read_text())
    # lines of pumps differ by their fault episodes up to JS ~0.2 on temperature in this simulator;
    # the demo's operator sets the effect size an alarm needs above that
    config["monitor"] = {"interval_s": 2, "window_s": 120, "min_rows": 150, "min_js": 0.3}
    # NannyML on the row samples (50 per agent window), often enough to see the drift within the demo
    config["monitor"]["nannyml"] = {"interval_s": 5, "min_rows": 100}
    config["alerts"] = {"webhook_url": webhook.url}
    config["retrain"] = {"spec": str(spec_path), "home": str(settings.home)}
    # the central node judges the canary itself and signs what it decides with the appliance's key
    config["gate"] = {"enabled": True, "keys_home": str(settings.home)}
    files.config.write_text(yaml.safe_dump(config))
    env = {"EDGEML_HOME": str(settings.home)}
    children = [_Process(["central", "run", "--config", str(files.config)], run / "central.log", env)]
    result.central_url = f"http://127.0.0.1:{port}"
    clients: dict[str, httpx.Client] = {}
    try:
        central = httpx.Client(base_url=result.central_url, timeout=10)
        clients["central"] = central
        _wait("the central node", lambda: central.get("/readyz").status_code == 200, 60)
        bootstrap = files.bootstrap_token.read_text().strip()
        keyring = central_dir / "keyring"
        for device, group, profile in DEVICES:
            answer = central.post(
                "/v1/devices",
                json={"device_id": device, "group": group, "profile": profile, "model": "pump-faults"},
                headers={"Authorization": f"Bearer {bootstrap}"},
            )
            answer.raise_for_status()
            token_file = run / device / "device.token"
            token_file.parent.mkdir(parents=True, exist_ok=True)
            token_file.write_text(answer.json()["token"])
            token_file.chmod(0o600)
            agent_port = _free_port()
            agent_config = {
                "device_id": device,
                "group": group,
                "profile": profile,
                "model": "pump-faults",
                "store": {"url": settings.store_url},
                "keyring": str(keyring),
                "state_dir": str(run / device / "state"),
                "http": {"host": "127.0.0.1", "port": agent_port},
                "sync": {"interval_s": 1, "health_window_s": 3},
                "central": {"url": result.central_url, "token_file": str(token_file)},
                "telemetry": {"window_s": 2},
            }
            path = run / device / "agent.yaml"
            path.write_text(yaml.safe_dump(agent_config))
            children.append(
                _Process(["agent", "run", "--config", str(path)], run / device / "agent.log", env)
            )
            url = f"http://127.0.0.1:{agent_port}"
            result.agents[device] = url
            clients[device] = httpx.Client(base_url=url, timeout=10)
        for device in result.agents:
            client = clients[device]
            _wait(f"{device} to serve", lambda c=client: c.get("/v2/health/ready").status_code == 200, 60)  # type: ignore[misc]
        yield clients
    finally:
        for client in clients.values():
            client.close()
        for child in reversed(children):
            child.stop()


def _version(client: httpx.Client) -> int | None:
    status = client.get("/agent/status").json()
    return None if status["on_probation"] else status["version"]


def _gateway(
    clients: dict[str, httpx.Client],
    manifest: Manifest,
    central: httpx.Client,
    admin: str,
    group_data: dict[str, Any],
    result: FleetResult,
    phase: str,
) -> None:
    """Send each group's readings to its device and the true labels to the central node."""
    devices = {group: device for device, group, _ in DEVICES}
    for group, columns in group_data.items():
        device = devices[group]
        records = readings_to_records(columns, manifest)
        traffic = send(clients[device], records, list(columns["fault"]))
        result.traffic[f"{phase}/{group}"] = traffic
        result.failed_requests += len(traffic.failures)
        # each label names the prediction it judges by the id the agent answered with, so the
        # central node joins it with the row the agent logged: training gets labelled rows
        labels = [
            {
                "prediction_id": pid,
                "label": truth,
                "predicted": predicted,
                "model": "pump-faults",
                "version": version,
                "device_id": device,
            }
            for pid, (predicted, truth), version in zip(
                traffic.prediction_ids, traffic.pairs, traffic.pair_versions, strict=True
            )
        ]
        for start in range(0, len(labels), 5000):
            central.post(
                "/v1/feedback",
                json={"labels": labels[start : start + 5000]},
                headers={"Authorization": f"Bearer {admin}"},
            ).raise_for_status()


def _accuracy(traffic: TrafficResult) -> float:
    return sum(p == t for p, t in traffic.pairs) / max(1, len(traffic.pairs))


class _Loop:
    """The closed loop, one method per stage, sharing the fleet's clients."""

    def __init__(
        self, settings: Settings, clients: dict[str, httpx.Client], result: FleetResult, options: FleetOptions
    ) -> None:
        from edgeml.bundle.verify import verify_manifest

        self.settings, self.clients, self.result, self.options = settings, clients, result, options
        self.store = store_from_settings(settings)
        self.central = clients["central"]
        self.admin = (settings.home / "run" / "central" / "admin.token").read_text().strip()
        key = json.loads(self.store.get("channels/pump-faults/stable.json"))["manifests"]["x86-64-generic"][
            "key"
        ]
        ring = KeyRing.from_dir(settings.home / "run" / "central" / "keyring")
        self.manifest = verify_manifest(self.store.get(key), self.store.get(key + ".sig"), ring)
        self.device = next(d for d, g, _ in DEVICES if g == DRIFTED_GROUP)
        self.alerted = datetime.now(UTC)  # when the drift alert came (detection sets it)

    def traffic(self, groups: dict[str, Any], phase: str) -> None:
        _gateway(self.clients, self.manifest, self.central, self.admin, groups, self.result, phase)

    def normal(self) -> str:
        self.traffic(
            {group: _readings(group, 100 + i, self.options) for i, (_, group, _) in enumerate(DEVICES)},
            "normal",
        )
        rows = sum(t.rows for k, t in self.result.traffic.items() if k.startswith("normal/"))
        _wait("telemetry to reach the central node", lambda: _telemetry_rows(self.central) >= rows, 60)
        return (
            f"{rows:,} readings predicted by {len(DEVICES)} agents; their telemetry reached the central node"
        )

    def drift(self) -> str:
        drifted = _readings(DRIFTED_GROUP, 200, self.options, DRIFT)
        # the plant historian exports these readings too: retraining learns from them
        buffer = io.StringIO()
        write_csv(drifted, buffer)
        self.store.put(
            f"landing/pumps/{DRIFTED_GROUP}-drift.csv", buffer.getvalue().encode(), content_type="text/csv"
        )
        self.traffic({DRIFTED_GROUP: drifted}, "drift")
        accuracy = self.result.accuracy["v1 on drifted readings"] = _accuracy(
            self.result.traffic[f"drift/{DRIFTED_GROUP}"]
        )
        return f"{DRIFTED_GROUP}: temperature +15 degC, vibration x1.8; v1's accuracy there {accuracy:.1%}"

    def detection(self, webhook: _Webhook) -> str:
        def drift_alert() -> bool:
            return any(
                a.get("status") == "firing" and a.get("group") == DRIFTED_GROUP and a.get("feature")
                for a in webhook.received
            )

        _wait("a drift alert", drift_alert, 120)
        self.result.alerts = list(webhook.received)
        self.result.drifted_features = sorted(
            {a["feature"] for a in webhook.received if a.get("group") == DRIFTED_GROUP and a.get("feature")}
        )
        self.result.drift_rounds.append(self.central.get("/v1/drift").json())
        self.alerted = datetime.now(UTC)
        return f"alert for {DRIFTED_GROUP}: {', '.join(self.result.drifted_features)}"

    def nannyml(self) -> str:
        """What NannyML made of the drifted group's row samples, on its first pass after the alert."""
        found: list[dict[str, Any]] = []

        def ran() -> bool:
            view = _nannyml_view(self.central, DRIFTED_GROUP)
            if view is not None and datetime.fromisoformat(view["at"]) > self.alerted:
                found.append(view)
            return bool(found)

        _wait(f"NannyML on {DRIFTED_GROUP}", ran, 60)
        return _describe_nannyml(found[0])

    def retraining(self) -> str:
        from edgeml.central.retrain import current_retraining

        canary_key = "channels/pump-faults/canary.json"

        def done() -> bool:
            if self.store.exists(canary_key):
                return True
            job = current_retraining("pump-faults", self.settings)
            if job is not None and job.state in ("failed", "stopped", "lost"):
                tail = Path(job.log).read_text().strip().splitlines()[-1] if job.log else ""
                raise EdgemlError(f"the retraining job {job.job_id} {job.state}: {tail}")
            return False

        _wait("the retraining job to publish a canary", done, self.options.timeout_s, 1.0)
        canary = json.loads(self.store.get(canary_key))
        self.result.new_version = int(canary["version"])
        groups = ", ".join(canary["groups"])
        return f"v{self.result.new_version} trained, gated, published to canary for {groups}"

    def canary(self) -> str:
        version = self.result.new_version
        _wait(f"{self.device} on v{version}", lambda: _version(self.clients[self.device]) == version, 120)
        self.traffic({DRIFTED_GROUP: _readings(DRIFTED_GROUP, 201, self.options, DRIFT)}, "canary")
        accuracy = self.result.accuracy[f"v{version} on drifted readings"] = _accuracy(
            self.result.traffic[f"canary/{DRIFTED_GROUP}"]
        )
        return f"{self.device} serves v{version}: accuracy {accuracy:.1%} on fresh drifted readings"

    def promotion(self) -> str:
        """The central node's quality gate decides; the demo only watches it act."""
        version = self.result.new_version

        def decided() -> bool:
            return bool(self.central.get("/v1/rollouts").json()["actions"])

        _wait("the central node's quality gate to decide", decided, 180)
        self.result.gate = decision = self.central.get("/v1/rollouts").json()["actions"][-1]
        if decision["action"] != "promote":
            return f"quality gate: {decision['reason']}: rolled back, not promoted"
        self.result.promoted = True
        for device in self.result.agents:
            _wait(f"{device} on v{version}", lambda d=device: _version(self.clients[d]) == version, 120)  # type: ignore[misc]
        # line-b's new conditions persist: v2 was trained for them, and judges them by line-b's own reference
        self.traffic(
            {
                g: _readings(g, 300 + i, self.options, DRIFT if g == DRIFTED_GROUP else ())
                for i, (_, g, _) in enumerate(DEVICES)
            },
            "after",
        )
        return f"quality gate: {decision['reason']}: promoted; every agent on v{version}; " + self.baseline()

    def baseline(self) -> str:
        """Where the drifted group's inputs are under the new version, once a round has judged it."""
        from edgeml.demo.report import back_to_baseline

        version = self.result.new_version
        rounds: list[dict[str, Any]] = []

        def judged() -> bool:
            view = self.central.get("/v1/drift").json()
            latest = [s for s in view["latest"] if s["group"] == DRIFTED_GROUP and s["version"] == version]
            rounds[:] = [view]
            return bool(latest)

        _wait(f"a drift round on {DRIFTED_GROUP}'s v{version}", judged, 60)
        said = back_to_baseline(rounds[0]["history"], DRIFTED_GROUP)
        back = sum(s.endswith("back in band") for s in said)
        return f"{DRIFTED_GROUP} on v{version}: {back} of {len(said)} drifted inputs back in band"


def run_fleet(
    settings: Settings, spec_path: Path, stage: Stage, options: FleetOptions | None = None
) -> FleetResult:
    """Stages 3 to 5 of the demo; see the module docstring."""
    options = options or FleetOptions()
    result = FleetResult()
    began = time.monotonic()
    webhook = _Webhook()
    try:
        with _fleet(settings, result, spec_path, webhook) as clients:
            loop = _Loop(settings, clients, result, options)
            steps: list[tuple[str, Callable[[], str]]] = [
                ("sending the fleet normal traffic", loop.normal),
                (f"injecting drift into {DRIFTED_GROUP}'s sensors", loop.drift),
                ("waiting for the central node to detect it and alert", lambda: loop.detection(webhook)),
                (f"NannyML on {DRIFTED_GROUP}'s row samples", loop.nannyml),
                (
                    "retraining on the data landed since (a pipeline job), canary for the drifted group",
                    loop.retraining,
                ),
                (f"{DRIFTED_GROUP} moves to the canary under traffic", loop.canary),
                ("the central node's quality gate: canary vs champion through the soak", loop.promotion),
            ]
            result.timeline.append((0.0, f"central node and {len(DEVICES)} agents serving v1"))
            for description, step in steps:
                with stage(description) as say:
                    outcome = step()
                    say(outcome)
                result.timeline.append((time.monotonic() - began, outcome))
                if outcome.endswith("not promoted"):
                    break
            result.versions = {d: _version(clients[d]) or 0 for d in result.agents}
            result.drift_rounds.append(clients["central"].get("/v1/drift").json())
            if options.keep_running:
                with stage(f"fleet page {result.central_url}/ — Ctrl-C stops the fleet") as say:
                    agents = ", ".join(result.agents.values())
                    say(f"fleet page {result.central_url}/ ; agents {agents}; Ctrl-C stops")
                    with contextlib.suppress(KeyboardInterrupt):
                        threading.Event().wait()
    finally:
        webhook.close()
    return result


def _telemetry_rows(central: httpx.Client) -> int:
    """Rows the central node has accepted telemetry for (its own counter on /metrics)."""
    total = 0.0
    for line in central.get("/metrics").text.splitlines():
        if line.startswith("edgeml_central_telemetry_rows_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _nannyml_view(central: httpx.Client, group: str) -> dict[str, Any] | None:
    """The group's last NannyML pass as /v1/drift shows it; None before the first."""
    latest = central.get("/v1/drift").json()["latest"]
    return next((s["nannyml"] for s in latest if s["group"] == group and s["nannyml"]), None)


def _describe_nannyml(view: dict[str, Any]) -> str:
    if view["rows"] is None:
        return f"NannyML on {DRIFTED_GROUP}: {view['reason']}"
    drifted = ", ".join(view["drift_alerts"]) or "nothing"
    text = f"NannyML on {view['rows']} sampled rows of {DRIFTED_GROUP}: drift in {drifted}"
    if p := view["performance"]:
        text += f"; {p['estimator']} estimates {p['metric']} {p['value']:.3f}" + (
            " (alert)" if p["alert"] else ""
        )
    return text
