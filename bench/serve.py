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

    .venv/bin/python -m bench.serve [--seconds 10] [--no-write-results]
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    LOAD_HEADERS,
    MACHINE,
    SENSORS,
    Report,
    Table,
    check_listener,
    free_port,
    load_rows,
    need_wrk,
    parser,
    port_of,
    post_load,
    pump_forest,
    smoke_sizes,
    start_ray,
    tool_version,
    verdict,
)

CONNECTIONS = 8
TARGET = 10.0
MODEL = "pump-faults"


# ----------------------------------------------------------------------------- the model


def publish_model(root: Path, trees: int, readings: int) -> tuple[Path, dict[str, Any]]:
    """Train, export, sign and publish v1 on `stable` under ``root``; the ONNX file and one sample row."""
    from bench.common import (
        LocalStore,
        export_public,
        init_keys,
        load_signer,
        publish_bundle,
        publish_channel,
    )

    forest = pump_forest(root / "build", trees, readings)
    init_keys(root / "home")
    export_public(root / "home", root / "keyring")
    store = LocalStore(root / "store")
    signer = load_signer(root / "home")
    publish_bundle(store, signer, forest.manifest, forest.folder)
    publish_channel(store, signer, MODEL, 1, "stable")
    return forest.folder / "model.onnx", forest.row()


# ----------------------------------------------------------------------------- contenders


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
            feeds = {c: np.array([[row[c]]], dtype=np.float64) for c in SENSORS}
            feeds[MACHINE] = np.array([[row[MACHINE]]], dtype=object)
            label, probabilities = self.session.run(None, feeds)
            return {"label": str(label[0]), "probabilities": probabilities[0].tolist()}

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Plain.bind(str(model_file)), name="plain", route_prefix="/")
    check_listener(port, os.getpid(), "Ray Serve proxy")  # Ray's processes are this one's descendants
    return f"http://127.0.0.1:{port}/"


def edgeml_deployment(root: Path) -> str:
    """`edgeml serve`'s deployment (one replica, as the peer), reached at the replica's own port."""
    from bench.common import (
        KeyRing,
        ServeConfig,
        ServingSpec,
        StoreSettings,
        check_channel,
        deploy,
        get_profile,
        public_keys,
    )

    config = ServeConfig(
        model=MODEL,
        channel="stable",
        profile=get_profile("x86-64-generic"),
        store=StoreSettings(url=(root / "store").as_uri()),
        keys=public_keys(KeyRing.from_dir(root / "keyring")),
        state_dir=root / "replicas",
        serving=ServingSpec(min_replicas=1, max_replicas=1),
    )
    check_channel(config)
    deployed = deploy(config, host="127.0.0.1", port=free_port())
    url = deployed.replica_urls[0]
    check_listener(port_of(url), os.getpid(), "edgeml serve replica")
    return url + "/predict"


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--seconds", type=int, default=10, help="wrk duration per contender")
    args = cli.parse_args()
    args.warm_up, args.trees, args.readings = 2, 100, 2000
    smoke_sizes(args, seconds=1, warm_up=0, trees=5, readings=200)
    need_wrk()

    import ray
    from ray import serve

    report = Report(
        "serve",
        "Serving on Ray: `edgeml serve` vs a default Ray Serve deployment",
        args,
        ("edgeml", "ray", "onnxruntime", "starlette", "uvicorn"),
        wrk=tool_version(["wrk", "-v"]),
    )
    with tempfile.TemporaryDirectory(prefix="edgeml-bench-serve-") as tmp:
        root = Path(tmp)
        model_file, row = publish_model(root, args.trees, args.readings)
        body = json.dumps(row)
        measured = {}
        # each contender on its own Ray (wrk and Ray share both CPUs: nothing is pinned); --smoke
        # runs both on one Ray, as its figures claim nothing: one Ray start instead of two
        one_ray = args.smoke
        if one_ray:
            start_ray()
        try:
            for name, deployment in (
                ("default Ray Serve (peer)", lambda: default_deployment(model_file)),
                ("edgeml serve", lambda: edgeml_deployment(root)),
            ):
                if not one_ray:
                    start_ray()
                try:
                    url = deployment()
                    measured[name] = post_load(
                        name, url, body, args.seconds, root, warm_up_s=args.warm_up, connections=CONNECTIONS
                    )
                finally:
                    serve.shutdown()
                    if not one_ray:
                        ray.shutdown()
        finally:
            if one_ray:
                ray.shutdown()
    report.measured()

    peer, ours = measured.values()
    ratio = ours.requests_per_s / peer.requests_per_s
    checks = [
        [
            "edgeml serve vs default Ray Serve, requests/s",
            f"{ratio:.1f}×",
            f"≥ {TARGET:g}×",
            verdict(ratio, TARGET) if ours.errors == peer.errors == 0 else "FAIL (errors)",
        ]
    ]
    report.publish(
        [
            f"Load: wrk, 1 thread, {CONNECTIONS} connections, {args.seconds} s per contender after a "
            f"checked request and a {args.warm_up} s warm-up, one row per request (`POST` of the same "
            f"JSON record). Model: a random forest ({args.trees} trees, 5 float64 sensors and a category) "
            "exported by skl2onnx. Each contender runs one replica on its own local Ray (2 CPUs, "
            "started before the timer). The peer is Ray Serve's default path: HTTP proxy, a plain "
            "`__call__` running the ONNX session, access log on. `edgeml serve` verifies the signed "
            "channel, validates every request with the agent's schema code, answers with the agent's "
            "protocol code, batches with `serve.batch`, and is reached by Ray Serve's direct ingress "
            "(the replica's own port) with access logs off.",
            Table(LOAD_HEADERS, load_rows([peer, ours])),
            report.checks(checks),
        ]
    )


if __name__ == "__main__":
    main()
