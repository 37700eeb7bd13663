"""What every benchmark shares: its command line, its report, the servers it starts, edgeml's names.

Every benchmark runs edgeml and its peer side by side in the same run and reports a ratio
against a target. Each writes one section of ``bench/RESULTS.md``, between
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers, replacing only its own; the
section starts with a stamp (:func:`section_head`): the git revision, the CPU, and whether the
machine was quiet (:class:`Quiet`). :func:`parser` gives every benchmark ``--smoke`` (tiny sizes,
seconds, no claims, nothing written) and ``--no-write-results``; :class:`Report` prints and writes.

Servers under test get free ports, and :func:`server_process` checks that the process listening
on the port is the one it started (or one of its children), so a benchmark never measures a
stranger. :func:`central_node` starts the central node through its CLI (``edgeml central
init`` and ``run``), as an operator does.

Benchmarks import edgeml's names from here (``from bench.common import TelemetryBatch``): the
table :data:`_EDGEML` says where each one lives, so a module that moves is repointed in one place.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
EXAMPLES = ROOT / "examples"
DATA_DIR = BENCH_DIR / ".data"  # generated inputs and scratch output (git-ignored)
RESULTS = BENCH_DIR / "RESULTS.md"

_PACKAGES = ("edgeml", "ray", "pyarrow", "pandas", "numpy", "duckdb", "paho-mqtt")
_HEADER = """# Benchmark results

Written by `make bench` (`python -m bench`), which runs every benchmark in `bench/` in one
go; each replaces only its own section. Every benchmark runs edgeml and its peer in the same
run, on the same input, and reports the ratio against a target. Absolute figures depend on
the machine; the ratios are the claim. Each section starts with its stamp: the command, the
machine (CPU, packages, the edgeml revision measured) and whether the machine was quiet:
how busy its CPUs were in the 2 s before the run (other jobs; 0.2 s in a smoke run, which claims
nothing) and the load average before and after (other jobs that joined during the run). Treat
small differences as noise on a machine that was not quiet.
"""


# ------------------------------------------------------------------------------ edgeml's names

# name used in bench/ → (module, name there). Repoint a moved module here, nowhere else.
_EDGEML: dict[str, tuple[str, str]] = {}


def _names(module: str, *names: str, **aliases: str) -> None:
    _EDGEML.update({n: (module, n) for n in names})
    _EDGEML.update({alias: (module, n) for alias, n in aliases.items()})


_names("edgeml._thirdparty", "import_nannyml")
_names("edgeml.agent.config", "TelemetryConfig")
_names("edgeml.agent.grpc", "GrpcServer")
_names("edgeml.agent.grpc.grpc_predict_v2_pb2", "ModelInferRequest")
_names("edgeml.agent.grpc.grpc_predict_v2_pb2_grpc", "GRPCInferenceServiceStub")
_names("edgeml.agent.grpc.grpc_predict_v2_pb2", "ModelInferResponse")
_names(
    "edgeml.agent.grpc.grpc_predict_v2_pb2_grpc",
    "GRPCInferenceServiceServicer",
    "add_GRPCInferenceServiceServicer_to_server",
)
_names("edgeml.agent.fastpath", "switched", FastPathSwitches="Switches")
_names("edgeml.agent.model", "LoadedModel", "ModelHolder")
_names("edgeml.agent.oip", "tensor_bytes")
_names("edgeml.agent.runtime", "ModelRuntime")
_names("edgeml.agent.server", "create_app", AgentServing="Serving")
_names("edgeml.agent.sync", "HealthWatch")
_names("edgeml.agent.telemetry", "TelemetryWindow")
_names(
    "edgeml.telemetry.schema",
    "LATENCY_EDGES",
    "CalibratedSums",
    "FeatureTelemetry",
    "SampleRow",
    "TelemetryBatch",
)
_names("edgeml.bundle.build", "build_bundle", "publish_bundle")
_names("edgeml.bundle.keys", "KeyRing", "canonical_json", "export_public", "init_keys", "load_signer")
_names(
    "edgeml.bundle.manifest",
    "Calibration",
    "FileEntry",
    "Golden",
    "Histogram",
    "InputField",
    "Manifest",
    "Outputs",
    "Reference",
)
_names(
    "edgeml.bundle.reference",
    "PROBABILITY_EDGES",
    "bin_counts",
    "category_histogram",
    "numeric_histogram",
    "quantile_edges",
)
_names("edgeml.bundle.rollout", publish_channel="publish")
_names("edgeml.bundle.verify", "fetch_bundle")
_names("edgeml.telemetry.db.tables", "DEFAULT_MEMORY_LIMIT")
_names("edgeml.telemetry.db.store", TelemetryStore="DuckDBStore")
_names("edgeml.telemetry.db.tables", FEATURE_BINS_SQL="_FEATURE_BINS", SCORE_BINS_SQL="_SCORE_BINS")
_names("edgeml.central.drift", "ThresholdCache", "compute_drift", "pool_stored", "pool_window")
_names("edgeml.drift.run", "drift_run")
_names("edgeml.export.run", "OPENVINO_FAMILIES", "feeds", "output_names")
_names("edgeml.export.run", export_build="_build", export_convert="_convert", ExportRunner="_Runner")
_names("edgeml.features.build", "apply_row_features", "build_features")
_names("edgeml.features.window", "compute_batch")
_names("edgeml.ingest.coerce", "coerce_batch")
_names("edgeml.ingest.lake", "parquet_bytes", "read_parts", "source_parts", "write_clean_parts")
_names("edgeml.ingest.mqtt", "lander_for")
_names("edgeml.ingest.run", "ingest", "land_batch")
_names("edgeml.ingest.runtime", "ray_session")
_names("edgeml.mqtt", "connect_client", "parse_broker")
_names("edgeml.profiles", "get_profile")
_names("edgeml.serve", "ServeConfig", "check_channel", "deploy", "public_keys")
_names("edgeml.settings", "StoreSettings", "load_settings")
_names("edgeml.simulate.publish", "publish_records")
_names(
    "edgeml.simulate.sensors",
    "SensorSimulation",
    "iter_records",
    "simulate_sensors",
    "write_csv",
    SENSOR_UNITS="SENSORS",
)
_names("edgeml.spec", "parse_spec")
_names("edgeml.spec.models", "ParamRange", ServingSpec="Serving")
_names("edgeml.store", "open_store", "store_from_settings")
_names("edgeml.store.local", "LocalStore")
_names("edgeml.train.data", "split_features")
_names("edgeml.train.families", "suggest", FAMILY_BUILDERS="FAMILIES")
_names("edgeml.train.pipeline", "build_pipeline")
_names("edgeml.train.run", "train")
_names("edgeml.train.search", "fit_trial", "run_search")
_names("edgeml.train.tracking", "trusted_types")
_names("edgeml.validate", "validate")
_names("edgeml.train.data", "load_training_data")


def __getattr__(name: str) -> Any:
    """``from bench.common import X``: edgeml's ``X``, imported on first use (the CLI stays fast)."""
    if name not in _EDGEML:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _EDGEML[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def edgeml_cli() -> str:
    """The ``edgeml`` command of the running interpreter's environment."""
    return str(Path(sys.executable).with_name("edgeml"))


# ------------------------------------------------------------------------------ example specs


def example_spec(name: str, **changes: Any) -> Any:
    """``examples/NAME.yaml`` with the benchmark's ``changes``, parsed and checked as edgeml does.

    Each change replaces a top-level section; a mapping merges into a mapping section, key by
    key and recursively, and a ``None`` value removes that key.
    """
    import yaml

    parse_spec = __getattr__("parse_spec")
    data = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))
    for key, value in changes.items():
        data[key] = _merged(data.get(key), value)
    source = f"examples/{name}.yaml, bench changes to {', '.join(changes) or 'nothing'}"
    return parse_spec(yaml.safe_dump(data, sort_keys=False), source=source)


def simulated_training_data(spec: Any, machines: int, readings: int, seed: int) -> Any:
    """Simulated pump readings put through edgeml's coercion and features, split as training splits them."""
    import pandas as pd

    from bench.common import (
        SensorSimulation,
        apply_row_features,
        coerce_batch,
        compute_batch,
        simulate_sensors,
        split_features,
    )

    frame = pd.DataFrame(simulate_sensors(SensorSimulation(machines=machines, readings=readings, seed=seed)))
    clean = coerce_batch(frame, spec.schema_, source="sim").clean
    table = compute_batch(clean, spec.features.window, entity="machine_id", timestamp="ts")
    return split_features(spec, apply_row_features(table, spec.features.row).to_pandas(), "bench")


SENSORS = ["temperature", "vibration", "pressure", "rpm", "power_kw"]  # the forest's numeric inputs
MACHINE = "machine_id"  # and its category


@dataclass
class Forest:
    """A random forest on simulated pump readings, exported by skl2onnx, and the manifest of its bundle."""

    pipeline: Any  # scikit-learn: one-hot machine id + forest
    frame: Any  # the training rows (pandas)
    target: Any  # their labels (numpy)
    manifest: Any  # golden outputs computed by edgeml's runtime; reference as given
    folder: Path  # holds model.onnx (the manifest is not written)

    def row(self) -> dict[str, Any]:
        """One request's row, as JSON has it."""
        first = self.frame.iloc[0]
        return {c: float(first[c]) for c in SENSORS} | {MACHINE: str(first[MACHINE])}


def pump_forest(
    folder: Path,
    trees: int,
    readings: int,
    reference: Callable[[Forest], Any] | None = None,
    *,
    logistic: bool = False,
) -> Forest:
    """Train the forest on 8 pumps × ``readings``, export it into ``folder``, draft its manifest.

    ``reference`` makes the manifest's reference statistics from the trained forest (none by default).
    ``logistic``: a logistic regression on standardized sensors instead of the forest (same inputs
    and outputs), a model whose run costs little beside a request's parsing and answer.
    """
    import numpy as np
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from bench.common import (
        SENSOR_UNITS,
        FileEntry,
        Golden,
        InputField,
        Manifest,
        ModelRuntime,
        Outputs,
        Reference,
        SensorSimulation,
        simulate_sensors,
    )

    data = simulate_sensors(SensorSimulation(machines=8, readings=readings, seed=1))
    frame = pd.DataFrame({c: data[c] for c in [*SENSORS, MACHINE]})
    target = np.asarray(data["fault"])
    prepare = ColumnTransformer(
        [
            ("num", StandardScaler() if logistic else "passthrough", SENSORS),
            ("cat", OneHotEncoder(handle_unknown="ignore"), [MACHINE]),
        ]
    )
    forest: Any = (
        LogisticRegression(max_iter=1000)
        if logistic
        else RandomForestClassifier(n_estimators=trees, max_depth=12, random_state=0, n_jobs=1)
    )
    pipeline = make_pipeline(prepare, forest).fit(frame, target)
    types = [(c, DoubleTensorType([None, 1])) for c in SENSORS] + [(MACHINE, StringTensorType([None, 1]))]
    onx = convert_sklearn(
        pipeline, initial_types=types, options={id(forest): {"zipmap": False}}, target_opset=17
    )
    folder.mkdir(parents=True, exist_ok=True)
    model_file = folder / "model.onnx"
    model_file.write_bytes(onx.SerializeToString())
    inputs = [
        InputField(
            name=c,
            kind="numeric",
            dtype="float64",
            nullable=False,  # the forest has no missing-value branches
            min=float(frame[c].min()) - abs(float(frame[c].min())),
            max=float(frame[c].max()) + abs(float(frame[c].max())),
            unit=SENSOR_UNITS[c],
        )
        for c in SENSORS
    ] + [
        InputField(
            name=MACHINE, kind="categorical", dtype="string", values=sorted(frame[MACHINE].unique().tolist())
        )
    ]
    records = frame.head(5).to_dict("records")
    now = datetime.now(UTC)
    made = Forest(pipeline, frame, target, None, folder)
    draft = Manifest(
        model="pump-faults",
        version=1,
        profile="x86-64-generic",
        runtime="onnxruntime",
        precision="fp32",
        created=now.isoformat(timespec="seconds"),
        expires=now.replace(year=now.year + 1).isoformat(timespec="seconds"),
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
        reference=reference(made) if reference else Reference(rows=0, source="bench", features={}, scores={}),
        golden=Golden(inputs=records, outputs={}, tolerance=1e-5),
        metrics={},
        export={},
        mlflow_run_id="bench",
        snapshot="bench",
        key_id="bench",
    )
    outputs = ModelRuntime(folder, draft).predict_records(records)
    golden = draft.golden.model_copy(update={"outputs": {k: v.tolist() for k, v in outputs.items()}})
    made.manifest = draft.model_copy(update={"golden": golden})
    return made


def _merged(old: Any, new: Any) -> Any:
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    out = dict(old)
    for key, value in new.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merged(out.get(key), value)
    return out


# ---------------------------------------------------------------------------- machine


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int  # logical CPUs this process may run on
    ram_gb: float
    os: str
    python: str
    packages: dict[str, str]
    extra: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        pkgs = ", ".join(f"{k} {v}" for k, v in self.packages.items())
        out = [
            f"CPU: {self.cpu} x {self.cores} logical cores",
            f"RAM: {self.ram_gb:.1f} GB; OS: {self.os}",
            f"Python {self.python}; {pkgs}",
        ]
        out += [f"{k}: {v}" for k, v in self.extra.items()]
        return out


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Hardware", "Processor"):  # x86, then ARM boards
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.machine()


def _ram_gb() -> float:
    try:
        text = Path("/proc/meminfo").read_text(encoding="utf-8")
        match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
        if match:
            return int(match.group(1)) / 1024**2
    except OSError:
        pass
    return float("nan")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def tool_version(argv: Sequence[str], pattern: str = r"(\d+\.\d+(?:\.\d+)?)") -> str:
    """The first version number a command prints (``mosquitto -h`` and the like)."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return "not installed"
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    match = re.search(pattern, proc.stdout + proc.stderr)
    return match.group(1) if match else "unknown"


def cpu_features() -> str:
    """The CPU's widest SIMD and its clock as the kernel reports them: figures differ across CPUs by these."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    line = re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.MULTILINE)  # x86, then ARM
    flags = set(line.group(1).split()) if line else set()
    simd = next((f for f in ("avx512f", "avx2", "avx", "sse4_2", "asimd") if f in flags), "none known")
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)
    return f"widest SIMD {simd}" + (f", {float(mhz.group(1)):,.0f} MHz" if mhz else "")


def python_speed() -> str:
    """CPU seconds of a fixed pure-Python loop: how fast this CPU runs the interpreter (the serving path)."""
    start = time.process_time()
    total = 0
    for i in range(5_000_000):
        total += i
    return f"{time.process_time() - start:.2f} s of CPU for 5M additions in a Python loop"


def describe_machine(packages: Sequence[str] = _PACKAGES, **extra: str) -> Machine:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    extra = {"CPU features": cpu_features(), "Python speed": python_speed(), **extra}
    return Machine(
        cpu=_cpu_model(),
        cores=cores,
        ram_gb=_ram_gb(),
        os=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=platform.python_version(),
        packages={p: _version(p) for p in packages},
        extra={"edgeml revision": git_revision(), **extra},
    )


def git_revision() -> str:
    """The commit benchmarked, with ``-dirty`` when the work tree has changes."""
    try:
        proc = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return proc.stdout.strip() or "unknown"


def load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_cpu_s() -> float:
    """CPU seconds every process on the machine has used (all CPUs; idle and iowait excluded)."""
    fields = [int(x) for x in Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


QUIET_BUSY = 0.10  # at most this share of the CPUs busy with other work before a run
# the 1-minute load average at the end, per CPU: the benchmark alone keeps it near 1 (its own work
# on every core); above 2, other jobs ran beside it (a run can start quiet and end crowded)
QUIET_LOAD_AFTER = 2.0


@dataclass
class Quiet:
    """Was the machine quiet? Its CPUs' use in the seconds before the run, the load average around it."""

    busy_before: float  # share of all CPUs busy (other jobs: the benchmark has not started)
    load_before: str
    load_after: str = ""
    seconds: float = 2.0  # how long busy_before was sampled

    @classmethod
    def sample(cls, seconds: float = 2.0) -> Quiet:
        cpus = os.cpu_count() or 1
        start = machine_cpu_s()
        time.sleep(seconds)
        return cls((machine_cpu_s() - start) / seconds / cpus, load_average(), seconds=seconds)

    def end(self) -> None:
        self.load_after = load_average()

    @property
    def crowded_after(self) -> bool:
        try:
            return float(self.load_after.split("/")[0]) > QUIET_LOAD_AFTER * (os.cpu_count() or 1)
        except ValueError:  # not measured ("" before end(), "n/a" without getloadavg)
            return False

    @property
    def quiet(self) -> bool:
        return self.busy_before <= QUIET_BUSY and not self.crowded_after

    def line(self) -> str:
        verdict_ = "yes" if self.quiet else "NO (figures met other jobs)"
        return (
            f"Quiet machine: {verdict_}: {self.busy_before:.0%} of the CPUs busy "
            f"in the {self.seconds:g} s before the run "
            f"(≤ {QUIET_BUSY:.0%} counts as quiet); load average before {self.load_before}, "
            f"after {self.load_after or '-'} (1-minute ≤ {QUIET_LOAD_AFTER:g} per CPU counts as quiet)"
        )


# ---------------------------------------------------------------------------- results


@dataclass
class Measurement:
    """Repeated wall-clock timings of one contender over the same input."""

    name: str
    rows: int
    bytes: int
    seconds: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        ordered = sorted(self.seconds)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.best

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.best


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(wall-clock seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def verdict(ratio: float, target: float, *, higher_is_better: bool = True) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "PASS" if ok else "FAIL"


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


# ----------------------------------------------------------------------------- tables


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned table for the terminal (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_number(r[i]) for r in cells[1:]) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), rule, *(fmt(r) for r in cells[1:])])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    numeric = [all(_is_number(r[i]) for r in cells) for i in range(len(headers))] if cells else []
    align = ["---:" if num else "---" for num in numeric] or ["---"] * len(headers)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?[x%]?", text.strip()))


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[object]]


CHECK_HEADERS = ["target", "measured", "goal", "result"]
SMOKE_NOTE = "smoke run: tiny sizes, to check that the benchmark still runs; its figures are no claim"


# ------------------------------------------------------------------------ command line, report


def parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's argument parser, with the options every benchmark has."""
    out = argparse.ArgumentParser(
        description=doc.split("\n\n", maxsplit=1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    out.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds: check that the benchmark still runs against the product; "
        "prints figures, claims nothing, writes nothing",
    )
    out.add_argument("--no-write-results", action="store_true", help="do not update bench/RESULTS.md")
    return out


def smoke_sizes(args: argparse.Namespace, **sizes: Any) -> argparse.Namespace:
    """With ``--smoke``, ``sizes`` replace the arguments of the same names."""
    if args.smoke:
        for name, value in sizes.items():
            setattr(args, name, value)
    return args


class Report:
    """One run of a benchmark: the machine and its quiet, then what it prints and writes to RESULTS.md.

    Create it before measuring (it samples how busy the machine is), call :meth:`measured` when the
    measuring is over, then :meth:`publish` the parts: paragraphs and :class:`Table` s.
    """

    def __init__(
        self,
        name: str,
        title: str,
        args: argparse.Namespace,
        packages: Sequence[str] = _PACKAGES,
        **extra: str,
    ) -> None:
        self.name, self.title, self.args = name, title, args
        self.smoke = bool(args.smoke)
        self.machine = describe_machine(packages, **extra)
        self.quiet = Quiet.sample(0.2 if self.smoke else 2.0)  # a smoke run's figures claim nothing

    def measured(self) -> None:
        self.quiet.end()

    def checks(self, rows: Sequence[Sequence[object]]) -> Table:
        """The target rows (target, measured, goal, result); a smoke run states no result."""
        if self.smoke:
            rows = [[*row[:-1], "- (smoke)"] for row in rows]
        return Table(CHECK_HEADERS, rows)

    def publish(self, parts: Sequence[str | Table]) -> None:
        if not self.quiet.load_after:
            self.measured()
        print("\n".join(self.machine.lines()))
        print(self.quiet.line())
        for part in parts:
            print()
            print(text_table(part.headers, part.rows) if isinstance(part, Table) else part)
        if self.smoke:
            print(f"\n{SMOKE_NOTE}: bench/RESULTS.md not written")
            return
        if self.args.no_write_results:
            return
        body = [section_head(self.title, self.name, self.machine, self.quiet, sys.argv[1:])]
        for part in parts:
            body.append(markdown_table(part.headers, part.rows) if isinstance(part, Table) else part)
        write_section(self.name, "\n\n".join(body))
        print(f"\nwrote the {self.name} section of bench/RESULTS.md")


# ------------------------------------------------------------------------ HTTP load (wrk)


@dataclass(frozen=True)
class Load:
    """One wrk run against one server."""

    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers and socket errors (connect, read, write, timeout)
    client_cpu: float = 0.0  # CPU wrk used, in CPUs (1.0: one whole CPU): near 1, wrk is the limit
    server_cpu_us: float = 0.0  # the server's CPU µs per request over the run, where measured


LOAD_HEADERS = ["server", "requests/s", "p50 ms", "p99 ms", "requests", "errors"]
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def need_wrk() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (make os-deps does)")


def lua_string(text: str) -> str:
    """``text`` as a Lua long string: no escaping to get wrong."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def _lua_post(body: str, scratch: Path) -> Path:
    """A wrk script POSTing ``body`` as JSON."""
    script = scratch / "post.lua"
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = {lua_string(body)}\n"
        "wrk.headers['Content-Type'] = 'application/json'\n",
        encoding="utf-8",
    )
    return script


def parse_wrk(name: str, out: str, client_cpu: float = 0.0) -> Load:
    """A :class:`Load` from wrk's ``--latency`` report."""

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
    return Load(
        name, float(rate.group(1)), latency("50"), latency("99"), int(total.group(1)), errors, client_cpu
    )


def wrk_post(
    name: str,
    url: str,
    body: str,
    seconds: int,
    scratch: Path,
    *,
    connections: int = 8,
    cpu: int | None = None,
) -> Load:
    """One wrk run (one thread, ``connections`` keep-alive connections) POSTing ``body`` to ``url``.

    ``cpu`` pins wrk to that CPU (``taskset``), so that it does not take the server's.
    """
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["-s", str(_lua_post(body, scratch)), url]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return parse_wrk(name, proc.stdout, used / seconds)


def post_load(
    name: str,
    url: str,
    body: str,
    seconds: int,
    scratch: Path,
    *,
    warm_up_s: int = 2,
    connections: int = 8,
    cpu: int | None = None,
) -> Load:
    """The measured run, after one checked request (it must answer 200) and a ``warm_up_s`` run."""
    import httpx

    answer = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    if answer.status_code != 200:
        raise RuntimeError(f"{name}: {url} answered {answer.status_code}: {answer.text[:500]}")
    if warm_up_s:  # connections, first batches, lazy imports and allocations of the server
        wrk_post(f"{name} warm-up", url, body, warm_up_s, scratch, connections=connections, cpu=cpu)
    return wrk_post(name, url, body, seconds, scratch, connections=connections, cpu=cpu)


def median_load(runs: Sequence[Load]) -> Load:
    """The median of each figure over rounds of the same server; requests and errors summed."""
    return Load(
        runs[0].name,
        statistics.median(r.requests_per_s for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.requests for r in runs),
        sum(r.errors for r in runs),
        statistics.median(r.client_cpu for r in runs),
        statistics.median(r.server_cpu_us for r in runs),
    )


def load_rows(loads: Sequence[Load], names: Mapping[str, str] | None = None) -> list[list[str]]:
    """Table rows under :data:`LOAD_HEADERS`; ``names`` gives a display name per :attr:`Load.name`."""
    names = names or {}
    return [
        [
            names.get(r.name, r.name),
            f"{r.requests_per_s:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.requests:,}",
            f"{r.errors}",
        ]
        for r in loads
    ]


# ------------------------------------------------------------------------ processes


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server's workers, Ray's raylet and actors)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def memory_mb(pid: int) -> float:
    """Proportional set size of ``pid`` and its descendants (shared pages counted once in all)."""
    total = 0.0
    for member in process_tree(pid):
        with suppress(OSError):
            for line in Path(f"/proc/{member}/smaps_rollup").read_text(encoding="utf-8").splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
    return total


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads): system is the kernel's work for it."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    return sum(cpu_split(pid))


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """:func:`cpu_split` of ``pid`` and its descendants, summed."""
    user = system = 0.0
    for member in process_tree(pid):
        with suppress(OSError):
            u, s = cpu_split(member)
            user, system = user + u, system + s
    return user, system


def tree_kernel_calls(pid: int) -> tuple[int, int]:
    """(read + write system calls, context switches) of ``pid``, its threads and its descendants so far.

    Each hand-off between threads or processes (a pipe, a queue, a lock) costs calls into the
    kernel and wake-ups: their cost per call depends on the CPU and its security mitigations.
    """
    calls = switches = 0
    for member in process_tree(pid):
        with suppress(OSError):
            io = Path(f"/proc/{member}/io").read_text(encoding="utf-8")
            calls += sum(int(v) for k, v in re.findall(r"^(syscr|syscw): (\d+)$", io, re.MULTILINE))
            for status in Path(f"/proc/{member}/task").glob("*/status"):
                with suppress(OSError):
                    text = status.read_text(encoding="utf-8")
                    switches += sum(int(v) for v in re.findall(r"ctxt_switches:\s+(\d+)", text))
    return calls, switches


def tree_cpu_s(pid: int) -> float:
    """:func:`cpu_s` of ``pid`` and its descendants."""
    return sum(tree_cpu_split(pid))


# ------------------------------------------------------------------------ servers under test


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_pids(port: int) -> set[int]:
    """The processes holding a listening TCP socket on ``port`` (any address), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            for line in Path(table).read_text(encoding="utf-8").splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    if inodes:
        for fd in Path("/proc").glob("[0-9]*/fd/*"):
            with suppress(OSError):
                if os.readlink(fd) in inodes:
                    pids.add(int(fd.parts[2]))
    return pids


def _describe(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmd = "?"
    return f"pid {pid} ({cmd.strip()[:120]})"


def check_listener(port: int, pid: int, name: str = "server") -> None:
    """Fail unless what listens on ``port`` is ``pid`` or one of its descendants, and nothing else."""
    owners = listening_pids(port)
    ours = set(process_tree(pid))
    if not owners or not owners <= ours:
        strangers = ", ".join(_describe(p) for p in sorted(owners - ours)) or "no process this user can see"
        raise RuntimeError(
            f"127.0.0.1:{port} is answered by {strangers}, not by the {name} this benchmark started "
            f"(pid {pid}): refusing to measure another process"
        )


def port_of(url: str) -> int:
    match = re.match(r"https?://[^/:]+:(\d+)", url)
    if match is None:
        raise ValueError(f"no port in {url}")
    return int(match.group(1))


def wait_until_ready(
    url: str, *, timeout_s: float = 120, proc: subprocess.Popen[bytes] | None = None, name: str = "server"
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` (the server) exits meanwhile."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"{name} exited with {proc.returncode}: {err}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer {url} in {timeout_s:.0f} s")
        time.sleep(0.2)


def bench_argv(module: str, *args: str) -> list[str]:
    """``python -m bench.MODULE ARGS``: a benchmark's own server (the peers) in a subprocess."""
    return [sys.executable, "-m", f"bench.{module}", *args]


@contextmanager
def server_process(
    argv: Sequence[str],
    health_url: str,
    *,
    cpu: int | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "server",
    timeout_s: float = 120,
    log: Path | None = None,
    cwd: Path | None = None,
    stop_timeout_s: float = 15,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess, once ``health_url`` answers 200 from it; SIGTERM (then killed) on exit.

    The process listening on the health URL's port must be the one started (or its child):
    anything else fails loudly rather than being measured. ``cpu`` pins it, and every process
    it starts, to that CPU (``taskset``). The venv's ``bin`` goes first on PATH, for servers that
    start tools by name (``mlflow models serve`` runs ``uvicorn``) when the venv is not
    activated, and the repository on PYTHONPATH, for ``python -m bench.NAME``. Its output goes
    to ``log`` when given (and is quoted if it fails to start).
    """
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, **(env or {}), "PATH": path, "PYTHONPATH": pythonpath}
    command = [*argv] if cpu is None else ["taskset", "-c", str(cpu), *argv]
    with log.open("wb") if log else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(
            command,
            env=full_env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.PIPE,
        )
    try:
        try:
            wait_until_ready(health_url, timeout_s=timeout_s, proc=proc, name=name)
        except RuntimeError as exc:
            if log is None:
                raise
            raise RuntimeError(f"{exc}\n{log.read_text(encoding='utf-8', errors='replace')[-3000:]}") from exc
        check_listener(port_of(health_url), proc.pid, name)
        yield proc
    finally:
        stop(proc, stop_timeout_s)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    """SIGTERM (servers shut down gracefully), then kill after ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@dataclass(frozen=True)
class CentralNode:
    url: str
    pid: int
    folder: Path
    db: Path
    admin_token: str
    bootstrap_token: str


@contextmanager
def central_node(folder: Path, *, db_memory: str | None = None) -> Iterator[CentralNode]:
    """``edgeml central init`` then ``edgeml central run`` in ``folder``, on a free port.

    The node is checked to be the one started: its process listens on the port, and it accepts
    the admin token ``init`` just wrote. Stopped by SIGTERM (it drains and checkpoints its
    store) at the end.
    """
    import httpx
    import yaml

    port = free_port()
    env = {**os.environ, "EDGEML_HOME": str(folder / "home")}
    init = [edgeml_cli(), "central", "init", "--out", str(folder), "--port", str(port)]
    subprocess.run(init, env=env, check=True, capture_output=True)
    config_file = folder / "central.yaml"
    if db_memory is not None:  # as an operator edits central.yaml
        config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        config["db_memory"] = db_memory
        config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    admin = (folder / config["admin_token_file"]).read_text(encoding="utf-8").strip()
    bootstrap = (folder / config["bootstrap_token_file"]).read_text(encoding="utf-8").strip()
    url = f"http://127.0.0.1:{port}"
    argv = [edgeml_cli(), "central", "run", "--config", str(config_file)]
    with server_process(
        argv,
        url + "/healthz",
        env={"EDGEML_HOME": str(folder / "home")},
        name="edgeml central",
        log=folder / "central.log",
        cwd=folder,
        stop_timeout_s=120,
    ) as proc:
        answer = httpx.get(url + "/v1/devices", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        if answer.status_code != 200:
            raise RuntimeError(f"the central node on {url} refused the admin token it was given: {answer}")
        yield CentralNode(url, proc.pid, folder, folder / config["db_path"], admin, bootstrap)


def start_ray(num_cpus: int = 2) -> None:
    """A private local Ray for this process on loopback, as the appliance starts it (never a
    cluster another job left running), its state in a folder of its own removed at exit."""
    from edgeml.ingest.runtime import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    temp = tempfile.mkdtemp(prefix="edgeml-bench-ray-", dir="/tmp")  # short: Ray's socket paths
    atexit.register(shutil.rmtree, temp, ignore_errors=True)
    init_ray(None, num_cpus=num_cpus, _temp_dir=temp)


def trim_profile(text: str) -> str:
    """pstats output without its preamble lines and the site-packages and repository prefixes."""
    site = str(Path(sys.prefix)) + "/lib/python3.11/site-packages/"
    lines = [ln.replace(site, "").replace(str(ROOT) + "/", "") for ln in text.splitlines()]
    return "\n".join(
        ln for ln in lines if ln.strip() and not ln.lstrip().startswith(("Ordered by", "List reduced"))
    )


# -------------------------------------------------------------------------- RESULTS.md


def section_head(title: str, name: str, machine: Machine, quiet: Quiet, argv: Sequence[str] = ()) -> str:
    """The stamp a RESULTS.md section starts with: title, command and time, machine, quiet."""
    command = " ".join([".venv/bin/python", "-m", f"bench.{name}", *argv])
    return "\n".join(
        [
            f"## {title} (`bench/{name}.py`)",
            "",
            f"Run {now_utc()}: `{command}`",
            "",
            f"Machine: {'; '.join(machine.lines())}.",
            "",
            f"{quiet.line()}.",
        ]
    )


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Add or replace the section ``name`` of RESULTS.md, leaving the others as they are."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    first = text.find("<!-- bench:")
    text = _HEADER + "\n" + text[first:] if first >= 0 else _HEADER  # the header as this file says
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    tmp.replace(path)


@dataclass(frozen=True)
class Stamp:
    """What a RESULTS.md section says it measured: the edgeml revision and the CPU."""

    revision: str
    cpu: str
    cores: int


def result_sections(path: Path = RESULTS) -> dict[str, str]:
    """Each section of RESULTS.md by name."""
    text = path.read_text(encoding="utf-8")
    found = re.finditer(r"<!-- bench:(\w+) -->\n(.*?)\n<!-- /bench:\1 -->", text, re.DOTALL)
    return {m.group(1): m.group(2) for m in found}


def stamp_of(section: str) -> Stamp:
    """The stamp in a section's machine line (``CPU: … x N logical cores``, ``edgeml revision: …``)."""
    cpu = re.search(r"CPU: (.+?) x (\d+) logical cores", section)
    revision = re.search(r"edgeml revision: ([\w.+-]*[\w+-])", section)  # not the sentence's full stop
    if cpu is None or revision is None:
        raise ValueError(f"a RESULTS.md section without its stamp (CPU and revision): {section[:200]}")
    return Stamp(revision.group(1), cpu.group(1), int(cpu.group(2)))
