"""Serving speed: the edge agent against a minimal Starlette + ONNX Runtime server and MLflow.

Targets (issue #7), measured in ONE run on the same trained model with the same load
generator (wrk, one row per request):

- the agent's throughput is ≥ 0.8× that of a minimal Starlette + ONNX Runtime server
  (parse JSON, build feeds, ``session.run``, answer; no validation, no metrics), and its p99
  latency is ≤ 2× that server's;
- the agent's throughput is ≥ 50× that of ``mlflow models serve`` (``--env-manager local``)
  on the same trained scikit-learn pipeline;
- in-process, the agent's predict path for one row adds ≤ 20% to a bare
  ``InferenceSession.run`` of the same row: schema validation, the model, the answer's JSON,
  and what observes every answer in a running agent (its health watch, its telemetry window,
  the Prometheus metrics). The peer is ONNX Runtime's public ``run`` on a session with the
  agent's options (one thread, no spinning), fed arrays built beforehand.

The model is a random forest (100 trees) on simulated pump readings: five sensors (float64)
and the machine id (a category), exported by skl2onnx, with the reference statistics
``edgeml bundle build`` puts in a manifest (input histograms, score histograms, predicted
labels, calibration), so that telemetry counts as on a device. Each server runs in its own
subprocess pinned to CPU 0 (uvicorn, 1 worker, httptools, no access log; MLflow its own
uvicorn, 1 worker); wrk runs pinned to CPU 1. Agent, minimal server and MLflow take turns
for ``--rounds`` rounds; the median round counts, and the ratios are taken within each round
(same machine state) before their median. In-process, the contenders take turns in blocks of
200 calls for ``--in-process-seconds``; each is timed by its fastest block (timeit's rule:
the slower ones met interference from the shared machine), the median block shown beside.

    .venv/bin/python -m bench.agent_serving [--seconds 10] [--rounds 5] [--in-process-only]
        [--in-process-seconds 30] [--no-write-results]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    LOAD_HEADERS,
    MACHINE,
    SENSORS,
    Forest,
    Load,
    Report,
    Table,
    bench_argv,
    free_port,
    load_rows,
    median_load,
    need_wrk,
    parser,
    post_load,
    pump_forest,
    server_process,
    smoke_sizes,
    tool_version,
    verdict,
)

SERVER_CPU, LOAD_CPU = 0, 1
CONNECTIONS = 8
HEALTH = {"agent": "/v2/health/ready", "minimal": "/ping", "mlflow": "/ping"}
BLOCK = 200  # in-process calls per timed block


# ----------------------------------------------------------------------------- the model


def train(folder: Path, trees: int, readings: int) -> dict[str, Any]:
    """Train the forest, save it for MLflow and as an ONNX bundle folder; one sample row."""
    import mlflow.sklearn
    import sklearn

    from bench.common import canonical_json, trusted_types

    forest = pump_forest(folder / "bundle", trees, readings, reference=reference_statistics)
    # the requirements named, not inferred: MLflow infers them by importing the model in a subprocess
    # (~30 s), and `--env-manager local` serves from this environment anyway
    mlflow.sklearn.save_model(
        forest.pipeline,
        str(folder / "mlflow"),
        skops_trusted_types=trusted_types(forest.pipeline),
        pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
    )
    (forest.folder / "manifest.json").write_bytes(canonical_json(forest.manifest.model_dump(mode="json")))
    return forest.row()


def reference_statistics(forest: Forest) -> Any:
    """Reference statistics as `edgeml bundle build` writes them, so that telemetry counts as on a device.

    (It takes scores and calibration from holdout rows; here the training rows stand in: only
    telemetry's work matters.)
    """
    import numpy as np
    from sklearn.isotonic import IsotonicRegression

    from bench.common import (
        PROBABILITY_EDGES,
        Calibration,
        Reference,
        category_histogram,
        numeric_histogram,
    )

    frame, target = forest.frame, forest.target
    proba = forest.pipeline.predict_proba(frame)
    labels = [str(c) for c in forest.pipeline.classes_]
    grid = [round(0.05 * i, 2) for i in range(21)]
    calibration = {}
    for k, label in enumerate(labels):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(proba[:, k], (target.astype(str) == label).astype(np.float64))
        calibration[label] = [round(float(v), 6) for v in iso.predict(np.array(grid))]
    predicted = np.array(labels)[proba.argmax(axis=1)]
    machines = sorted(frame[MACHINE].unique().tolist())
    return Reference(
        rows=len(frame),
        source="bench: the training rows",
        features={
            **{c: numeric_histogram(frame[c].to_numpy(dtype=np.float64)) for c in SENSORS},
            MACHINE: category_histogram(frame[MACHINE].tolist(), machines),
        },
        scores={
            f"probability:{lb}": numeric_histogram(proba[:, k], PROBABILITY_EDGES)
            for k, lb in enumerate(labels)
        },
        predictions={
            str(lb): int(n) for lb, n in zip(*np.unique(predicted, return_counts=True), strict=True)
        },
        calibration=Calibration(grid=grid, values=calibration),
    )


# ----------------------------------------------------------------------------- servers


def observed(holder: Any) -> Any:
    """The observers ``edgeml agent run`` puts on its holder, with its default telemetry settings."""
    from bench.common import HealthWatch, TelemetryConfig, TelemetryWindow

    settings = TelemetryConfig()
    window = TelemetryWindow("bench-device", window_s=settings.window_s, window_rows=settings.window_rows)
    holder.watch(HealthWatch(), window)
    return window


def serve_agent(folder: Path, port: int) -> None:
    import uvicorn

    from bench.common import LoadedModel, Manifest, ModelHolder, create_app

    manifest = Manifest.model_validate_json((folder / "manifest.json").read_bytes())
    model = LoadedModel(folder, manifest)
    model.warm_up()
    holder = ModelHolder()
    window = observed(holder)  # as the agent runs: every answer is watched and counted

    def collect() -> None:  # the agent's collector: closed windows leave every second
        while True:
            time.sleep(1.0)
            window.collect()

    threading.Thread(target=collect, daemon=True).start()
    holder.swap(model)
    uvicorn.run(create_app(holder), **_uvicorn(port))


def serve_minimal(folder: Path, port: int) -> None:
    """The peer: what one writes in a few lines to put an ONNX model behind Starlette."""
    import numpy as np
    import onnxruntime as ort
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # as the agent's x86-64-generic profile
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    types = {"tensor(double)": np.float64, "tensor(float)": np.float32, "tensor(string)": object}
    inputs = [(i.name, types[i.type]) for i in session.get_inputs()]

    async def predict(request: Request) -> JSONResponse:
        record = await request.json()
        feeds = {name: np.array([[record[name]]], dtype=dtype) for name, dtype in inputs}
        label, proba = session.run(None, feeds)
        return JSONResponse({"label": str(label[0]), "probabilities": proba[0].tolist()})

    async def ping(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ping", ping)])
    uvicorn.run(app, **_uvicorn(port))


def _uvicorn(port: int) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "workers": 1,
        "http": "httptools",
        "access_log": False,
        "log_level": "warning",
    }


@contextmanager
def running(kind: str, folder: Path) -> Iterator[str]:
    """A server subprocess pinned to SERVER_CPU on a free port; its base URL once it answers from there."""
    port = free_port()
    if kind == "mlflow":
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        argv = [mlflow, "models", "serve", "-m", str(folder / "mlflow"), "--env-manager", "local"]
        argv += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    else:
        argv = bench_argv("agent_serving", "--serve", kind, "--folder", str(folder / "bundle"))
        argv += ["--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_TRACKING_URI": f"file:{folder / 'mlruns'}"}
    with server_process(argv, url + HEALTH[kind], cpu=SERVER_CPU, env=env, name=f"{kind} server"):
        yield url  # MLflow's uvicorn worker inherits the CPU pinning


def http_load(case: Case, url: str, body: str, args: argparse.Namespace, scratch: Path) -> Load:
    """wrk POSTing ``body`` to the case's route, pinned to LOAD_CPU, after a checked request and a warm-up."""
    return post_load(
        case.name,
        url + case.path,
        body,
        args.seconds,
        scratch,
        warm_up_s=args.warm_up,
        connections=CONNECTIONS,
        cpu=LOAD_CPU,
    )


@dataclass(frozen=True)
class Case:
    """One measured server case: which server, which request, measured how.

    ``measure`` loads the case's server (wrk POSTing the body over HTTP by default); a case over
    another protocol (gRPC, say) brings its own load generator returning a :class:`Load`.
    """

    name: str
    label: str  # as the tables show it
    server: str  # agent, minimal or mlflow (see :func:`running`)
    path: str
    body: Callable[[dict[str, Any]], str]  # the request, from the sample row
    every_round: bool = True  # in each round (ratios are taken within rounds), or once after them
    measure: Callable[[Case, str, str, argparse.Namespace, Path], Load] = http_load


def record(row: dict[str, Any]) -> str:
    return json.dumps(row)


def oip_v2(row: dict[str, Any]) -> str:
    datatype = {c: "FP64" if c in SENSORS else "BYTES" for c in [*SENSORS, MACHINE]}
    inputs = [{"name": c, "shape": [1, 1], "datatype": t, "data": [row[c]]} for c, t in datatype.items()]
    return json.dumps({"inputs": inputs})


def dataframe_records(row: dict[str, Any]) -> str:
    return json.dumps({"dataframe_records": [row]})


CASES = [
    Case("agent", "edgeml agent, POST /predict", "agent", "/predict", record),
    Case("minimal", "minimal Starlette + ONNX Runtime (peer)", "minimal", "/predict", record),
    Case(
        "mlflow", "mlflow models serve, sklearn pipeline (peer)", "mlflow", "/invocations", dataframe_records
    ),
    Case(
        "agent v2",
        "edgeml agent, OIP v2 infer",
        "agent",
        "/v2/models/pump-faults/infer",
        oip_v2,
        every_round=False,
    ),
]

CASE_SERVER = {c.name: c.server for c in CASES}


def measure_cases(
    cases: list[Case], folder: Path, row: dict[str, Any], args: argparse.Namespace
) -> dict[str, Load]:
    """Each case against a fresh server of its kind."""
    out = {}
    for case in cases:
        with running(case.server, folder) as url:
            out[case.name] = case.measure(case, url, case.body(row), args, folder)
    return out


# ----------------------------------------------------------------------------- in-process


def interleaved(contenders: dict[str, Callable[[], object]], seconds: float) -> dict[str, list[float]]:
    """Seconds per call of each contender, per block of BLOCK calls, the contenders taking turns."""
    for fn in contenders.values():  # warm-up: allocations, caches, the first telemetry batches
        for _ in range(2000):
            fn()
    blocks: dict[str, list[float]] = {name: [] for name in contenders}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(BLOCK):
                fn()
            blocks[name].append((time.perf_counter() - start) / BLOCK)
    return blocks


def in_process(folder: Path, row: dict[str, Any], seconds: float) -> dict[str, list[float]]:
    """Per-block seconds per single-row call: the bare session, the agent's runtime call, the agent."""
    import numpy as np
    import onnxruntime as ort
    import orjson

    from bench.common import AgentServing as Serving
    from bench.common import HealthWatch, LoadedModel, Manifest, ModelHolder

    bundle = folder / "bundle"
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())

    def agent(observers: str) -> Serving:
        model = LoadedModel(bundle, manifest)
        model.warm_up()
        holder = ModelHolder()
        if observers == "all":
            observed(holder)
        else:
            holder.watch(HealthWatch())
        holder.swap(model)
        return Serving(holder)

    serving, health_only = agent("all"), agent("health")
    body = orjson.dumps(row)

    # the bare peer: a session set up as the agent's runtime sets its own, feeds built beforehand
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(bundle / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    feeds = {c: np.array([[row[c]]], dtype=np.float64) for c in SENSORS}
    feeds[MACHINE] = np.array([[row[MACHINE]]], dtype=object)
    runtime = serving.holder.current.runtime  # type: ignore[union-attr]

    answer = serving.predict(body)
    assert answer.status == 200, answer
    assert serving.predict(data=row) == answer == health_only.predict(data=row)
    expected = session.run(None, feeds)[1]
    assert np.array_equal(runtime.run(feeds)["probabilities"], expected)
    return interleaved(
        {
            "bare": lambda: session.run(None, feeds),
            "runtime": lambda: runtime.run(feeds),
            "agent": lambda: serving.predict(data=row),
            "agent bytes": lambda: serving.predict(body),
            "agent health only": lambda: health_only.predict(data=row),
        },
        seconds,
    )


# ----------------------------------------------------------------------------- main


def main() -> None:
    cli = parser(__doc__)
    cli.formatter_class = argparse.RawDescriptionHelpFormatter
    cli.add_argument("--seconds", type=int, default=10, help="wrk duration per run (default 10)")
    cli.add_argument("--rounds", type=int, default=5, help="rounds of the three servers (default 5)")
    cli.add_argument(
        "--in-process-seconds", type=float, default=30, help="in-process timing, all contenders (default 30)"
    )
    cli.add_argument("--in-process-only", action="store_true", help="no servers; prints, writes nothing")
    cli.add_argument("--serve", choices=["agent", "minimal"], help=argparse.SUPPRESS)
    cli.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    cli.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.serve:
        (serve_agent if args.serve == "agent" else serve_minimal)(args.folder, args.port)
        return
    args.warm_up, args.trees, args.readings = 2, 100, 2000
    smoke_sizes(args, seconds=1, rounds=1, in_process_seconds=0.5, warm_up=0, trees=5, readings=200)
    if not args.in_process_only:
        need_wrk()
    report = Report(
        "agent_serving",
        "Edge agent serving: throughput, p99, predict-path overhead",
        args,
        (
            "edgeml",
            "onnxruntime",
            "starlette",
            "uvicorn",
            "httptools",
            "orjson",
            "prometheus-client",
            "mlflow",
            "scikit-learn",
        ),
        wrk=tool_version(["wrk", "--version"]),
    )
    rounds: list[dict[str, Load]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        row = train(folder, args.trees, args.readings)
        blocks = in_process(folder, row, args.in_process_seconds)
        if args.in_process_only:
            report.args.no_write_results = True
            report.publish([Table(*_in_process_table(blocks))])
            return
        for _ in range(args.rounds):  # the servers take turns: each round sees the same machine state
            rounds.append(measure_cases([c for c in CASES if c.every_round], folder, row, args))
        once = measure_cases([c for c in CASES if not c.every_round], folder, row, args)
    report.measured()

    def per_round(kind: str, figure: Callable[[Load], float]) -> list[float]:
        return [figure(r["agent"]) / figure(r[kind]) for r in rounds]

    throughput = per_round("minimal", lambda r: r.requests_per_s)
    p99 = per_round("minimal", lambda r: r.p99_ms)
    over_mlflow = per_round("mlflow", lambda r: r.requests_per_s)
    names = {c.name: c.label for c in CASES}
    medians = {c.name: median_load([r[c.name] for r in rounds]) for c in CASES if c.every_round}
    loads = {**medians, **once}
    rows = load_rows(list(loads.values()), names)
    round_rows = [
        [
            f"{i + 1}",
            *(f"{r[k].requests_per_s:,.0f}" for k in ("agent", "minimal", "mlflow")),
            f"{t:.2f}x",
            f"{m:.1f}x",
            " / ".join(f"{r[k].client_cpu:.0%}" for k in ("agent", "minimal", "mlflow")),
        ]
        for i, (r, t, m) in enumerate(zip(rounds, throughput, over_mlflow, strict=True))
    ]
    round_headers = [
        "round",
        "agent req/s",
        "minimal req/s",
        "mlflow req/s",
        "agent/minimal",
        "agent/mlflow",
        "wrk CPU (agent / minimal / mlflow)",
    ]
    bare_s, agent_s = min(blocks["bare"]), min(blocks["agent"])
    overhead = agent_s / bare_s - 1
    failed = sum(load.errors for name, load in loads.items() if CASE_SERVER[name] == "agent")

    def ratio(values: list[float], unit: str = "×", digits: int = 2) -> str:
        mid = statistics.median(values)
        spread = f" (rounds {min(values):.{digits}f}–{max(values):.{digits}f})" if len(values) > 1 else ""
        return f"{mid:.{digits}f}{unit}{spread}"

    checks = [
        [
            "throughput vs minimal server",
            ratio(throughput),
            "≥ 0.8×",
            verdict(statistics.median(throughput), 0.8),
        ],
        [
            "p99 vs minimal server",
            ratio(p99),
            "≤ 2×",
            verdict(statistics.median(p99), 2.0, higher_is_better=False),
        ],
        [
            "throughput vs mlflow models serve",
            ratio(over_mlflow, digits=1),
            "≥ 50×",
            verdict(statistics.median(over_mlflow), 50),
        ],
        [
            "single-row predict path over bare session.run",
            f"{overhead:+.0%} ({(agent_s - bare_s) * 1e6:+.1f} µs)",
            "≤ +20%",
            verdict(overhead, 0.2, higher_is_better=False),
        ],
        ["agent requests failed", str(failed), "0", "PASS" if failed == 0 else "FAIL"],
    ]
    setup = (
        f"random forest ({args.trees} trees, depth ≤ 12) on {8 * args.readings:,} simulated pump readings, "
        "5 float64 sensors + "
        f"machine id, exported by skl2onnx, reference statistics in the manifest as `bundle build` writes "
        f"them, compliance `none` (so telemetry also keeps a row sample); single-row requests; "
        f"wrk -t1 -c{CONNECTIONS}, {args.seconds} s per run after a checked "
        f"request and a {args.warm_up} s warm-up, pinned to CPU {LOAD_CPU}; each server in its own process "
        "pinned to "
        f"CPU {SERVER_CPU} (uvicorn, 1 worker, httptools, no access log; MLflow its own uvicorn, 1 worker, "
        f"`--env-manager local`, its defaults otherwise); the agent with the observers `edgeml agent run` "
        f"puts on every answer (health watch, telemetry window collected every second, Prometheus "
        f"metrics). Agent, minimal server and MLflow take turns for {args.rounds} rounds: the server table "
        "shows the median round (requests and errors summed), each ratio is the median of the ratios "
        "within a round"
    )
    in_process_note = (
        f"In-process (same process, no HTTP): the contenders take turns in blocks of {BLOCK} calls for "
        f"{args.in_process_seconds:g} s; 'fastest' is the fastest block (timeit's rule: slower blocks met "
        "interference from the shared machine), 'median' the median block. The bare peer is ONNX Runtime's "
        "public `InferenceSession.run(None, feeds)` on a session with the agent's options (1 thread, no "
        "spinning), its feeds built once beforehand. The agent validates the row against the schema "
        "(a check per field generated for the schema, values written into recycled feed buffers), runs "
        "the model through the session's C++ `run` (what the public `run` calls after checks the "
        "schema has already made), writes the answer's JSON (a classifier's one row: a template made "
        "once per model, filled with the label and the probabilities as orjson writes them), and tells "
        "its observers (health watch and telemetry window, as `edgeml agent run` sets them up: the "
        "holder builds one entry and appends it to each observer's queue, a C-level deque append, and "
        "the observers count in bulk) and the Prometheus metrics "
        "(tallied, counted in bulk every 256 answers and before every scrape)"
    )
    proc_headers, proc_rows = _in_process_table(blocks)
    report.publish(
        [
            f"Setup: {setup}.",
            Table(LOAD_HEADERS, rows),
            Table(round_headers, round_rows),
            f"{in_process_note}.",
            Table(proc_headers, proc_rows),
            report.checks(checks),
        ]
    )


def _in_process_table(blocks: dict[str, list[float]]) -> tuple[list[str], list[list[str]]]:
    bare = min(blocks["bare"])
    labels = {
        "bare": "bare InferenceSession.run (peer)",
        "runtime": "the agent's runtime call alone (session's C++ run), same feeds",
        "agent": "agent predict path, decoded JSON → answer JSON: validate → run → answer → health + "
        "telemetry + metrics",
        "agent bytes": "the same, from the request's JSON bytes (adds the JSON decode)",
        "agent health only": "the agent path with the health watch only (no telemetry window)",
    }
    rows = []
    for name, label in labels.items():
        fastest, median = min(blocks[name]), statistics.median(blocks[name])
        over = "" if name == "bare" else f"{fastest / bare - 1:+.0%} ({(fastest - bare) * 1e6:+.1f} µs)"
        rows.append([label, f"{fastest * 1e6:.1f}", f"{median * 1e6:.1f}", over])
    return ["single row, in-process", "µs fastest", "µs median", "over bare (fastest)"], rows


# ----------------------------------------------------------------------------- OIP v2 (issue #27)
#
# Open Inference Protocol v2 against the agent's own /predict, on the model above: one row as
# JSON records (/predict), as OIP v2 JSON, as OIP v2 binary tensors (tritonclient's default
# form) and over gRPC (raw contents, tritonclient's form); then 256 rows per request, JSON
# against binary against gRPC, in rows/s. Every contender is driven by the same load
# generator, h2load (nghttp2-client): HTTP/1.1 for REST (as wrk), HTTP/2 for gRPC, 8
# connections with one request in flight each; p50/p99 from its per-request log. One agent
# process serves REST and gRPC (as `edgeml agent run` with `grpc:`), pinned to SERVER_CPU;
# h2load runs on LOAD_CPU. Contenders take turns within each round; the medians count.
#
# To wire into main() (left to the harness's owner): run `oip_serving(folder, row, seconds,
# rounds)` after train(), print `oip_table(...)`, and add OS_DEPS h2load:nghttp2-client.
# Standalone: .venv/bin/python -c "import sys; sys.path.insert(0, 'bench');
#             import agent_serving as a; a.oip_main()" [--seconds 5] [--rounds 2]

OIP_ROWS = 256
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


def serve_agent_oip(folder: Path, port: int, grpc_port: int) -> None:
    """The agent's HTTP app and gRPC service in one process, as ``edgeml agent run`` with ``grpc:``."""
    import uvicorn

    from edgeml.agent.grpc import GrpcServer
    from edgeml.agent.model import LoadedModel, ModelHolder
    from edgeml.agent.server import create_app
    from edgeml.bundle.manifest import Manifest

    manifest = Manifest.model_validate_json((folder / "manifest.json").read_bytes())
    model = LoadedModel(folder, manifest)
    model.warm_up()
    holder = ModelHolder()
    window = observed(holder)

    def collect() -> None:
        while True:
            time.sleep(1.0)
            window.collect()

    threading.Thread(target=collect, daemon=True).start()
    holder.swap(model)
    app = create_app(holder, max_body_bytes=4 << 20)
    grpc = GrpcServer(app.state.serving, port=grpc_port, max_message_bytes=4 << 20)
    grpc.start()
    try:
        uvicorn.run(app, **_uvicorn(port))
    finally:
        grpc.stop()


def oip_requests(row: dict[str, Any], rows: int) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    """Per contender: (path, body, headers) carrying ``rows`` copies of ``row``."""
    import json

    import numpy as np

    from edgeml.agent import oip
    from edgeml.agent.grpc import grpc_predict_v2_pb2 as pb

    columns = [*NUMERIC, CATEGORY]
    datatype = {c: "FP64" if c in NUMERIC else "BYTES" for c in columns}
    raw = {
        c: oip.tensor_bytes(
            np.array([row[c]] * rows, dtype=np.float64 if c in NUMERIC else object), datatype[c]
        )
        for c in columns
    }
    infer = "/v2/models/pump-faults/infer"
    as_json = {
        "inputs": [
            {"name": c, "shape": [rows, 1], "datatype": datatype[c], "data": [row[c]] * rows} for c in columns
        ]
    }
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": c,
                    "shape": [rows, 1],
                    "datatype": datatype[c],
                    "parameters": {"binary_data_size": len(raw[c])},
                }
                for c in columns
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    message = pb.ModelInferRequest(model_name="pump-faults", raw_input_contents=[raw[c] for c in columns])
    for c in columns:
        message.inputs.add(name=c, datatype=datatype[c], shape=[rows, 1])
    framed = message.SerializeToString()
    grpc_body = b"\0" + len(framed).to_bytes(4, "big") + framed  # gRPC's length-prefixed message
    json_type = {"content-type": "application/json"}
    out = {
        "v2 json": (infer, json.dumps(as_json).encode(), json_type),
        "v2 binary": (
            infer,
            header + b"".join(raw[c] for c in columns),
            {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
        ),
        "grpc": (GRPC_INFER, grpc_body, {"content-type": "application/grpc", "te": "trailers"}),
    }
    if rows == 1:
        out["predict"] = ("/predict", json.dumps(row).encode(), json_type)
    return out


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def h2load(
    name: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    seconds: int,
    scratch: Path,
    *,
    h1: bool,
    server_pid: int | None = None,
) -> tuple[Load, float]:
    """One h2load run: requests/s, p50/p99 from its per-request log; and the server's CPU µs per request.

    The server's CPU time per request does not depend on what else shares its CPU: on a busy
    machine it is the steadier measure of what each protocol costs the server.
    """
    import subprocess

    data, log = scratch / "body.bin", scratch / "h2load.log"
    data.write_bytes(body)
    log.unlink(missing_ok=True)  # h2load appends to its log
    argv = ["taskset", "-c", str(LOAD_CPU), "h2load", "-D", str(seconds), "-c", str(CONNECTIONS), "-m", "1"]
    argv += ["-t", "1", "-d", str(data), "--log-file", str(log), *(["--h1"] if h1 else [])]
    for key, value in headers.items():
        argv += ["-H", f"{key}: {value}"]
    cpu_before = _cpu_seconds(server_pid) if server_pid else 0.0
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    cpu = _cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    entries = [line.split("\t") for line in log.read_text().splitlines() if line]
    durations = sorted(int(e[2]) / 1000 for e in entries)  # µs -> ms
    errors = sum(1 for e in entries if not e[1].startswith("2"))
    failed = re.search(r"(\d+) failed", out)
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    assert rate, out
    assert durations, out
    load = Load(
        name,
        float(rate.group(1)),
        durations[len(durations) // 2],
        durations[min(len(durations) - 1, int(len(durations) * 0.99))],
        len(durations),
        errors + (int(failed.group(1)) if failed else 0),
    )
    return load, cpu / len(durations) * 1e6


def _check_grpc(address: str, body: bytes) -> None:
    """One gRPC call with the load's own message: h2load sees HTTP 200 even for a refused call."""
    import grpc

    from edgeml.agent.grpc import grpc_predict_v2_pb2 as pb
    from edgeml.agent.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(address) as channel:
        response = GRPCInferenceServiceStub(channel).ModelInfer(
            pb.ModelInferRequest.FromString(body[5:]), timeout=30
        )
    assert response.outputs, response


OipRound = dict[str, tuple[Load, float]]  # contender -> (its load, the server's CPU µs per request)


def oip_serving(folder: Path, row: dict[str, Any], seconds: int, rounds: int) -> list[OipRound]:
    """Rounds of every OIP contender (one row, then OIP_ROWS rows) against one agent process."""
    import httpx
    from common import free_port

    port, grpc_port = free_port(), free_port()
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import agent_serving as a; "
        f"a.serve_agent_oip(a.Path({str(folder / 'bundle')!r}), {port}, {grpc_port})"
    )
    contenders = {
        **oip_requests(row, 1),
        **{f"{k} {OIP_ROWS}": v for k, v in oip_requests(row, OIP_ROWS).items()},
    }
    out: list[OipRound] = []
    url = f"http://127.0.0.1:{port}"
    with server_process(
        [sys.executable, "-c", code], url + "/v2/health/ready", cpu=SERVER_CPU, name="agent+grpc"
    ) as server:
        for name, (path, body, headers) in contenders.items():  # each answers 200 before it is timed
            if path == GRPC_INFER:
                _check_grpc(f"127.0.0.1:{grpc_port}", body)
            else:
                answer = httpx.post(url + path, content=body, headers=headers, timeout=30)
                assert answer.status_code == 200, (name, answer.text[:300])
        for _ in range(rounds):
            this: OipRound = {}
            for name, (path, body, headers) in contenders.items():
                grpc = path == GRPC_INFER
                target = f"http://127.0.0.1:{grpc_port if grpc else port}{path}"
                h2load(f"{name} warm-up", target, body, headers, 1, folder, h1=not grpc)
                this[name] = h2load(
                    name, target, body, headers, seconds, folder, h1=not grpc, server_pid=server.pid
                )
            out.append(this)
    return out


def oip_table(rounds: list[OipRound]) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """The loads (median of rounds), and the targets of issue #27 as ratios taken within each round.

    Each target is shown twice: as measured throughput (requests or rows per second), and as
    server capacity (the inverse of the server's CPU per request or row), the steadier figure
    on a shared machine.
    """
    names = list(rounds[0])
    loads = {n: median_load([r[n][0] for r in rounds]) for n in names}
    cpu = {n: statistics.median(r[n][1] for r in rounds) for n in names}
    headers = [
        "contender",
        "requests/s",
        "rows/s",
        "p50 ms",
        "p99 ms",
        "server CPU µs/req",
        "requests",
        "errors",
    ]
    rows = []
    for n in names:
        load = loads[n]
        per = OIP_ROWS if n.endswith(f" {OIP_ROWS}") else 1
        rows.append(
            [
                n,
                f"{load.requests_per_s:,.0f}",
                f"{load.requests_per_s * per:,.0f}",
                f"{load.p50_ms:.2f}",
                f"{load.p99_ms:.2f}",
                f"{cpu[n]:,.0f}",
                f"{load.requests:,}",
                f"{load.errors}",
            ]
        )

    def ratio(a: str, b: str) -> tuple[float, float]:
        throughput = statistics.median(r[a][0].requests_per_s / r[b][0].requests_per_s for r in rounds)
        capacity = statistics.median(r[b][1] / r[a][1] for r in rounds)
        return throughput, capacity

    many = OIP_ROWS
    targets = [
        ("OIP v2 JSON, one row / /predict", ratio("v2 json", "predict"), 0.9),
        ("OIP v2 binary, one row / /predict", ratio("v2 binary", "predict"), 0.9),
        (f"OIP v2 binary / JSON, {many} rows (rows/s)", ratio(f"v2 binary {many}", f"v2 json {many}"), 3.0),
        ("gRPC / REST binary, one row", ratio("grpc", "v2 binary"), 0.9),
        ("gRPC / REST JSON, one row", ratio("grpc", "v2 json"), 0.9),
        (f"gRPC / REST binary, {many} rows", ratio(f"grpc {many}", f"v2 binary {many}"), 0.9),
    ]
    checks = [
        [what, f"{tp:.2f}x", verdict(tp, target), f"{cap:.2f}x", verdict(cap, target), f">= {target:g}x"]
        for what, (tp, cap), target in targets
    ]
    return headers, rows, checks


def oip_main() -> None:
    parser = argparse.ArgumentParser(description="OIP v2 serving speed (issue #27)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        sys.exit("h2load is not installed: apt-get install nghttp2-client")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        row = train(folder)
        rounds = oip_serving(folder, row, args.seconds, args.rounds)
    headers, rows, checks = oip_table(rounds)
    print(text_table(headers, rows))
    print(text_table(["target", "throughput", "verdict", "server capacity", "verdict", "wanted"], checks))


if __name__ == "__main__":
    main()
