"""Memory of the data stages as data grows, and validation against DuckDB on the same Parquet parts.

Targets (issue #23):

- **sub-linear memory**: the same pipeline on a source 10x larger has a peak RSS (largest
  single process, over the process tree: the driver and every Ray process it started) at most
  1.5x the smaller run's; on a 2 GB source every process stays under 1 GB;
- **validation throughput**: edgeml's validation (one task per lake part, writing the valid rows
  and the quarantine) is at least 0.5x DuckDB evaluating the same expectations as SQL over the
  same Parquet parts (``memory_limit`` 512 MB, a ``temp_directory`` to spill to), also writing
  the valid rows out as Parquet.

How: a generated CSV of sensor readings (several machines, one reading a second each, some
bad values) of each size goes through ``ingest`` → ``validate`` → ``build_features`` → the
training split (``load_training_data``, data_volume medium: a sample of each split), all in one
driver process with a local Ray, as ``edgeml pipeline run`` does. A thread samples the RSS of
every process in the driver's tree every 0.1 s and keeps, per stage, the largest single
process and the largest sum. Each size runs in a fresh driver process.

    .venv/bin/python bench/pipeline_memory.py [--sizes-mb 200 2000] [--smoke]

``--smoke`` runs 4 MB and 40 MB (a minute or two) and writes nothing to RESULTS.md. Do not run
the 2 GB size on a shared machine: it needs ~6 GB of disk and minutes of both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    describe_machine,
    load_average,
    markdown_table,
    section_head,
    text_table,
    verdict,
    write_section,
)

NAME = "pipeline_memory"
GROWTH_TARGET = 1.5  # peak RSS ratio, larger size over smaller (10x the data)
DUCKDB_TARGET = 0.5  # edgeml validation rows/s over DuckDB's
RSS_BOUND_MB = 1024.0
FAULTS = ["ok", "bearing_wear", "overheating", "pressure_leak"]

SPEC = """\
name: bench-pumps
sources:
  - {{name: history, kind: file, path: {csv}}}
schema:
  timestamp: ts
  entity: machine_id
  columns:
    msg_id: {{type: string, nullable: false}}
    ts: {{type: timestamp, nullable: false}}
    machine_id: {{type: string, nullable: false}}
    temperature: {{type: float, min: -40, max: 150}}
    vibration: {{type: float}}
    pressure: {{type: float}}
    rpm: {{type: float}}
    power_kw: {{type: float}}
    fault: {{type: category, values: [ok, bearing_wear, overheating, pressure_leak], nullable: false}}
expectations:
  - {{kind: unique, columns: [msg_id], severity: warn}}
  - {{kind: not_null, column: power_kw, severity: warn}}
  - {{kind: between, column: vibration, min: 0, max: 50, severity: warn}}
  - {{kind: in_set, column: fault, values: [ok, bearing_wear, overheating, pressure_leak]}}
  - {{kind: regex, column: machine_id, pattern: 'pump-[0-9]{{3}}'}}
features:
  window:
    - {{name: temp_mean_10, column: temperature, agg: mean, size: 10}}
    - {{name: vib_max_1m, column: vibration, agg: max, span: 1m}}
  row:
    - {{name: log_rpm, expr: "log1p(rpm)"}}
target: fault
task: classification
search: {{families: [random_forest], trials: 1}}
pipeline: {{data_volume: medium, sample_rows: 200000}}
"""

DRIVER = r"""
import json, sys, threading, time
import psutil
from edgeml.features.build import build_features
from edgeml.ingest.run import ingest
from edgeml.ingest.runtime import ray_session
from edgeml.settings import load_settings
from edgeml.spec import load_spec
from edgeml.train.data import load_training_data
from edgeml.validate import validate

spec = load_spec(sys.argv[1])
settings = load_settings({"EDGEML_HOME": sys.argv[2]})
me = psutil.Process()
peaks, stage = {}, ["start"]
stop = threading.Event()

def sample():
    while not stop.wait(0.1):
        total, top = 0.0, 0.0
        for proc in [me, *me.children(recursive=True)]:
            try:
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            total, top = total + rss, max(top, rss)
        old = peaks.get(stage[0], (0.0, 0.0))
        peaks[stage[0]] = (max(old[0], top), max(old[1], total))

threading.Thread(target=sample, daemon=True).start()
seconds, rows = {}, {}
with ray_session(None, progress_bars=False):
    def run(name, fn):
        stage[0] = name
        t = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - t
        return out
    snap = run("ingest", lambda: ingest(spec, settings, progress_bars=False).snapshot)
    rows["ingest"] = snap.rows
    report = run("validate", lambda: validate(spec, settings))
    rows["validate"] = report.rows
    features = run("features", lambda: build_features(spec, settings))
    rows["features"] = features.rows
    data = run("train split", lambda: load_training_data(spec, settings))
    rows["train split"] = data.rows_total
    stage[0] = "end"
time.sleep(0.3)
stop.set()
parts = [str(settings.home / "store" / p.key) for p in snap.parts]
print(json.dumps({"seconds": seconds, "rows": rows, "peaks": peaks, "parts": parts,
                  "valid": report.rows_valid, "sample": data.sizes()}))
"""


def write_csv(path: Path, target_mb: float, seed: int = 0) -> int:
    """Sensor readings until the file reaches ``target_mb``; about 1 in 2,000 values is bad."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    # ~75 bytes a row: chunks of about a tenth of the target (at most 200,000 rows)
    chunk = max(5_000, min(200_000, int(target_mb * 2**20 / 75 / 10)))
    machines, written, start = 50, 0, np.datetime64("2026-01-01T00:00:00", "s")
    with path.open("wb") as out:
        while out.tell() < target_mb * 2**20:
            i = np.arange(written, written + chunk)
            temperature = rng.normal(60, 15, chunk).round(2)
            temperature[rng.random(chunk) < 0.0005] = 999.0  # out of the schema's range: quarantined
            power = rng.normal(20, 4, chunk).round(3)
            power[rng.random(chunk) < 0.0005] = np.nan
            table = pa.table(
                {
                    "msg_id": pa.array(np.char.add("m", i.astype(str))),
                    "ts": pa.array(start + (i // machines).astype("timedelta64[s]")),
                    "machine_id": pa.array(
                        np.array([f"pump-{k:03d}" for k in range(machines)])[i % machines]
                    ),
                    "temperature": temperature,
                    "vibration": rng.gamma(2, 2, chunk).round(3),
                    "pressure": rng.normal(6, 1, chunk).round(3),
                    "rpm": rng.normal(1800, 200, chunk).round(1),
                    "power_kw": power,
                    "fault": pa.array(np.array(FAULTS)[rng.choice(4, chunk, p=[0.85, 0.05, 0.05, 0.05])]),
                }
            )
            pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=written == 0))
            written += chunk
    return written


def run_size(size_mb: float, scratch: Path) -> dict[str, Any]:
    folder = scratch / f"{size_mb:g}mb"
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "readings.csv"
    rows = write_csv(csv, size_mb)
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(csv=csv), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("EDGEML_")}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(spec), str(folder / "home")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"the {size_mb:g} MB run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["csv_mb"] = csv.stat().st_size / 2**20
    result["csv_rows"] = rows
    result["duckdb"] = duckdb_validation(result["parts"], folder)
    return result


def duckdb_validation(parts: list[str], folder: Path) -> dict[str, float]:
    """The same expectations as SQL over the same Parquet parts; the valid rows written as Parquet."""
    import duckdb

    files = "[" + ", ".join(f"'{p}'" for p in parts) + "]"
    con = duckdb.connect()
    con.execute("SET memory_limit = '512MB'")
    con.execute(f"SET temp_directory = '{folder / 'duckdb.tmp'}'")
    start = time.perf_counter()
    counts = con.execute(
        f"""
        SELECT count(*),
               count(*) - count(DISTINCT msg_id),
               count(*) FILTER (WHERE power_kw IS NULL),
               count(*) FILTER (WHERE vibration < 0 OR vibration > 50),
               count(*) FILTER (WHERE fault NOT IN ('ok', 'bearing_wear', 'overheating', 'pressure_leak')),
               count(*) FILTER (WHERE NOT regexp_full_match(machine_id, 'pump-[0-9]{{3}}'))
        FROM read_parquet({files})
        """
    ).fetchone()
    con.execute(
        f"""
        COPY (
            SELECT * EXCLUDE (rn) FROM (
                SELECT *, row_number() OVER (PARTITION BY msg_id) AS rn FROM read_parquet({files})
            )
            WHERE rn = 1 AND power_kw IS NOT NULL AND vibration BETWEEN 0 AND 50
              AND fault IN ('ok', 'bearing_wear', 'overheating', 'pressure_leak')
              AND regexp_full_match(machine_id, 'pump-[0-9]{{3}}')
        ) TO '{folder / "duckdb-valid"}' (FORMAT parquet, PER_THREAD_OUTPUT true, OVERWRITE true)
        """
    )
    seconds = time.perf_counter() - start
    con.close()
    assert counts is not None
    return {"seconds": seconds, "rows": float(counts[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", type=float, nargs=2, default=[200.0, 2000.0])
    parser.add_argument("--smoke", action="store_true", help="4 and 40 MB; nothing written to RESULTS.md")
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()
    sizes = [4.0, 40.0] if args.smoke else args.sizes_mb
    machine = describe_machine()
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="edgeml-bench-mem-", dir=args.scratch) as tmp:
        results = [run_size(size, Path(tmp)) for size in sizes]
    small, large = results
    stages = list(small["seconds"])
    rows = []
    for r in results:
        for stage in stages:
            top, total = r["peaks"].get(stage, (0.0, 0.0))
            rate = r["rows"][stage] / r["seconds"][stage]
            rows.append(
                [
                    f"{r['csv_mb']:.0f} MB",
                    stage,
                    f"{r['rows'][stage]:,}",
                    f"{rate:,.0f}",
                    f"{top:,.0f}",
                    f"{total:,.0f}",
                ]
            )
    headers = ["source", "stage", "rows", "rows/s", "peak RSS, largest process (MB)", "peak RSS, tree (MB)"]
    peak = [max(p[0] for p in r["peaks"].values()) for r in results]
    growth = peak[1] / peak[0]
    ours = large["rows"]["validate"] / large["seconds"]["validate"]
    theirs = large["duckdb"]["rows"] / large["duckdb"]["seconds"]
    summary = [
        ["data ratio", f"{large['csv_mb'] / small['csv_mb']:.1f}x"],
        [
            "peak RSS ratio (largest process)",
            f"{growth:.2f}x (target ≤ {GROWTH_TARGET}x): "
            + verdict(growth, GROWTH_TARGET, higher_is_better=False),
        ],
        [
            "largest process, larger run",
            f"{peak[1]:,.0f} MB (bound {RSS_BOUND_MB:,.0f} MB): "
            + verdict(peak[1], RSS_BOUND_MB, higher_is_better=False),
        ],
        [
            "validation rows/s, edgeml / DuckDB SQL",
            f"{ours:,.0f} / {theirs:,.0f} = {ours / theirs:.2f}x "
            f"(target ≥ {DUCKDB_TARGET}x): " + verdict(ours / theirs, DUCKDB_TARGET),
        ],
    ]
    print(text_table(headers, rows))
    print(text_table(["measure", "value"], summary))
    if args.smoke:
        return
    body = [
        section_head(
            "Memory of the data stages as data grows; validation vs DuckDB SQL",
            "pipeline_memory.py",
            machine,
            load_start,
            load_average(),
            ["--sizes-mb", *(f"{s:g}" for s in sizes)],
        ),
        markdown_table(headers, rows),
        "",
        markdown_table(["measure", "value"], summary),
    ]
    write_section(NAME, "\n".join(body))


if __name__ == "__main__":
    main()
