"""A running ``edgeml agent run`` serving the faults classifier over REST and gRPC, for OIP client tests."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from edgeml.agent.config import AgentConfig
from edgeml.agent.runtime import ModelRuntime
from edgeml.bundle.build import publish_bundle
from edgeml.bundle.keys import export_public, init_keys, load_signer
from edgeml.bundle.manifest import Manifest
from edgeml.bundle.rollout import publish as publish_channel
from edgeml.store.local import LocalStore

from .classifier import faults_classifier


@dataclass
class RunningAgent:
    proc: subprocess.Popen[str]
    http: str  # host:port
    grpc: str  # host:port
    manifest: Manifest
    runtime: ModelRuntime  # the bundle's model, run here: what answers must equal

    def metrics(self) -> str:
        return httpx.get(f"http://{self.http}/metrics", timeout=5).text

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_agent(tmp: Path, *, max_body_bytes: int = 1 << 20) -> RunningAgent:
    """Publish the classifier as a signed bundle on a local store; run an agent that follows it."""
    home, ring = tmp / "publisher", tmp / "keyring"
    init_keys(home)
    export_public(home, ring)
    signer = load_signer(home)
    store = LocalStore(tmp / "store")
    build = tmp / "build"
    manifest = faults_classifier(build)
    publish_bundle(store, signer, manifest, build)
    publish_channel(store, signer, "faults", manifest.version, "stable")
    config = AgentConfig.model_validate(
        {
            "device_id": "oip-1",
            "profile": "x86-64-generic",
            "model": "faults",
            "store": {"url": store.url},
            "keyring": str(ring),
            "state_dir": str(tmp / "device"),
            "sync": {"interval_s": 0.2, "health_window_s": 0},
            "http": {"port": 0, "max_body_bytes": max_body_bytes},
            "grpc": {"port": 0, "max_message_bytes": max_body_bytes},
        }
    )
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
    log = tmp / "agent.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("edgeml")), "agent", "run", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving on" not in line:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the agent did not start: {line}{log.read_text()}")
    http = line.split("serving on http://")[1].strip()
    found = re.search(r"gRPC serving on (\S+)", log.read_text())  # logged before the HTTP line
    assert found, log.read_text()
    agent = RunningAgent(proc, http, found.group(1), manifest, ModelRuntime(build, manifest))
    deadline = time.monotonic() + 30
    while httpx.get(f"http://{http}/v2/health/ready", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
            agent.stop()
            raise AssertionError(f"the agent never loaded the bundle: {log.read_text()}")
        time.sleep(0.1)
    return agent
