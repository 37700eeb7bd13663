"""Serving on Ray: `edgeml serve` against a default Ray Serve deployment of the same ONNX model.

Target (issue #10), measured in ONE run with the same model, the same load generator (wrk,
8 connections, one row per request) and the same Ray (2 CPUs, started before any timer):

- `edgeml serve` (its own code: channel verified, the agent's validation and answers,
  ``serve.batch``, direct ingress, no access logs) reaches ≥ 10× the requests per second of a
  default Ray Serve deployment: one replica running the ONNX model in a plain ``__call__``
  (``await request.json()``, ``session.run``, a dict back), reached through Ray's HTTP proxy,
  with Ray's default logging (access log on).

Both run one replica. The model is a random forest (100 trees) on simulated pump readings:
five sensors (float64) and the machine id (a category), exported by skl2onnx and published
as a signed bundle on a channel, which `edgeml serve` verifies as a device does.

    .venv/bin/python bench/serve.py [--seconds 10] [--no-write-results]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    describe_machine,
    load_average,
    markdown_table,
    now_utc,
    text_table,
    tool_version,
    verdict,
    write_section,
)

CONNECTIONS = 8
TARGET = 10.0
NUMERIC = ["temperature", "vibration", "pressure", "rpm", "power_kw"]
CATEGORY = "machine_id"
MODEL = "pump-faults"


# ----------------------------------------------------------------------------- the model


def publish_model(root: Path) -> tuple[Path, dict[str, Any]]:
    """Train, export, sign and publish v1 on `stable` under ``root``; the ONNX file and one sample row."""
    import numpy as np
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from edgeml.agent.runtime import ModelRuntime
    from edgeml.bundle.build import publish_bundle
    from edgeml.bundle.keys import export_public, init_keys, load_signer
    from edgeml.bundle.manifest import FileEntry, Golden, InputField, Manifest, Outputs, Reference
    from edgeml.bundle.rollout import publish
    from edgeml.simulate.sensors import SENSORS, SensorSimulation, simulate_sensors
    from edgeml.store.local import LocalStore

    data = simulate_sensors(SensorSimulation(machines=8, readings=2000, seed=1))
    frame = pd.DataFrame({c: data[c] for c in [*NUMERIC, CATEGORY]})
    prepare = ColumnTransformer(
        [("num", "passthrough", NUMERIC), ("cat", OneHotEncoder(handle_unknown="ignore"), [CATEGORY])]
    )
    forest = RandomForestClassifier(n_estimators=100, max_depth=12, random_state=0, n_jobs=1)
    pipeline = make_pipeline(prepare, forest).fit(frame, np.asarray(data["fault"]))
    types = [(c, DoubleTensorType([None, 1])) for c in NUMERIC] + [(CATEGORY, StringTensorType([None, 1]))]
    onx = convert_sklearn(
        pipeline, initial_types=types, options={id(forest): {"zipmap": False}}, target_opset=17
    )
    folder = root / "build"
    folder.mkdir()
    model_file = folder / "model.onnx"
    model_file.write_bytes(onx.SerializeToString())
    inputs = [
        InputField(
            name=c,
            kind="numeric",
            dtype="float64",
            nullable=False,
            min=float(frame[c].min()) - abs(float(frame[c].min())),
            max=float(frame[c].max()) + abs(float(frame[c].max())),
            unit=SENSORS[c],
        )
        for c in NUMERIC
    ] + [
        InputField(
            name=CATEGORY,
            kind="categorical",
            dtype="string",
            values=sorted(frame[CATEGORY].unique().tolist()),
        )
    ]
    records = frame.head(5).to_dict("records")
    now = datetime.now(UTC)
    draft = Manifest(
        model=MODEL,
        version=1,
        profile="x86-64-generic",
        runtime="onnxruntime",
        precision="fp32",
        created=now.isoformat(timespec="seconds"),
        expires=(now + timedelta(days=30)).isoformat(timespec="seconds"),
        files=[
            FileEntry(
                path=model_file.name,
                sha256=hashlib.sha256(model_file.read_bytes()).hexdigest(),
                size=model_file.stat().st_size,
            )
        ],
        inputs=inputs,
        outputs=Outputs(
            task="classification", names=["label", "probabilities"], labels=list(forest.classes_)
        ),
        reference=Reference(rows=0, source="bench", features={}, scores={}),
        golden=Golden(inputs=records, outputs={}, tolerance=1e-5),
        metrics={},
        export={},
        mlflow_run_id="bench",
        snapshot="bench",
        key_id="bench",
    )
    outputs = ModelRuntime(folder, draft).predict_records(records)
    manifest = draft.model_copy(
        update={
            "golden": draft.golden.model_copy(update={"outputs": {k: v.tolist() for k, v in outputs.items()}})
        }
    )
    init_keys(root / "home")
    export_public(root / "home", root / "keyring")
    store = LocalStore(root / "store")
    signer = load_signer(root / "home")
    publish_bundle(store, signer, manifest, folder)
    publish(store, signer, MODEL, 1, "stable")
    row = {k: (float(v) if k in NUMERIC else str(v)) for k, v in records[0].items()}
    return model_file, row


# ----------------------------------------------------------------------------- contenders


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_ray() -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)


def default_deployment(model_file: Path) -> str:
    """Ray Serve as its docs show it: a plain ``__call__``, the HTTP proxy, default logging."""
    import numpy as np
    from ray import serve

    @serve.deployment
    class Plain:
        def __init__(self, path: str) -> None:
            import onnxruntime as ort

            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

        async def __call__(self, request: Any) -> dict[str, Any]:
            row = await request.json()
            feeds = {c: np.array([[row[c]]], dtype=np.float64) for c in NUMERIC}
            feeds[CATEGORY] = np.array([[row[CATEGORY]]], dtype=object)
            label, probabilities = self.session.run(None, feeds)
            return {"label": str(label[0]), "probabilities": probabilities[0].tolist()}

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Plain.bind(str(model_file)), name="plain", route_prefix="/")
    return f"http://127.0.0.1:{port}/"


def edgeml_deployment(root: Path) -> str:
    """`edgeml serve`'s deployment (one replica, as the peer), reached at the replica's own port."""
    from edgeml.bundle.keys import KeyRing
    from edgeml.profiles import get_profile
    from edgeml.serve import ServeConfig, check_channel, deploy, public_keys
    from edgeml.settings import StoreSettings
    from edgeml.spec.models import Serving

    config = ServeConfig(
        model=MODEL,
        channel="stable",
        profile=get_profile("x86-64-generic"),
        store=StoreSettings(url=(root / "store").as_uri()),
        keys=public_keys(KeyRing.from_dir(root / "keyring")),
        state_dir=root / "replicas",
        serving=Serving(min_replicas=1, max_replicas=1),
    )
    check_channel(config)
    deployed = deploy(config, host="127.0.0.1", port=free_port())
    return deployed.replica_urls[0] + "/predict"


# ----------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Load:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(name: str, url: str, body: str, seconds: int, scratch: Path) -> Load:
    """One wrk run: POST ``body`` on CONNECTIONS connections; counts non-2xx answers and socket errors."""
    script = scratch / "post.lua"
    lua_body = body.replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{lua_body}'\nwrk.headers['Content-Type'] = 'application/json'\n",
        encoding="utf-8",
    )
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        return float(match.group(1)) * _UNITS[match.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    assert rate, out
    assert total, out
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
    return Load(name, float(rate.group(1)), latency("50"), latency("99"), int(total.group(1)), errors)


def measure(name: str, url: str, body: str, seconds: int, scratch: Path) -> Load:
    import httpx

    answer = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 200, answer.text
    wrk(name, url, body, 2, scratch)  # warm-up: connections, first batches, JIT of the runtime
    return wrk(name, url, body, seconds, scratch)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per contender (default 10)")
    parser.add_argument("--no-write-results", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (make os-deps does)")

    import ray
    from ray import serve

    machine = describe_machine(
        ("edgeml", "ray", "onnxruntime", "starlette", "uvicorn"), wrk=tool_version(["wrk", "-v"])
    )
    with tempfile.TemporaryDirectory(prefix="edgeml-bench-serve-") as tmp:
        root = Path(tmp)
        model_file, row = publish_model(root)
        body = json.dumps(row)
        load_before = load_average()
        start_ray()
        try:
            peer = measure(
                "default Ray Serve (peer)", default_deployment(model_file), body, args.seconds, root
            )
        finally:
            serve.shutdown()
            ray.shutdown()
        start_ray()
        try:
            ours = measure("edgeml serve", edgeml_deployment(root), body, args.seconds, root)
        finally:
            serve.shutdown()
            ray.shutdown()
        load_after = load_average()

    ratio = ours.requests_per_s / peer.requests_per_s
    headers = ["server", "requests/s", "p50 ms", "p99 ms", "requests", "errors"]
    rows = [
        [
            m.name,
            f"{m.requests_per_s:,.0f}",
            f"{m.p50_ms:.2f}",
            f"{m.p99_ms:.2f}",
            f"{m.requests:,}",
            m.errors,
        ]
        for m in (peer, ours)
    ]
    checks = [
        [
            "edgeml serve vs default Ray Serve, requests/s",
            f"{ratio:.1f}×",
            f"≥ {TARGET:g}×",
            verdict(ratio, TARGET) if ours.errors == peer.errors == 0 else "FAIL (errors)",
        ]
    ]
    check_headers = ["target", "measured", "goal", "result"]
    print("\n".join(machine.lines()))
    print(f"load average before {load_before}, after {load_after}")
    print(text_table(headers, rows))
    print()
    print(text_table(check_headers, checks))
    if not args.no_write_results:
        write_section(
            "serve",
            "\n".join(
                [
                    "## Serving on Ray: `edgeml serve` vs a default Ray Serve deployment (`bench/serve.py`)",
                    "",
                    f"Run {now_utc()}: `.venv/bin/python bench/serve.py {' '.join(sys.argv[1:])}`".replace(
                        " `", "`"
                    ),
                    "",
                    "Machine: "
                    + "; ".join(machine.lines())
                    + f"; load average before {load_before}, after {load_after}.",
                    "",
                    f"Load: wrk, 1 thread, {CONNECTIONS} connections, {args.seconds} s per contender after "
                    "a 2 s warm-up, one row per request (`POST` of the same JSON record). Model: a random "
                    "forest (100 trees, 5 float64 sensors and a category) exported by skl2onnx. Each "
                    "contender runs one replica on its own local Ray (2 CPUs, started before the timer). "
                    "The peer is Ray Serve's default path: HTTP proxy, a plain `__call__` running the ONNX "
                    "session, access log on. `edgeml serve` verifies the signed channel, validates every "
                    "request with the agent's schema code, answers with the agent's protocol code, batches "
                    "with `serve.batch`, and is reached by Ray Serve's direct ingress (the replica's own "
                    "port) with access logs off.",
                    "",
                    markdown_table(headers, rows),
                    "",
                    markdown_table(check_headers, checks),
                ]
            ),
        )


if __name__ == "__main__":
    main()
