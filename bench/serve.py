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
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    LOAD_HEADERS,
    describe_machine,
    free_port,
    load_average,
    load_rows,
    markdown_table,
    post_load,
    section_head,
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
        try:  # wrk and Ray share both CPUs: nothing is pinned
            url = default_deployment(model_file)
            peer = post_load(
                "default Ray Serve (peer)", url, body, args.seconds, root, connections=CONNECTIONS
            )
        finally:
            serve.shutdown()
            ray.shutdown()
        start_ray()
        try:
            url = edgeml_deployment(root)
            ours = post_load("edgeml serve", url, body, args.seconds, root, connections=CONNECTIONS)
        finally:
            serve.shutdown()
            ray.shutdown()
        load_after = load_average()

    ratio = ours.requests_per_s / peer.requests_per_s
    headers = LOAD_HEADERS
    rows = load_rows([peer, ours])
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
                    section_head(
                        "Serving on Ray: `edgeml serve` vs a default Ray Serve deployment",
                        "serve.py",
                        machine,
                        load_before,
                        load_after,
                        sys.argv[1:],
                    ),
                    "",
                    f"Load: wrk, 1 thread, {CONNECTIONS} connections, {args.seconds} s per contender after a "
                    "checked request and a 2 s warm-up, one row per request (`POST` of the same JSON record)."
                    " Model: a random forest (100 trees, 5 float64 sensors and a category) exported by "
                    "skl2onnx. Each contender runs one replica on its own local Ray (2 CPUs, started before "
                    "the timer). The peer is Ray Serve's default path: HTTP proxy, a plain `__call__` running"
                    " the ONNX session, access log on. `edgeml serve` verifies the signed channel, validates "
                    "every request with the agent's schema code, answers with the agent's protocol code, "
                    "batches with `serve.batch`, and is reached by Ray Serve's direct ingress (the replica's "
                    "own port) with access logs off.",
                    "",
                    markdown_table(headers, rows),
                    "",
                    markdown_table(check_headers, checks),
                ]
            ),
        )


if __name__ == "__main__":
    main()
