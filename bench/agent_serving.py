"""Serving speed: the edge agent against a minimal Starlette + ONNX Runtime server and MLflow.

Targets (issue #7), measured in ONE run on the same trained model with the same load
generator (wrk, one row per request):

- the agent's throughput is ≥ 0.8× that of a minimal Starlette + ONNX Runtime server
  (parse JSON, build feeds, ``session.run``, answer; no validation, no metrics), and its p99
  latency is ≤ 2× that server's;
- the agent's throughput is ≥ 50× that of ``mlflow models serve`` (``--env-manager local``)
  on the same trained scikit-learn pipeline;
- in-process, the agent's predict path (validate → run → observe, with the agent's health
  watch as observer and the Prometheus metrics) adds ≤ 20% to a bare
  ``InferenceSession.run`` of the same row.

The model is a random forest (100 trees) on simulated pump readings: five sensors (float64)
and the machine id (a category), exported by skl2onnx. Each server runs in its own
subprocess pinned to CPU 0 (uvicorn, 1 worker, httptools, no access log); wrk runs pinned to
CPU 1. Agent and minimal server alternate for ``--rounds`` rounds; the median round counts.

    .venv/bin/python bench/agent_serving.py [--seconds 10] [--rounds 3] [--no-write-results]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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

SERVER_CPU, LOAD_CPU = 0, 1
CONNECTIONS = 8
NUMERIC = ["temperature", "vibration", "pressure", "rpm", "power_kw"]
CATEGORY = "machine_id"
PORTS = {"agent": 18501, "minimal": 18502, "mlflow": 18503}
HEALTH = {"agent": "/v2/health/ready", "minimal": "/ping", "mlflow": "/ping"}


# ----------------------------------------------------------------------------- the model


def train(folder: Path) -> dict[str, Any]:
    """Train the pipeline, save it for MLflow and as an ONNX bundle folder; one sample row."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from edgeml.agent.runtime import ModelRuntime
    from edgeml.bundle.keys import canonical_json
    from edgeml.bundle.manifest import FileEntry, Golden, InputField, Manifest, Outputs, Reference
    from edgeml.simulate.sensors import SENSORS, SensorSimulation, simulate_sensors
    from edgeml.train.tracking import trusted_types

    data = simulate_sensors(SensorSimulation(machines=8, readings=2000, seed=1))
    frame = pd.DataFrame({c: data[c] for c in [*NUMERIC, CATEGORY]})
    target = np.asarray(data["fault"])
    prepare = ColumnTransformer(
        [("num", "passthrough", NUMERIC), ("cat", OneHotEncoder(handle_unknown="ignore"), [CATEGORY])]
    )
    forest = RandomForestClassifier(n_estimators=100, max_depth=12, random_state=0, n_jobs=1)
    pipeline = make_pipeline(prepare, forest).fit(frame, target)
    mlflow.sklearn.save_model(pipeline, str(folder / "mlflow"), skops_trusted_types=trusted_types(pipeline))

    types = [(c, DoubleTensorType([None, 1])) for c in NUMERIC] + [(CATEGORY, StringTensorType([None, 1]))]
    onx = convert_sklearn(
        pipeline, initial_types=types, options={id(forest): {"zipmap": False}}, target_opset=17
    )
    bundle = folder / "bundle"
    bundle.mkdir()
    model_file = bundle / "model.onnx"
    model_file.write_bytes(onx.SerializeToString())
    ranges = {c: (float(frame[c].min()), float(frame[c].max())) for c in NUMERIC}
    machines = sorted(frame[CATEGORY].unique().tolist())
    inputs = [
        InputField(
            name=c,
            kind="numeric",
            dtype="float64",
            nullable=False,  # the forest has no missing-value branches
            min=lo - abs(lo),
            max=hi + abs(hi),
            unit=SENSORS[c],
        )
        for c, (lo, hi) in ranges.items()
    ] + [InputField(name=CATEGORY, kind="categorical", dtype="string", values=machines)]
    records = frame.head(5).to_dict("records")
    draft = Manifest(
        model="pump-faults",
        version=1,
        profile="x86-64-generic",
        runtime="onnxruntime",
        precision="fp32",
        created="2026-01-01T00:00:00+00:00",
        expires="2026-12-31T00:00:00+00:00",
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
    outputs = ModelRuntime(bundle, draft).predict_records(records)
    manifest = draft.model_copy(
        update={
            "golden": draft.golden.model_copy(update={"outputs": {k: v.tolist() for k, v in outputs.items()}})
        }
    )
    (bundle / "manifest.json").write_bytes(canonical_json(manifest.model_dump(mode="json")))
    return {k: (float(v) if k in NUMERIC else str(v)) for k, v in records[0].items()}


# ----------------------------------------------------------------------------- servers


def serve_agent(folder: Path, port: int) -> None:
    import uvicorn

    from edgeml.agent.model import LoadedModel, ModelHolder
    from edgeml.agent.server import create_app
    from edgeml.agent.sync import HealthWatch
    from edgeml.bundle.manifest import Manifest

    manifest = Manifest.model_validate_json((folder / "manifest.json").read_bytes())
    model = LoadedModel(folder, manifest)
    model.warm_up()
    holder = ModelHolder()
    holder.observers.append(HealthWatch())  # as the agent runs: every answer is watched
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
    """A server subprocess pinned to SERVER_CPU; its base URL once it answers its health route."""
    import httpx

    port = PORTS[kind]
    if kind == "mlflow":
        mlflow = Path(sys.executable).with_name("mlflow")
        argv = [str(mlflow), "models", "serve", "-m", str(folder / "mlflow"), "--env-manager", "local"]
        argv += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    else:
        argv = [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--folder",
            str(folder / "bundle"),
            "--port",
            str(port),
        ]
    # MLflow runs `uvicorn` by name: the venv's bin must be on PATH even when it is not activated
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": f"file:{folder / 'mlruns'}"}
    pinned = ["taskset", "-c", str(SERVER_CPU), *argv]  # MLflow's worker process inherits it
    proc = subprocess.Popen(pinned, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                assert proc.stderr is not None
                raise RuntimeError(f"{kind} server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + HEALTH[kind], timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not become ready in 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- load


@dataclass
class Load:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(name: str, url: str, body: str, seconds: int, scratch: Path) -> Load:
    """One wrk run: POST ``body`` as fast as CONNECTIONS connections allow; checks the answers' status."""
    script = scratch / "post.lua"
    lua_body = body.replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{lua_body}'\nwrk.headers['Content-Type'] = 'application/json'\n",
        encoding="utf-8",
    )
    argv = ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    proc = subprocess.run([*argv, "-s", str(script), url], capture_output=True, text=True, check=True)
    out = proc.stdout

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        return float(match.group(1)) * _UNITS[match.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    assert rate, out
    assert total, out
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
    return Load(name, float(rate.group(1)), latency("50"), latency("99"), int(total.group(1)), errors)


# ----------------------------------------------------------------------------- in-process


def per_call(fn: Callable[[], object], calls: int = 3000, repeats: int = 9) -> float:
    """Seconds per call: the best of ``repeats`` loops (timeit's rule: the rest is interference)."""
    for _ in range(200):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def in_process(folder: Path, row: dict[str, Any]) -> tuple[float, float, float]:
    """(bare session.run, agent predict path, agent bytes-to-bytes) seconds per single-row call."""
    import numpy as np
    import onnxruntime as ort
    import orjson

    from edgeml.agent.model import LoadedModel, ModelHolder
    from edgeml.agent.server import Serving
    from edgeml.agent.sync import HealthWatch
    from edgeml.bundle.manifest import Manifest

    bundle = folder / "bundle"
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    model = LoadedModel(bundle, manifest)
    holder = ModelHolder()
    holder.observers.append(HealthWatch())
    holder.swap(model)
    serving = Serving(holder)
    body = orjson.dumps(row)

    # the bare peer: a session set up as the agent's runtime sets its own, feeds built beforehand
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(bundle / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    feeds = {c: np.array([[row[c]]], dtype=np.float64) for c in NUMERIC}
    feeds[CATEGORY] = np.array([[row[CATEGORY]]], dtype=object)

    def bare() -> object:
        return session.run(None, feeds)

    def agent() -> object:  # what a request costs between its JSON and its answer's JSON
        return serving.predict(data=row)

    def agent_bytes() -> object:
        return serving.predict(body)

    assert agent_bytes().status == 200  # type: ignore[attr-defined]
    # alternate, so that drift in the machine's load falls on both alike
    bare_s, agent_s, bytes_s = [], [], []
    for _ in range(3):
        bare_s.append(per_call(bare))
        agent_s.append(per_call(agent))
        bytes_s.append(per_call(agent_bytes))
    return min(bare_s), min(agent_s), min(bytes_s)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="agent/minimal rounds (default 3)")
    parser.add_argument("--no-write-results", action="store_true", help="do not update bench/RESULTS.md")
    parser.add_argument("--serve", choices=["agent", "minimal"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        (serve_agent if args.serve == "agent" else serve_minimal)(args.folder, args.port)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (make os-deps does)")
    import json

    machine = describe_machine(
        packages=(
            "edgeml",
            "onnxruntime",
            "starlette",
            "uvicorn",
            "httptools",
            "orjson",
            "mlflow",
            "scikit-learn",
        ),
        wrk=tool_version(["wrk", "--version"]),
    )
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        row = train(folder)
        record = json.dumps(row)
        v2 = json.dumps(
            {
                "inputs": [
                    {
                        "name": c,
                        "shape": [1, 1],
                        "datatype": "FP64" if c in NUMERIC else "BYTES",
                        "data": [row[c]],
                    }
                    for c in [*NUMERIC, CATEGORY]
                ]
            }
        )
        bare_s, agent_s, bytes_s = in_process(folder, row)
        agent_runs, minimal_runs = [], []
        for _ in range(args.rounds):
            with running("agent", folder) as url:
                wrk("warm-up", url + "/predict", record, 2, folder)
                agent_runs.append(wrk("agent", url + "/predict", record, args.seconds, folder))
            with running("minimal", folder) as url:
                wrk("warm-up", url + "/predict", record, 2, folder)
                minimal_runs.append(wrk("minimal", url + "/predict", record, args.seconds, folder))
        with running("agent", folder) as url:
            agent_v2 = wrk("agent v2", url + "/v2/models/pump-faults/infer", v2, args.seconds, folder)
        with running("mlflow", folder) as url:
            mlflow_body = json.dumps({"dataframe_records": [row]})
            wrk("warm-up", url + "/invocations", mlflow_body, 2, folder)
            mlflow_run = wrk("mlflow", url + "/invocations", mlflow_body, args.seconds, folder)
    load_after = load_average()

    def median_run(runs: list[Load]) -> Load:
        return Load(
            runs[0].name,
            statistics.median(r.requests_per_s for r in runs),
            statistics.median(r.p50_ms for r in runs),
            statistics.median(r.p99_ms for r in runs),
            sum(r.requests for r in runs),
            sum(r.errors for r in runs),
        )

    agent, minimal = median_run(agent_runs), median_run(minimal_runs)
    throughput = agent.requests_per_s / minimal.requests_per_s
    p99 = agent.p99_ms / minimal.p99_ms
    over_mlflow = agent.requests_per_s / mlflow_run.requests_per_s
    overhead = agent_s / bare_s - 1
    names = {
        "agent": "edgeml agent, POST /predict",
        "agent v2": "edgeml agent, OIP v2 infer",
        "minimal": "minimal Starlette + ONNX Runtime (peer)",
        "mlflow": "mlflow models serve, sklearn pipeline (peer)",
    }
    rows = [
        [
            names[r.name],
            f"{r.requests_per_s:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.requests:,}",
            f"{r.errors}",
        ]
        for r in (agent, agent_v2, minimal, mlflow_run)
    ]
    headers = ["server", "requests/s", "p50 ms", "p99 ms", "requests", "errors"]
    proc_rows = [
        ["bare InferenceSession.run (peer)", f"{bare_s * 1e6:.1f}"],
        [
            "agent predict path, decoded JSON: validate → run → answer → observe + metrics",
            f"{agent_s * 1e6:.1f}",
        ],
        ["agent, JSON bytes in → JSON bytes out (adds the JSON decode)", f"{bytes_s * 1e6:.1f}"],
    ]
    proc_headers = ["single row, in-process", "µs per call"]
    checks = [
        ["throughput vs minimal server", f"{throughput:.2f}×", "≥ 0.8×", verdict(throughput, 0.8)],
        ["p99 vs minimal server", f"{p99:.2f}×", "≤ 2×", verdict(p99, 2.0, higher_is_better=False)],
        ["throughput vs mlflow models serve", f"{over_mlflow:.0f}×", "≥ 50×", verdict(over_mlflow, 50)],
        [
            "predict path over bare session.run",
            f"{overhead:+.0%} ({(agent_s - bare_s) * 1e6:+.1f} µs)",
            "≤ +20%",
            verdict(overhead, 0.2, higher_is_better=False),
        ],
        [
            "agent requests failed",
            str(agent.errors + agent_v2.errors),
            "0",
            "PASS" if agent.errors + agent_v2.errors == 0 else "FAIL",
        ],
    ]
    check_headers = ["target", "measured", "goal", "result"]
    setup = (
        f"random forest (100 trees, depth ≤ 12) on 16,000 simulated pump readings, 5 float64 sensors + "
        f"machine id, exported by skl2onnx; single-row requests; wrk -t1 -c{CONNECTIONS}, {args.seconds} s "
        f"per run after a 2 s warm-up, pinned to CPU {LOAD_CPU}; each server in its own process pinned to "
        f"CPU {SERVER_CPU} (uvicorn, 1 worker, httptools, no access log; MLflow its own uvicorn, 1 worker); "
        f"agent and minimal server alternate for {args.rounds} rounds, median shown (requests and errors "
        "summed)"
    )
    print("\n".join(machine.lines()))
    print(f"load average before {load_before}, after {load_after}")
    print(setup)
    print(text_table(headers, rows))
    print()
    print(text_table(proc_headers, proc_rows))
    print()
    print(text_table(check_headers, checks))
    if not args.no_write_results:
        write_section(
            "agent_serving",
            "\n".join(
                [
                    "## Edge agent serving: throughput, p99, predict-path overhead "
                    "(`bench/agent_serving.py`)",
                    "",
                    f"Run {now_utc()}: `.venv/bin/python bench/agent_serving.py "
                    f"{' '.join(sys.argv[1:])}`".replace(" `", "`"),
                    "",
                    "Machine: "
                    + "; ".join(machine.lines())
                    + f"; load average before {load_before}, after {load_after}.",
                    "",
                    f"Setup: {setup}.",
                    "",
                    markdown_table(headers, rows),
                    "",
                    markdown_table(proc_headers, proc_rows),
                    "",
                    markdown_table(check_headers, checks),
                ]
            ),
        )


if __name__ == "__main__":
    main()
