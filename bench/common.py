"""Shared helpers for the benchmarks: the machine they ran on, results, tables, RESULTS.md.

Every benchmark runs edgeml and its peer side by side in the same run and reports a
ratio against a target. Each writes one section of ``bench/RESULTS.md``, between
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers, replacing only its own.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

__all__ = [
    "BENCH_DIR",
    "DATA_DIR",
    "RESULTS",
    "Machine",
    "Measurement",
    "describe_machine",
    "markdown_table",
    "text_table",
    "timed",
    "verdict",
    "write_section",
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


# -------------------------------------------------------------------------- RESULTS.md


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
