"""Shared helpers for the benchmarks: the machine they ran on, results, tables, RESULTS.md.

Every benchmark runs edgeml and its peer side by side in the same run and reports a
ratio against a target. Each writes one section of ``bench/RESULTS.md``, between
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers, replacing only its own;
:func:`section_head` writes the lines every section starts with (title, command, machine).

HTTP serving benchmarks share the load side: :func:`post_load` runs wrk (one thread, keep-alive
connections, one JSON body POSTed over and over) after a check request and a warm-up, and
:func:`server_process` starts a server in a subprocess and waits for its health route.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

__all__ = [
    "BENCH_DIR",
    "DATA_DIR",
    "LOAD_HEADERS",
    "RESULTS",
    "Load",
    "Machine",
    "Measurement",
    "describe_machine",
    "free_port",
    "load_rows",
    "markdown_table",
    "median_load",
    "post_load",
    "section_head",
    "server_process",
    "text_table",
    "timed",
    "verdict",
    "wait_until_ready",
    "write_section",
    "wrk_post",
]

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / ".data"  # generated inputs and scratch output (git-ignored)
RESULTS = BENCH_DIR / "RESULTS.md"

_PACKAGES = ("edgeml", "ray", "pyarrow", "pandas", "numpy", "duckdb", "paho-mqtt")
_HEADER = """# Benchmark results

Written by the scripts in `bench/` (each one replaces only its own section). Every
benchmark runs edgeml and its peer in the same run, on the same input, and reports the
ratio against a target. Absolute figures depend on the machine; the ratios are the claim.

**Caveat:** unless a section says otherwise, these figures come from a *shared 2-core
machine* on which other jobs (test suites, type checkers, other Ray clusters) were running
at the same time. Load average at the start and end of each run is recorded; treat small
differences as noise and re-run on a quiet machine before drawing fine conclusions.
"""


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


def describe_machine(packages: Sequence[str] = _PACKAGES, **extra: str) -> Machine:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
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


LOAD_HEADERS = ["server", "requests/s", "p50 ms", "p99 ms", "requests", "errors"]
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _lua_post(body: str, scratch: Path) -> Path:
    """A wrk script POSTing ``body`` as JSON (a Lua long string: no escaping to get wrong)."""
    level = 0
    while f"]{'=' * level}]" in body:
        level += 1
    script = scratch / "post.lua"
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = [{'=' * level}[{body}]{'=' * level}]\n"
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


# ------------------------------------------------------------------------ server processes


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@contextmanager
def server_process(
    argv: Sequence[str],
    health_url: str,
    *,
    cpu: int | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "server",
    timeout_s: float = 120,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess, once ``health_url`` answers 200; terminated (then killed) on exit.

    ``cpu`` pins it, and every process it starts, to that CPU (``taskset``). The venv's ``bin``
    goes first on PATH, for servers that start tools by name (``mlflow models serve`` runs
    ``uvicorn``) when the venv is not activated.
    """
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    full_env = {**os.environ, **(env or {}), "PATH": path}
    command = [*argv] if cpu is None else ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.Popen(command, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_ready(health_url, timeout_s=timeout_s, proc=proc, name=name)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -------------------------------------------------------------------------- RESULTS.md


def section_head(
    title: str, script: str, machine: Machine, load_before: str, load_after: str, argv: Sequence[str] = ()
) -> str:
    """The lines a RESULTS.md section starts with: title, the command run and when, the machine."""
    command = " ".join([".venv/bin/python", f"bench/{script}", *argv])
    return "\n".join(
        [
            f"## {title} (`bench/{script}`)",
            "",
            f"Run {now_utc()}: `{command}`",
            "",
            f"Machine: {'; '.join(machine.lines())}; load average before {load_before}, after {load_after}.",
        ]
    )


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Add or replace the section ``name`` of RESULTS.md, leaving the others as they are."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    tmp.replace(path)
