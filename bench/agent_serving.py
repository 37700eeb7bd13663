"""Serving speed: the edge agent against a minimal Starlette + ONNX Runtime server and MLflow; its protocols.

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
- each trick of the agent's fast path (``edgeml.agent.fastpath``, issue #28) is worth ≥ 5% of
  that single-row path: the path with the trick alone switched off, against every trick on,
  in the same interleaved blocks (serving thread CPU time). The in-process figures come from a
  child process that imports what the agent imports (this one holds MLflow and scikit-learn).

And the Open Inference Protocol v2 against the agent's own ``/predict`` (issue #27), all on
one agent process serving REST and gRPC, all driven by h2load (HTTP/1.1 for REST, HTTP/2 for
gRPC), in the same rounds:

- OIP v2 infer, JSON and binary tensors, one row: ≥ 0.9× the throughput of ``/predict``;
- OIP v2 binary, 256 rows per request: ≥ 3× the rows/s of OIP v2 JSON with 256 rows;
- gRPC ``ModelInfer``, one row (and 256 rows): ≥ 0.9× REST's throughput; beside it, the floor
  peer's gRPC / REST ratio (both stacks answering a fixed answer, no model): what grpcio allows.

Each of these is also shown as server capacity: the inverse of the server's CPU time per
request, which does not depend on what else shares its CPU.

The model is a random forest (100 trees) on simulated pump readings: five sensors (float64)
and the machine id (a category), exported by skl2onnx, with the reference statistics
``edgeml bundle build`` puts in a manifest (input histograms, score histograms, predicted
labels, calibration), so that telemetry counts as on a device. Each server runs in its own
subprocess pinned to CPU 0 (uvicorn, 1 worker, httptools, no access log; MLflow its own
uvicorn, 1 worker); wrk and h2load run pinned to CPU 1. Agent, minimal server, MLflow and
the OIP contenders (the cases of ``CASES``) take turns for ``--rounds`` rounds; the median
round counts, and the ratios are taken within each round (same machine state) before their
median (10 cases of 2 + 10 s by default: about 2 minutes of load per round). In-process, the
contenders take turns in blocks of 200 calls for ``--in-process-seconds``; each is timed by
its fastest block (timeit's rule: the slower ones met interference from the shared machine),
the median block shown beside.

    .venv/bin/python -m bench.agent_serving [--seconds 10] [--rounds 5] [--in-process-only] [--oip-only]
        [--in-process-seconds 30] [--no-write-results]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
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
    check_listener,
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
    tree_cpu_s,
    verdict,
)

SERVER_CPU, LOAD_CPU = 0, 1
CONNECTIONS = 8
AGENT_GRPC = "agent+grpc"  # the agent serving REST and gRPC in one process, as with `grpc:` in agent.yaml
AGENT_LOGISTIC = "agent+grpc logistic"  # the same, serving the logistic regression (see train)
#: the protocol stacks alone, as the agent runs them (uvicorn + Starlette for REST, grpcio beside it in
#: one process), answering a fixed answer: what grpcio itself allows against REST (see serve_floor)
FLOOR = "floor"
FLOOR_AIO = "floor aio"  # the same with grpcio's asyncio server instead of its thread-pool server
HEALTH = {
    FLOOR: "/v2/health/ready",
    FLOOR_AIO: "/v2/health/ready",
    "agent": "/v2/health/ready",
    AGENT_GRPC: "/v2/health/ready",
    AGENT_LOGISTIC: "/v2/health/ready",
    "minimal": "/ping",
    "mlflow": "/ping",
}
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
    # a model that costs little to run beside its requests' wire forms (issue #27's 256-row ratio)
    logistic = pump_forest(folder / "bundle-logistic", trees, readings, logistic=True)
    manifest = logistic.manifest.model_dump(mode="json")
    (logistic.folder / "manifest.json").write_bytes(canonical_json(manifest))
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


def serve_agent(folder: Path, port: int, grpc_port: int = 0) -> None:
    """The agent's HTTP app; with ``grpc_port`` its gRPC service too (``edgeml agent run`` with ``grpc:``)."""
    import uvicorn

    from bench.common import GrpcServer, LoadedModel, Manifest, ModelHolder, create_app

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
    app = create_app(holder)  # the agent's defaults: 1 MiB bodies, 1,024 rows
    grpc = GrpcServer(app.state.serving, port=grpc_port) if grpc_port else None
    if grpc is not None:
        grpc.start()
    try:
        uvicorn.run(app, **_uvicorn(port))
    finally:
        if grpc is not None:
            grpc.stop()


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


def serve_floor(port: int, grpc_port: int, *, aio: bool) -> None:
    """The floor peer: OIP v2 infer over REST and gRPC answered with a fixed answer, nothing else.

    REST: uvicorn + Starlette as the agent runs them, the body read, a fixed JSON answer. gRPC:
    the generated servicer (``add_GRPCInferenceServiceServicer_to_server``) on grpcio with the
    agent's options (4 threads, or with ``aio`` grpcio's asyncio server on its own event loop),
    the request parsed by the generated message, a fixed ``ModelInferResponse`` answered. No
    model, no validation: the ratio of the two is what the protocol stacks allow.
    """
    import asyncio
    from concurrent import futures

    import grpc
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from bench.common import (
        GRPCInferenceServiceServicer,
        ModelInferResponse,
        add_GRPCInferenceServiceServicer_to_server,
    )

    label, proba = b"ok", [0.5, 0.5]
    answer = ModelInferResponse(model_name=MODEL, model_version="1")
    answer.outputs.add(name="label", datatype="BYTES", shape=[1])
    answer.outputs.add(name="probabilities", datatype="FP32", shape=[1, 2])
    answer.raw_output_contents.extend(
        [len(label).to_bytes(4, "little") + label, b"".join(struct.pack("<f", p) for p in proba)]
    )
    outputs = [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": [label.decode()]},
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": proba},
    ]
    rest_answer = json.dumps({"model_name": MODEL, "model_version": "1", "outputs": outputs}).encode()
    options = [("grpc.max_receive_message_length", 1 << 20), ("grpc.so_reuseport", 0)]

    class Fixed(GRPCInferenceServiceServicer):  # type: ignore[misc]
        def ModelInfer(self, request: Any, context: Any) -> Any:  # the protocol names the RPCs
            return answer

    class FixedAio(GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            return answer

    bound = threading.Event()
    if aio:

        async def serve_aio() -> None:
            server = grpc.aio.server(options=options)
            add_GRPCInferenceServiceServicer_to_server(FixedAio(), server)
            server.add_insecure_port(f"127.0.0.1:{grpc_port}")
            await server.start()
            bound.set()
            await server.wait_for_termination()

        threading.Thread(target=asyncio.run, args=(serve_aio(),), daemon=True).start()
    else:
        sync = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        add_GRPCInferenceServiceServicer_to_server(Fixed(), sync)
        sync.add_insecure_port(f"127.0.0.1:{grpc_port}")
        sync.start()
        bound.set()
    bound.wait(60)

    async def infer(request: Request) -> Response:
        await request.body()
        return Response(rest_answer, media_type="application/json")

    async def ready(_: Request) -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    routes = [Route(INFER, infer, methods=["POST"]), Route("/v2/health/ready", ready)]
    uvicorn.run(Starlette(routes=routes), **_uvicorn(port))


def _uvicorn(port: int) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "workers": 1,
        "http": "httptools",
        "access_log": False,
        "log_level": "warning",
    }


@dataclass(frozen=True)
class Server:
    """A server under test, checked to be the process started: its HTTP base URL, its gRPC address."""

    url: str
    pid: int
    grpc: str = ""  # host:port of its gRPC service, when it has one


@contextmanager
def running(kind: str, folder: Path) -> Iterator[Server]:
    """A server subprocess pinned to SERVER_CPU on free ports, once it answers from them."""
    port = free_port()
    grpc_port = 0
    while kind in (AGENT_GRPC, AGENT_LOGISTIC, FLOOR, FLOOR_AIO) and grpc_port in (0, port):
        grpc_port = free_port()
    if kind == "mlflow":
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        argv = [mlflow, "models", "serve", "-m", str(folder / "mlflow"), "--env-manager", "local"]
        argv += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    else:
        bundle = folder / ("bundle-logistic" if kind == AGENT_LOGISTIC else "bundle")
        argv = bench_argv("agent_serving", "--serve", kind, "--folder", str(bundle))
        argv += ["--port", str(port), *(["--grpc-port", str(grpc_port)] if grpc_port else [])]
    url = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_TRACKING_URI": f"file:{folder / 'mlruns'}"}
    name = f"{kind} server"  # MLflow's uvicorn worker inherits the CPU pinning
    # MLflow imports its whole stack on one pinned CPU first: minutes on a busy machine
    start_s = 300 if kind == "mlflow" else 120
    with server_process(
        argv, url + HEALTH[kind], cpu=SERVER_CPU, env=env, name=name, timeout_s=start_s
    ) as proc:
        if grpc_port:  # bound before the HTTP port answers: it must be ours too
            check_listener(grpc_port, proc.pid, f"{name} (gRPC)")
        yield Server(url, proc.pid, f"127.0.0.1:{grpc_port}" if grpc_port else "")


JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Payload:
    """One request's body and headers, as the load generator sends it over and over."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=lambda: JSON)


def http_load(case: Case, server: Server, payload: Payload, args: argparse.Namespace, scratch: Path) -> Load:
    """wrk POSTing the JSON body to the case's route, pinned to LOAD_CPU, after a check and a warm-up."""
    if dict(payload.headers) != JSON:
        raise ValueError(f"{case.name}: the wrk load posts JSON only; measure this case with h2load")
    return post_load(
        case.name,
        server.url + case.path,
        payload.body.decode(),
        args.seconds,
        scratch,
        warm_up_s=args.warm_up,
        connections=CONNECTIONS,
        cpu=LOAD_CPU,
    )


def rest_h2load(
    case: Case, server: Server, payload: Payload, args: argparse.Namespace, scratch: Path
) -> Load:
    """h2load over HTTP/1.1 (as wrk) after one checked request and a warm-up; the server's CPU beside."""
    import httpx

    url = server.url + case.path
    answer = httpx.post(url, content=payload.body, headers=dict(payload.headers), timeout=60)
    if answer.status_code != 200:
        raise RuntimeError(f"{case.name}: {url} answered {answer.status_code}: {answer.text[:500]}")
    if case.path == INFER:  # every row answered (binary data, when asked, follows the JSON head)
        length = answer.headers.get("inference-header-content-length")
        head = json.loads(answer.content[: int(length)] if length else answer.content)
        shapes = {o["name"]: o["shape"][0] for o in head["outputs"]}
        if shapes != {"label": case.rows, "probabilities": case.rows}:
            raise RuntimeError(f"{case.name}: {url} answered {shapes} rows per output, not {case.rows}")
    return _h2load_runs(case, url, payload, args, scratch, server.pid, h1=True)


def grpc_h2load(
    case: Case, server: Server, payload: Payload, args: argparse.Namespace, scratch: Path
) -> Load:
    """h2load over HTTP/2 sending the gRPC call's frame, after one call by a gRPC client that must succeed.

    (h2load sees HTTP 200 even for a refused call: the gRPC status travels in the trailers.)
    """
    import grpc

    from bench.common import GRPCInferenceServiceStub, ModelInferRequest

    with grpc.insecure_channel(server.grpc) as channel:
        call = GRPCInferenceServiceStub(channel).ModelInfer
        try:
            answer = call(ModelInferRequest.FromString(payload.body[5:]), timeout=60)
        except grpc.RpcError as exc:
            raise RuntimeError(f"{case.name}: {server.grpc} refused the call: {exc}") from exc
    if [o.name for o in answer.outputs] != ["label", "probabilities"]:
        raise RuntimeError(f"{case.name}: {server.grpc} answered without the model's outputs: {answer}")
    return _h2load_runs(
        case, f"http://{server.grpc}{case.path}", payload, args, scratch, server.pid, h1=False
    )


def _h2load_runs(
    case: Case, url: str, payload: Payload, args: argparse.Namespace, scratch: Path, pid: int, *, h1: bool
) -> Load:
    if args.warm_up:
        h2load(f"{case.name} warm-up", url, payload, args.warm_up, scratch, h1=h1, server_pid=pid)
    return h2load(case.name, url, payload, args.seconds, scratch, h1=h1, server_pid=pid)


def h2load(
    name: str, url: str, payload: Payload, seconds: int, scratch: Path, *, h1: bool, server_pid: int
) -> Load:
    """One h2load run pinned to LOAD_CPU: requests/s, p50/p99 from its per-request log, the server's CPU.

    CONNECTIONS connections, one request in flight on each (as wrk). The server's CPU time per
    request (its process tree, from /proc, around the run) does not depend on what else shares
    its CPU: on a busy machine it is the steadier measure of what each protocol costs the server.
    """
    data, log = scratch / "h2load.body", scratch / "h2load.log"
    data.write_bytes(payload.body)
    log.unlink(missing_ok=True)  # h2load appends to its log
    argv = ["taskset", "-c", str(LOAD_CPU), "h2load", "-D", str(seconds), "-c", str(CONNECTIONS), "-m", "1"]
    argv += ["-t", "1", "-d", str(data), "--log-file", str(log), *(["--h1"] if h1 else [])]
    for key, value in payload.headers.items():
        argv += ["-H", f"{key}: {value}"]
    cpu_before, usage = tree_cpu_s(server_pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    server_cpu = tree_cpu_s(server_pid) - cpu_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
    entries = [line.split("\t") for line in log.read_text(encoding="utf-8").splitlines() if line]
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if rate is None or failed is None or not entries:
        raise RuntimeError(f"{name}: h2load measured nothing against {url}:\n{out[-2000:]}")
    durations = sorted(int(e[2]) / 1000 for e in entries)  # µs -> ms
    errors = sum(1 for e in entries if not e[1].startswith("2")) + sum(int(g) for g in failed.groups())
    return Load(
        name,
        float(rate.group(1)),
        durations[len(durations) // 2],
        durations[min(len(durations) - 1, int(len(durations) * 0.99))],
        len(durations),
        errors,
        client_cpu / seconds,
        server_cpu / len(durations) * 1e6,
    )


@dataclass(frozen=True)
class Case:
    """One measured case: which server, which request, measured how.

    ``measure`` loads the case's server: wrk POSTing JSON by default, h2load for the OIP
    contenders (REST over HTTP/1.1, gRPC over HTTP/2). Consecutive cases of one server kind
    take turns on one server process.
    """

    name: str
    label: str  # as the tables show it
    server: str  # agent, minimal, mlflow or agent+grpc (see :func:`running`)
    path: str
    payload: Callable[[dict[str, Any]], Payload]  # the request, from the sample row
    rows: int = 1  # rows per request
    measure: Callable[[Case, Server, Payload, argparse.Namespace, Path], Load] = http_load


def record(row: dict[str, Any]) -> Payload:
    return Payload(json.dumps(row).encode())


def dataframe_records(row: dict[str, Any]) -> Payload:
    return Payload(json.dumps({"dataframe_records": [row]}).encode())


def _tensors(row: dict[str, Any], rows: int) -> dict[str, tuple[str, list[Any], bytes]]:
    """Per input: its OIP datatype, ``rows`` copies of the row's value, and those as binary tensor data."""
    import numpy as np

    from bench.common import tensor_bytes

    out = {}
    for c in [*SENSORS, MACHINE]:
        kind, dtype = ("FP64", np.float64) if c in SENSORS else ("BYTES", object)
        values = [row[c]] * rows
        out[c] = (kind, values, tensor_bytes(np.array(values, dtype=dtype), kind))
    return out


def oip_json(row: dict[str, Any], rows: int = 1) -> Payload:
    inputs = [
        {"name": c, "shape": [rows, 1], "datatype": kind, "data": values}
        for c, (kind, values, _) in _tensors(row, rows).items()
    ]
    return Payload(json.dumps({"inputs": inputs}).encode())


def oip_binary(row: dict[str, Any], rows: int = 1) -> Payload:
    """The binary tensor extension, as tritonclient sends by default: a JSON header, then the raw tensors."""
    tensors = _tensors(row, rows)
    inputs = [
        {"name": c, "shape": [rows, 1], "datatype": kind, "parameters": {"binary_data_size": len(raw)}}
        for c, (kind, _, raw) in tensors.items()
    ]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    return Payload(header + b"".join(raw for _, _, raw in tensors.values()), headers)


def oip_grpc(row: dict[str, Any], rows: int = 1) -> Payload:
    """``ModelInfer`` with raw input contents (tritonclient's form), framed as gRPC sends it over HTTP/2."""
    from bench.common import ModelInferRequest

    tensors = _tensors(row, rows)
    message = ModelInferRequest(model_name=MODEL, raw_input_contents=[raw for _, _, raw in tensors.values()])
    for c, (kind, _, _) in tensors.items():
        message.inputs.add(name=c, datatype=kind, shape=[rows, 1])
    framed = message.SerializeToString()
    body = b"\0" + len(framed).to_bytes(4, "big") + framed  # uncompressed, length-prefixed
    return Payload(body, {"content-type": "application/grpc", "te": "trailers"})


MODEL = "pump-faults"
INFER = f"/v2/models/{MODEL}/infer"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
OIP_ROWS = 256

SERVER_CASES = [
    Case("agent", "edgeml agent, POST /predict", "agent", "/predict", record),
    Case("minimal", "minimal Starlette + ONNX Runtime (peer)", "minimal", "/predict", record),
    Case(
        "mlflow", "mlflow models serve, sklearn pipeline (peer)", "mlflow", "/invocations", dataframe_records
    ),
]


def _oip_cases() -> list[Case]:
    out = [Case("predict", "POST /predict, JSON record", AGENT_GRPC, "/predict", record, measure=rest_h2load)]
    for rows in (1, OIP_ROWS):
        suffix, many = ("", "one row") if rows == 1 else (f" {rows}", f"{rows} rows")
        out += [
            Case(
                f"v2 json{suffix}",
                f"OIP v2 infer, JSON, {many}",
                AGENT_GRPC,
                INFER,
                partial(oip_json, rows=rows),
                rows,
                rest_h2load,
            ),
            Case(
                f"v2 binary{suffix}",
                f"OIP v2 infer, binary tensors, {many}",
                AGENT_GRPC,
                INFER,
                partial(oip_binary, rows=rows),
                rows,
                rest_h2load,
            ),
            Case(
                f"grpc{suffix}",
                f"OIP v2 gRPC ModelInfer, {many}",
                AGENT_GRPC,
                GRPC_INFER,
                partial(oip_grpc, rows=rows),
                rows,
                grpc_h2load,
            ),
        ]
    return out


def _logistic_cases() -> list[Case]:
    """JSON and binary, OIP_ROWS rows, on the logistic regression: what the wire forms cost apart."""
    return [
        Case(
            f"v2 {form} {OIP_ROWS} logistic",
            f"OIP v2 infer, {label}, {OIP_ROWS} rows, logistic regression",
            AGENT_LOGISTIC,
            INFER,
            partial(payload, rows=OIP_ROWS),
            OIP_ROWS,
            rest_h2load,
        )
        for form, label, payload in (("json", "JSON", oip_json), ("binary", "binary tensors", oip_binary))
    ]


def _floor_cases() -> list[Case]:
    """The floor peer (see serve_floor): REST and gRPC with a fixed answer, the agent's one-row requests."""
    return [
        Case("floor rest", "floor: REST, fixed answer (peer)", FLOOR, INFER, oip_binary, 1, rest_h2load),
        Case(
            "floor grpc",
            "floor: gRPC, grpcio thread-pool server, fixed answer (peer)",
            FLOOR,
            GRPC_INFER,
            oip_grpc,
            1,
            grpc_h2load,
        ),
        Case(
            "floor grpc aio",
            "floor: gRPC, grpcio asyncio server, fixed answer (peer)",
            FLOOR_AIO,
            GRPC_INFER,
            oip_grpc,
            1,
            grpc_h2load,
        ),
    ]


#: issue #27: the protocols against /predict, on one agent process, all by h2load; then the
#: 256-row wire forms again on a second process serving a model that costs little to run; then
#: what the protocol stacks alone allow (the floor peer)
OIP_CASES = [*_oip_cases(), *_logistic_cases(), *_floor_cases()]
CASES = [*SERVER_CASES, *OIP_CASES]
CASE_SERVER = {c.name: c.server for c in CASES}


def measure_cases(
    cases: list[Case], folder: Path, row: dict[str, Any], args: argparse.Namespace
) -> dict[str, Load]:
    """Each case, in order; consecutive cases of one server kind against one fresh server of that kind."""
    out = {}
    for kind, group in itertools.groupby(cases, key=lambda c: c.server):
        with running(kind, folder) as server:
            for case in group:
                out[case.name] = case.measure(case, server, case.payload(row), args, folder)
    return out


# ----------------------------------------------------------------------------- in-process


def interleaved(contenders: dict[str, Callable[[], object]], seconds: float) -> dict[str, list[float]]:
    """Seconds per call of each contender, per block of BLOCK calls, the contenders taking turns.

    Wall time under each contender's name; under ``NAME cpu``, the calling thread's CPU time,
    which time spent waiting for a CPU held by other jobs on the machine does not inflate.
    """
    for fn in contenders.values():  # warm-up: allocations, caches, the first telemetry batches
        for _ in range(2000):
            fn()
    blocks: dict[str, list[float]] = {key: [] for name in contenders for key in (name, f"{name} cpu")}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, fn in contenders.items():
            start, cpu = time.perf_counter(), time.thread_time()
            for _ in range(BLOCK):
                fn()
            blocks[f"{name} cpu"].append((time.thread_time() - cpu) / BLOCK)
            blocks[name].append((time.perf_counter() - start) / BLOCK)
    return blocks


def in_process(folder: Path, row: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The in-process figures, measured in a fresh process that imports what the agent imports.

    (This process holds MLflow and scikit-learn: a heap several times the agent's, which would
    overstate what the garbage collector costs.)
    """
    (folder / "row.json").write_text(json.dumps(row))
    argv = bench_argv("agent_serving", "--in-process-child", "--folder", str(folder))
    argv += ["--in-process-seconds", str(seconds)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the in-process measurement failed:\n{out.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return figures


#: the fast path's tricks, each measured by switching it off alone
TRICKS = ("session_run", "row_parser")


def in_process_child(folder: Path, seconds: float) -> None:
    """Per-block seconds per single-row call of each contender, and the GC phases; JSON on stdout.

    The bare session, the agent's runtime call, the agent's path (with every fast-path trick,
    with none, and with each switched off alone), from decoded JSON and from bytes.
    """
    import numpy as np
    import onnxruntime as ort
    import orjson

    from bench.common import AgentServing as Serving
    from bench.common import FastPathSwitches, HealthWatch, LoadedModel, Manifest, ModelHolder, switched

    row = json.loads((folder / "row.json").read_text())
    bundle = folder / "bundle"
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    versions = itertools.count(manifest.version)
    windows = []

    def agent(observers: str = "all", **switches: bool) -> Serving:
        # a version of its own: metrics are kept per model version, and built with its switches
        with switched(**switches):
            model = LoadedModel(bundle, manifest.model_copy(update={"version": next(versions)}))
            model.warm_up()
            holder = ModelHolder()
            if observers == "all":
                windows.append(observed(holder))
            else:
                holder.watch(HealthWatch())
            holder.swap(model)
            serving = Serving(holder)
            assert serving.predict(data=row).status == 200  # its schema and metrics, built here
        return serving

    def collect() -> None:  # as the agent's collector: closed windows leave every second
        while True:
            time.sleep(1.0)
            for window in windows:
                window.collect()

    threading.Thread(target=collect, daemon=True).start()
    plain = dict.fromkeys(FastPathSwitches.names(), False)
    serving, health_only, bare_agent = agent(), agent("health"), agent(**plain)
    without = {trick: agent(**{trick: False}) for trick in TRICKS}
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
    predictions = orjson.loads(answer.body)["predictions"]
    for other in (health_only, bare_agent, *without.values()):  # the same answer, whatever the path
        assert orjson.loads(other.predict(body).body)["predictions"] == predictions
    expected = session.run(None, feeds)[1]
    assert np.array_equal(runtime.run(feeds)["probabilities"], expected)
    # what any work between two runs costs the run: the bare run with an L1 data cache's worth
    # (32 KiB, one byte per 64-byte line) of other memory read after it, and that read alone
    elsewhere = np.zeros(32 << 10, dtype=np.uint8)[::64]
    contenders: dict[str, Callable[[], object]] = {
        "bare": lambda: session.run(None, feeds),
        "bare then 32 KiB": lambda: (session.run(None, feeds), elsewhere.sum()),
        "32 KiB alone": elsewhere.sum,
        "runtime": lambda: runtime.run(feeds),
        "agent": lambda: serving.predict(data=row),
        "agent bytes": lambda: serving.predict(body),
        "agent health only": lambda: health_only.predict(data=row),
        "agent plain": lambda: bare_agent.predict(data=row),
    }
    for trick, other in without.items():
        contenders[f"without {trick}"] = partial(other.predict, data=row)
    blocks = interleaved(contenders, seconds)
    print(json.dumps({"blocks": blocks, "rows": many_rows(serving, row, seconds, session)}))


def many_rows(serving: Any, row: dict[str, Any], seconds: float, session: Any) -> dict[str, float]:
    """Serving thread CPU seconds per OIP_ROWS-row request, in-process: JSON, binary, the model alone.

    The model's own run bounds what any wire form can gain: binary / JSON rows/s is at most
    (JSON request) / (model run). ``session`` is the bare peer's: its public ``run`` on the same
    rows, feeds built beforehand, is the ceiling any server of this model has.
    """
    runtime = serving.holder.current.runtime
    json_body = oip_json(row, OIP_ROWS)
    binary = oip_binary(row, OIP_ROWS)
    length = binary.headers["inference-header-content-length"]
    feeds = runtime.feeds({c: [row[c]] * OIP_ROWS for c in row})
    calls: dict[str, Callable[[], object]] = {
        "bare": lambda: session.run(None, feeds),
        "model": lambda: runtime.run(feeds),
        "json": lambda: serving.infer(MODEL, None, json_body.body),
        "binary": lambda: serving.infer(MODEL, None, binary.body, header_length=length),
    }
    for name in ("json", "binary"):
        answer = calls[name]()
        assert answer.status == 200, answer  # type: ignore[attr-defined]
    best = dict.fromkeys(calls, math.inf)
    deadline = time.monotonic() + max(1.0, seconds / 4)
    while time.monotonic() < deadline:
        for name, fn in calls.items():
            cpu = time.thread_time()
            for _ in range(5):
                fn()
            best[name] = min(best[name], (time.thread_time() - cpu) / 5)
    return best


# ----------------------------------------------------------------------------- main


def main() -> None:
    cli = parser(__doc__)
    cli.formatter_class = argparse.RawDescriptionHelpFormatter
    cli.add_argument("--seconds", type=int, default=10, help="wrk or h2load duration per run (default 10)")
    cli.add_argument("--rounds", type=int, default=5, help="rounds of every server case (default 5)")
    cli.add_argument(
        "--in-process-seconds", type=float, default=30, help="in-process timing, all contenders (default 30)"
    )
    cli.add_argument("--in-process-only", action="store_true", help="no servers; prints, writes nothing")
    cli.add_argument(
        "--oip-only",
        action="store_true",
        help="only the OIP v2 contenders (issue #27), no in-process part; prints, writes nothing",
    )
    cli.add_argument("--in-process-child", action="store_true", help=argparse.SUPPRESS)
    cli.add_argument(
        "--serve",
        choices=["agent", AGENT_GRPC, AGENT_LOGISTIC, "minimal", FLOOR, FLOOR_AIO],
        help=argparse.SUPPRESS,
    )
    cli.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    cli.add_argument("--port", type=int, help=argparse.SUPPRESS)
    cli.add_argument("--grpc-port", type=int, default=0, help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.in_process_child:
        in_process_child(args.folder, args.in_process_seconds)
        return
    if args.serve == "minimal":
        serve_minimal(args.folder, args.port)
        return
    if args.serve in (FLOOR, FLOOR_AIO):
        serve_floor(args.port, args.grpc_port, aio=args.serve == FLOOR_AIO)
        return
    if args.serve:
        serve_agent(args.folder, args.port, args.grpc_port)
        return
    args.warm_up, args.trees, args.readings = 2, 100, 2000
    smoke_sizes(args, seconds=1, rounds=1, in_process_seconds=0.5, warm_up=0, trees=5, readings=200)
    if not args.in_process_only:
        need_wrk()
        if shutil.which("h2load") is None:
            sys.exit("h2load is not installed: apt-get install nghttp2-client (make os-deps does)")
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
            "grpcio",
        ),
        wrk=tool_version(["wrk", "--version"]),
        h2load=tool_version(["h2load", "--version"]),
    )
    rounds: list[dict[str, Load]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        row = train(folder, args.trees, args.readings)
        if args.oip_only:
            oip_only(report, folder, row, args)
            return
        figures = in_process(folder, row, args.in_process_seconds)
        blocks = figures["blocks"]
        if args.in_process_only:
            report.args.no_write_results = True
            fastpath_table = Table(*_fastpath_table(blocks)[:2])
            report.publish([Table(*_in_process_table(blocks)), fastpath_table, _rows_note(figures["rows"])])
            return
        for _ in range(args.rounds):  # the servers take turns: each round sees the same machine state
            rounds.append(measure_cases(CASES, folder, row, args))
    report.measured()

    def per_round(kind: str, figure: Callable[[Load], float]) -> list[float]:
        return [figure(r["agent"]) / figure(r[kind]) for r in rounds]

    throughput = per_round("minimal", lambda r: r.requests_per_s)
    p99 = per_round("minimal", lambda r: r.p99_ms)
    over_mlflow = per_round("mlflow", lambda r: r.requests_per_s)
    names = {c.name: c.label for c in CASES}
    loads = {c.name: median_load([r[c.name] for r in rounds]) for c in CASES}
    rows = load_rows([loads[c.name] for c in SERVER_CASES], names)
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
    failed = sum(load.errors for name, load in loads.items() if CASE_SERVER[name].startswith("agent"))

    oip_note, oip_table, oip_ratios, oip_checks = _oip_parts(rounds, loads, args)
    fast_headers, fast_rows, fast_checks = _fastpath_table(blocks)
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
        *fast_checks,
        *oip_checks,
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
        f"metrics). Agent, minimal server, MLflow and the OIP contenders below take turns for {args.rounds} "
        "rounds, each server fresh in each round: the server table "
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
        "(tallied, counted in bulk every 256 answers and before every scrape). The bare peer runs the "
        "same row back to back, its model's tree nodes hot in the CPU's caches and branch predictor; the "
        "'then 32 KiB' row shows what reading an L1 data cache's worth of other memory between runs costs "
        "the run, as any work between two runs does"
    )
    proc_headers, proc_rows = _in_process_table(blocks)
    report.publish(
        [
            f"Setup: {setup}.",
            Table(LOAD_HEADERS, rows),
            Table(round_headers, round_rows),
            f"{in_process_note}.",
            Table(proc_headers, proc_rows),
            f"{FASTPATH_NOTE}.",
            Table(fast_headers, fast_rows),
            f"{oip_note}.",
            oip_table,
            oip_ratios,
            _rows_note(figures["rows"]),
            report.checks(checks),
        ]
    )


def oip_only(report: Report, folder: Path, row: dict[str, Any], args: argparse.Namespace) -> None:
    """``--oip-only``: the OIP contenders alone for ``--rounds`` rounds; printed, not written."""
    rounds = [measure_cases(OIP_CASES, folder, row, args) for _ in range(args.rounds)]
    report.measured()
    report.args.no_write_results = True
    loads = {c.name: median_load([r[c.name] for r in rounds]) for c in OIP_CASES}
    note, table, ratios, checks = _oip_parts(rounds, loads, args)
    report.publish([f"{note}.", table, ratios, report.checks(checks)])


def ratio(values: list[float], unit: str = "×", digits: int = 2) -> str:
    """The median of per-round ratios, with their spread."""
    mid = statistics.median(values)
    spread = f" (rounds {min(values):.{digits}f}–{max(values):.{digits}f})" if len(values) > 1 else ""
    return f"{mid:.{digits}f}{unit}{spread}"


# issue #27: (what, contender, against it, at least this ratio; None: a peer's ratio, shown, not a goal)
OIP_TARGETS: list[tuple[str, str, str, float | None]] = [
    ("OIP v2 JSON / /predict, one row", "v2 json", "predict", 0.9),
    ("OIP v2 binary / /predict, one row", "v2 binary", "predict", 0.9),
    (f"OIP v2 binary / JSON, {OIP_ROWS} rows (rows/s)", f"v2 binary {OIP_ROWS}", f"v2 json {OIP_ROWS}", 3.0),
    ("gRPC / REST binary, one row", "grpc", "v2 binary", 0.9),
    ("gRPC / REST JSON, one row", "grpc", "v2 json", 0.9),
    (f"gRPC / REST binary, {OIP_ROWS} rows", f"grpc {OIP_ROWS}", f"v2 binary {OIP_ROWS}", 0.9),
    ("floor peer: gRPC / REST, fixed answer (what grpcio allows)", "floor grpc", "floor rest", None),
    ("floor peer: gRPC asyncio / REST, fixed answer", "floor grpc aio", "floor rest", None),
    (
        f"OIP v2 binary / JSON, {OIP_ROWS} rows, logistic regression (rows/s)",
        f"v2 binary {OIP_ROWS} logistic",
        f"v2 json {OIP_ROWS} logistic",
        3.0,
    ),
]


def _oip_parts(
    rounds: list[dict[str, Load]], loads: dict[str, Load], args: argparse.Namespace
) -> tuple[str, Table, Table, list[list[str]]]:
    """The OIP cases: setup note, their loads, the ratios of issue #27 with p50/p99, and its checks.

    Each ratio is taken within each round and shown twice: as measured throughput, and as server
    capacity (the inverse of the server's CPU per request), the steadier figure on a shared machine.
    """
    note = (
        f"Open Inference Protocol v2 (issue #27), on the same model: one agent process pinned to CPU "
        f"{SERVER_CPU} serves REST and gRPC (as `edgeml agent run` with `grpc:` in agent.yaml, its default "
        "limits: 1 MiB bodies and messages, 4 gRPC threads), and the contenders take turns on it within "
        f"each round: `/predict` with a JSON record, OIP v2 infer with JSON tensors, with binary tensors "
        "(the binary tensor extension, tritonclient's default form; outputs asked as binary too) and "
        f"gRPC `ModelInfer` with raw input contents (tritonclient's form), one row and {OIP_ROWS} rows per "
        f"request. One load generator for all, h2load (nghttp2-client): HTTP/1.1 for REST (as wrk), "
        f"HTTP/2 for gRPC, {CONNECTIONS} connections with one request in flight each, -t1 pinned to CPU "
        f"{LOAD_CPU}, {args.seconds} s per run after a checked request (gRPC: a call by grpcio's client, "
        f"since h2load sees HTTP 200 for a refused call) and a {args.warm_up} s warm-up; p50/p99 from its "
        "per-request log. The server's CPU per request is its CPU time (user + system, from /proc) over "
        "the run divided by the requests answered: it does not depend on what else shares the CPU. "
        f"The forest's own run is most of a {OIP_ROWS}-row request (see the in-process bound below), so "
        f"the {OIP_ROWS}-row JSON and binary requests are measured again on a second agent process "
        "serving a logistic regression (standardized sensors, one-hot machine id; same inputs and "
        "outputs), whose run costs little beside the wire forms. "
        "Figures are medians of the rounds; each ratio is the median of the ratios within a round. "
        "The floor peer is a third process (and a fourth, for grpcio's asyncio server) serving the "
        "same one-row binary REST request and gRPC call with a fixed answer: uvicorn + Starlette for "
        "REST as the agent, grpcio's generated servicer with the agent's options for gRPC, no model "
        "and no validation; its gRPC / REST ratio is what the protocol stacks themselves allow"
    )
    headers = [
        "contender",
        "requests/s",
        "rows/s",
        "p50 ms",
        "p99 ms",
        "server CPU µs/req",
        "server CPU µs/row",
        "requests",
        "errors",
    ]
    table = [
        [
            c.label,
            f"{loads[c.name].requests_per_s:,.0f}",
            f"{loads[c.name].requests_per_s * c.rows:,.0f}",
            f"{loads[c.name].p50_ms:.2f}",
            f"{loads[c.name].p99_ms:.2f}",
            f"{loads[c.name].server_cpu_us:,.0f}",
            f"{loads[c.name].server_cpu_us / c.rows:,.1f}",
            f"{loads[c.name].requests:,}",
            f"{loads[c.name].errors}",
        ]
        for c in OIP_CASES
    ]
    ratios, checks = [], []
    for what, a, b, target in OIP_TARGETS:
        throughput = [r[a].requests_per_s / r[b].requests_per_s for r in rounds]
        capacity = [r[b].server_cpu_us / r[a].server_cpu_us for r in rounds]
        ratios.append(
            [
                what,
                ratio(throughput),
                ratio(capacity),
                f"{loads[a].p50_ms:.2f} / {loads[b].p50_ms:.2f}",
                f"{loads[a].p99_ms:.2f} / {loads[b].p99_ms:.2f}",
                "peer (no goal)" if target is None else f"≥ {target:g}×",
            ]
        )
        if target is None:
            continue
        checks += [
            [
                f"{what}: throughput",
                ratio(throughput),
                f"≥ {target:g}×",
                verdict(statistics.median(throughput), target),
            ],
            [
                f"{what}: server capacity (1 / CPU per request)",
                ratio(capacity),
                f"≥ {target:g}×",
                verdict(statistics.median(capacity), target),
            ],
        ]
    ratio_headers = ["OIP ratio", "throughput", "server capacity", "p50 ms (a / b)", "p99 ms (a / b)", "goal"]
    return note, Table(headers, table), Table(ratio_headers, ratios), checks


def _rows_note(rows: dict[str, float]) -> str:
    """What bounds the binary / JSON ratio at OIP_ROWS rows: the model's own run, in-process."""
    json_s, binary_s, model_s = rows["json"], rows["binary"], rows["model"]
    bare = ""
    if "bare" in rows:  # figures of a revision that did not measure it have none
        bare_s = rows["bare"]
        bare = (
            f"; the ceiling, a bare `InferenceSession.run` on the same {OIP_ROWS} rows (feeds built "
            f"beforehand), {bare_s * 1e3:.2f} ms: {OIP_ROWS / bare_s:,.0f} rows/s against JSON's "
            f"{OIP_ROWS / json_s:,.0f}, so no wire form can give more than {json_s / bare_s:.2f}× JSON's "
            "rows/s on this model"
        )
        if json_s / bare_s < 3:
            bare += " (the 3× goal would need a request cheaper than the model's own run)"
    return (
        f"In-process, {OIP_ROWS} rows per request (serving thread CPU, fastest of 5-call blocks): OIP v2 "
        f"JSON {json_s * 1e3:.2f} ms, binary {binary_s * 1e3:.2f} ms, the model's run alone "
        f"{model_s * 1e3:.2f} ms; binary / JSON rows/s {json_s / binary_s:.2f}×, and at most "
        f"{json_s / model_s:.2f}× were everything but the model free{bare}."
    )


FASTPATH_NOTE = (
    "The fast path (`edgeml.agent.fastpath`, issue #28): each trick beyond public APIs against the "
    "plain path, in the same blocks as the table above. A trick's worth is how much slower the agent's "
    "single-row path is with that trick alone switched off (fastest blocks); one worth less than 5% "
    "is removed. Each agent here serves its own copy of the model, built with its switches. CPU time "
    "is the serving thread's (the tricks run on it), steadier than wall time on a shared machine"
)


def _fastpath_table(blocks: dict[str, list[float]]) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """Each trick's worth: the path without it over the path with every trick; the checks (≥ 5%).

    From the serving thread's CPU time per call (fastest blocks), steadier than wall time on a
    shared machine; the tricks all run on that thread.
    """
    agent = min(blocks["agent cpu"])
    rows = [["every trick on (the agent's path)", f"{agent * 1e6:.1f}", _median_us(blocks["agent cpu"]), ""]]
    checks = []
    for name in ("plain", *TRICKS):
        key = ("agent plain" if name == "plain" else f"without {name}") + " cpu"
        fastest = min(blocks[key])
        worth = fastest / agent - 1
        what = "every trick off: the plain path" if name == "plain" else f"`{name}` off"
        rows.append([what, f"{fastest * 1e6:.1f}", _median_us(blocks[key]), f"{worth:+.1%}"])
        if name != "plain":
            checks.append([f"fast path: `{name}` worth", f"{worth:+.1%}", "≥ +5%", verdict(worth, 0.05)])
    headers = ["single row, in-process", "CPU µs fastest", "CPU µs median", "slower than every trick on"]
    return headers, rows, checks


def _median_us(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e6:.2f}"


def _in_process_table(blocks: dict[str, list[float]]) -> tuple[list[str], list[list[str]]]:
    bare = min(blocks["bare"])
    labels = {
        "bare": "bare InferenceSession.run (peer)",
        "runtime": "the agent's runtime call alone (session's C++ run), same feeds",
        "agent": "agent predict path, decoded JSON → answer JSON: validate → run → answer → health + "
        "telemetry + metrics",
        "agent bytes": "the same, from the request's JSON bytes (adds the JSON decode)",
        "agent health only": "the agent path with the health watch only (no telemetry window)",
        "bare then 32 KiB": "bare, then 32 KiB of other memory read (one byte per cache line): the run "
        "without its cache",
        "32 KiB alone": "that read alone",
    }
    rows = []
    for name, label in labels.items():
        if name not in blocks:  # figures of a revision that did not measure it
            continue
        fastest, median = min(blocks[name]), statistics.median(blocks[name])
        alone = name in ("bare", "32 KiB alone")
        over = "" if alone else f"{fastest / bare - 1:+.0%} ({(fastest - bare) * 1e6:+.1f} µs)"
        rows.append([label, f"{fastest * 1e6:.1f}", f"{median * 1e6:.1f}", over])
    return ["single row, in-process", "µs fastest", "µs median", "over bare (fastest)"], rows


if __name__ == "__main__":
    main()
