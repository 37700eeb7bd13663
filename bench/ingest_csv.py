"""CSV → Parquet lake throughput: edgeml ``ingest()`` against DuckDB, pandas beside them.

All three contenders convert the same cached CSV files (simulated pump readings) in the
same run, from a warm page cache, repetitions interleaved so background load hits them
alike; the best of N wall-clock times counts:

- **edgeml**: ``ingest()`` of a file source (Ray Data read, schema coercion with
  quarantine, date-partitioned zstd Parquet parts, content hashes, catalog, snapshot),
  into a fresh ``EDGEML_HOME`` each repetition, on a Ray started with 2 CPUs *before*
  the timer and warmed up by one small untimed ingest;
- **DuckDB** (the peer): ``COPY (SELECT * FROM read_csv([...])) TO '...' (FORMAT parquet)``
  with its defaults (all cores, type sniffing, snappy);
- **pandas**: ``read_csv`` (``ts`` parsed) + ``to_parquet`` per file, single-threaded.

Target: edgeml throughput ≥ 0.5× DuckDB's. The row count edgeml landed is checked three
ways (its report, the snapshot, the Parquet files on disk), and Ray's task timeline shows
how many map tasks the best edgeml run became and how many ran at once. ``--profile``
adds a stage-by-stage timing and a cProfile of one edgeml block (what one Ray task does).

    .venv/bin/python -m bench.ingest_csv [--files 16] [--rows-per-file 110000] [--repeat 3]
"""

from __future__ import annotations

import cProfile
import io
import json
import logging
import os
import pstats
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.common import (
    DATA_DIR,
    Measurement,
    Report,
    Table,
    example_spec,
    parser,
    smoke_sizes,
    start_ray,
    timed,
    trim_profile,
    verdict,
)

NAME = "ingest_csv"
TARGET = 0.5  # edgeml throughput / DuckDB throughput
MACHINES = 10  # pumps per file; each file is one day of the fleet
CACHE = DATA_DIR / NAME
BLOCK_STAGE = "land_batch on the Arrow block, whole (what the map task does)"
PANDAS_STAGE = "for contrast: coerce_batch on the same block as pandas (the pandas path)"
DIRTY_STAGE = "for contrast: coerce_batch on the Arrow block with one bad cell (falls back to pandas)"
READ_STAGE = "read CSV, all columns as strings (pyarrow, as Ray reads)"


def ingest_spec(folder: Path) -> Any:
    """examples/pump-faults.yaml reading the CSV files in ``folder`` (its plant historian's export)."""
    source = {"name": "history", "kind": "file", "path": str(folder / "*.csv"), "format": "csv"}
    return example_spec("pump-faults", sources=[source])


# ---------------------------------------------------------------------------- data


def _write_day(path: str, day: int, readings: int) -> int:
    """One CSV file: the fleet's readings of one day (msg_ids unique across files)."""
    import numpy as np

    from bench.common import SensorSimulation, simulate_sensors, write_csv

    sim = SensorSimulation(
        machines=MACHINES,
        readings=readings,
        interval_s=86_400 / readings,
        start=datetime(2026, 1, 5, tzinfo=UTC) + timedelta(days=day),
        seed=day,
    )
    cols = simulate_sensors(sim)
    cols["msg_id"] = np.char.add(f"d{day:03d}-", cols["msg_id"])
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as out:
        rows = write_csv(cols, out)
    os.replace(tmp, path)
    return rows


def ensure_data(files: int, rows_per_file: int) -> tuple[Path, list[str], int, int]:
    """The cached CSV files (generated when absent): folder, paths, total rows, total bytes."""
    readings = max(1, rows_per_file // MACHINES)
    folder = CACHE / f"v1-{files}x{readings * MACHINES}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        paths = [str(folder / name) for name in meta["files"]]
        if all(Path(p).exists() for p in paths):
            print(f"using cached data in {folder}")
            return folder, paths, meta["rows"], sum(Path(p).stat().st_size for p in paths)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names = [f"readings-{day:03d}.csv" for day in range(files)]
    workers = max(1, min(2, len(os.sched_getaffinity(0))))
    print(f"generating {files} CSV files x {readings * MACHINES:,} rows in {folder} ({workers} processes)...")
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        counts = list(
            pool.map(_write_day, [str(folder / n) for n in names], range(files), [readings] * files)
        )
    rows = sum(counts)
    manifest.write_text(json.dumps({"files": names, "rows": rows}), encoding="utf-8")
    paths = [str(folder / n) for n in names]
    size = sum(Path(p).stat().st_size for p in paths)
    print(f"  {rows:,} rows, {size / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s")
    return folder, paths, rows, size


def warm_page_cache(paths: list[str]) -> None:
    """Read every file once, untimed, so no contender pays for the disk and others not."""
    for path in paths:
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass


# ---------------------------------------------------------------------------- contenders


def warm_up_ray(paths: list[str], folder: Path) -> None:
    """One small untimed ingest, so Ray's worker processes exist and have imported edgeml."""
    folder.mkdir(parents=True)
    for i, path in enumerate(paths[:2]):
        with open(path, encoding="utf-8") as src:
            head = [line for _, line in zip(range(2_000), src, strict=False)]
        (folder / f"warm-{i}.csv").write_text("".join(head), encoding="utf-8")
    from bench.common import ingest, load_settings

    ingest(ingest_spec(folder), load_settings({"EDGEML_HOME": str(folder / "home")}), progress_bars=False)


def run_edgeml(spec: Any, home: Path, expected_rows: int) -> tuple[float, dict[str, Any]]:
    import pyarrow.parquet as pq

    from bench.common import ingest, load_settings

    settings = load_settings({"EDGEML_HOME": str(home)})
    seconds, report = timed(lambda: ingest(spec, settings, progress_bars=False))
    source = report.sources[0]  # type: ignore[attr-defined]
    # Independent check: count the rows of the Parquet parts actually on disk.
    on_disk = sum(pq.ParquetFile(p).metadata.num_rows for p in (home / "store" / "lake").rglob("*.parquet"))
    facts = {
        "rows_in": source.rows_in,
        "rows_clean": source.rows_clean,
        "rows_quarantined": source.rows_quarantined,
        "snapshot_rows": report.snapshot.rows,  # type: ignore[attr-defined]
        "parts": len(source.parts),
        "rows_on_disk": on_disk,
        "parquet_bytes": sum(p.bytes for p in source.parts),
    }
    if not (source.rows_clean == report.snapshot.rows == on_disk == expected_rows):  # type: ignore[attr-defined]
        raise SystemExit(f"edgeml landed the wrong number of rows: {facts}, expected {expected_rows:,}")
    return seconds, facts


def run_duckdb(paths: list[str], out: Path, expected_rows: int) -> float:
    import duckdb

    files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
    target = str(out).replace("'", "''")
    con = duckdb.connect()
    try:
        seconds, _ = timed(
            lambda: con.execute(
                f"COPY (SELECT * FROM read_csv([{files}])) TO '{target}' (FORMAT parquet)"
            ).fetchall()
        )
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()
    finally:
        con.close()
    if rows is None or rows[0] != expected_rows:
        raise SystemExit(f"DuckDB wrote {rows} rows, expected {expected_rows:,}")
    return seconds


def run_pandas(paths: list[str], out: Path, expected_rows: int) -> float:
    import pandas as pd

    out.mkdir()

    def convert() -> int:
        rows = 0
        for i, path in enumerate(paths):
            frame = pd.read_csv(path, parse_dates=["ts"])
            frame.to_parquet(out / f"part-{i:03d}.parquet")
            rows += len(frame)
        return rows

    seconds, rows = timed(convert)
    if rows != expected_rows:
        raise SystemExit(f"pandas converted {rows} rows, expected {expected_rows:,}")
    return seconds


# ---------------------------------------------------------------------------- profile


def ray_task_spans(start: float, end: float) -> list[tuple[float, float, str]]:
    """(start, end, worker) of the Ray Data map tasks that ran between ``start`` and ``end``.

    Read from Ray's task timeline, so edgeml needs no instrumentation: it shows how many
    tasks an ingest became and how many of them ran at once.
    """
    import ray

    quiet = logging.getLogger("ray._private.state")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # a notice about where future Ray versions read the timeline
    try:
        events = ray.timeline()
    finally:
        quiet.setLevel(level)
    spans = []
    for event in events:
        if event.get("ph") != "X" or "_map_task" not in str(event.get("name")):
            continue
        begin = event["ts"] / 1e6
        if start <= begin <= end:
            spans.append((begin, begin + event["dur"] / 1e6, str(event.get("tid", ""))))
    return sorted(spans)


def describe_tasks(spans: list[tuple[float, float, str]], wall: float, cpus: int) -> str:
    if not spans:
        return "Ray's task timeline held no map task for the best edgeml run."
    edges = sorted([(a, 1) for a, _, _ in spans] + [(b, -1) for _, b, _ in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    busy = sum(b - a for a, b, _ in spans)
    workers = len({w for _, _, w in spans})
    return (
        f"Ray ran the best edgeml run as {len(spans)} map task(s) (CSV read, coercion and writing fused) on "
        f"{workers} worker(s), at most {peak} at a time on {cpus} CPUs; the tasks were busy "
        f"{busy:.2f} task-seconds of the {wall:.2f} s wall-clock"
    )


def profile_block(
    spec: Any, path: str, home: Path
) -> tuple[list[tuple[str, float]], list[tuple[str, float]], str]:
    """What one Ray task does to one file, in-process and warm.

    Returns the stages as displayed, the non-overlapping ones (for "top costs") and a
    cProfile listing of ``land_batch``. Each stage is the best of 3 after a warm-up call.
    The block is handed over as Arrow, as Ray Data does for file sources
    (``batch_format="pyarrow"``); two contrast lines show what the pandas path costs.
    """
    import hashlib

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from bench.common import (
        coerce_batch,
        land_batch,
        load_settings,
        open_store,
        parquet_bytes,
        write_clean_parts,
    )

    schema = spec.schema_
    settings = load_settings({"EDGEML_HOME": str(home)})
    store = open_store(settings.store_url, settings.store.s3)
    strings = {name: pa.string() for name in schema.columns}
    times: dict[str, float] = {}

    def stage(name: str, fn: Any) -> Any:
        fn()  # warm-up: lazy imports, first-call caches
        runs = [timed(fn) for _ in range(3)]  # best of 3: the machine is shared
        times[name] = min(sec for sec, _ in runs)
        return runs[0][1]

    opts = pacsv.ConvertOptions(column_types=strings, strings_can_be_null=True)
    table = stage(READ_STAGE, lambda: pacsv.read_csv(path, convert_options=opts))
    coerce_name = "coerce_batch on the Arrow block"
    clean = stage(coerce_name, lambda: coerce_batch(table, schema, source="h")).clean
    data = stage("↳ Parquet encode (zstd)", lambda: parquet_bytes(clean))
    stage("↳ sha256 of the part", lambda: hashlib.sha256(data).hexdigest())
    write_name = "write_clean_parts, whole (date split + encode + hash + put)"
    stage(write_name, lambda: write_clean_parts(store, spec.name, "h", clean, schema.timestamp))
    kwargs: dict[str, Any] = {
        "schema": schema,
        "dataset": spec.name,
        "source": "h",
        "timestamp": schema.timestamp,
        "store_url": settings.store_url,
        "s3": settings.store.s3,
    }
    stage(BLOCK_STAGE, lambda: land_batch(table, **kwargs))
    # Contrast: the pandas path (SQL/HTTP sources, and any block holding one doubtful cell).
    frame = table.to_pandas()
    stage(PANDAS_STAGE, lambda: coerce_batch(frame, schema, source="h"))
    index = table.schema.get_field_index("temperature")
    values = table.column(index).to_pylist()
    values[len(values) // 2] = "n/a"
    dirty = table.set_column(index, "temperature", pa.array(values, pa.string()))
    dirty_result = stage(DIRTY_STAGE, lambda: coerce_batch(dirty, schema, source="h"))
    assert dirty_result.quarantine.num_rows == 1, "the bad cell should have been quarantined"

    shown = [
        READ_STAGE,
        coerce_name,
        "↳ Parquet encode (zstd)",
        "↳ sha256 of the part",
        write_name,
        BLOCK_STAGE,
        PANDAS_STAGE,
        DIRTY_STAGE,
    ]
    encode, digest = times["↳ Parquet encode (zstd)"], times["↳ sha256 of the part"]
    leaves = [
        ("read CSV as strings", times[READ_STAGE]),
        ("coerce_batch (Arrow path)", times[coerce_name]),
        ("Parquet encode (zstd)", encode),
        ("sha256", digest),
        ("rest of write_clean_parts (date split, put)", max(times[write_name] - encode - digest, 0.0)),
        ("rest of land_batch", max(times[BLOCK_STAGE] - times[coerce_name] - times[write_name], 0.0)),
    ]

    profiler = cProfile.Profile()
    profiler.enable()
    land_batch(table, **kwargs)
    profiler.disable()
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("tottime").print_stats(12)
    stats.sort_stats("cumulative").print_stats(16)
    return [(name, times[name]) for name in shown], leaves, buf.getvalue()


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__)
    cli.add_argument(
        "--files", type=int, default=16, help="CSV files to generate (one day of the fleet each)"
    )
    cli.add_argument(
        "--rows-per-file", type=int, default=110_000, help=f"rows per file (rounded down to {MACHINES} pumps)"
    )
    cli.add_argument("--repeat", type=int, default=3, help="repetitions per contender; the best counts")
    cli.add_argument(
        "--keep-data",
        action="store_true",
        help=f"keep the generated CSVs in {CACHE} for the next run (a kept set is reused); "
        "by default they are removed at the end",
    )
    cli.add_argument(
        "--profile", action="store_true", help="also cProfile one edgeml block and report where its time goes"
    )
    args = smoke_sizes(cli.parse_args(argv), files=2, rows_per_file=2_000, repeat=1, keep_data=False)
    if args.files < 1 or args.rows_per_file < MACHINES or args.repeat < 1:
        cli.error(f"--files and --repeat must be ≥ 1 and --rows-per-file ≥ {MACHINES}")

    report = Report(NAME, "CSV → Parquet ingest", args)
    folder, paths, rows, size = ensure_data(args.files, args.rows_per_file)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=DATA_DIR))
    spec = ingest_spec(folder)
    try:
        warm_page_cache(paths)
        print("starting Ray (num_cpus=2) and warming its workers up, not timed...")
        start_ray()
        warm_up_ray(paths, scratch / "warm-up")
        results = {
            "edgeml": Measurement("edgeml ingest()", rows, size),
            "duckdb": Measurement("DuckDB COPY read_csv → parquet (peer)", rows, size),
            "pandas": Measurement("pandas read_csv + to_parquet", rows, size),
        }
        facts: dict[str, Any] = {}
        windows: list[tuple[float, float]] = []  # wall-clock span of each edgeml run
        for rep in range(1, args.repeat + 1):
            home = scratch / f"edgeml-{rep}"
            window_start = time.time()
            seconds, facts = run_edgeml(spec, home, rows)
            windows.append((window_start, time.time()))
            results["edgeml"].seconds.append(seconds)
            shutil.rmtree(home)
            out = scratch / f"duckdb-{rep}.parquet"
            results["duckdb"].seconds.append(run_duckdb(paths, out, rows))
            out.unlink()
            out = scratch / f"pandas-{rep}"
            results["pandas"].seconds.append(run_pandas(paths, out, rows))
            shutil.rmtree(out)
            print(
                f"repetition {rep}/{args.repeat}: "
                + ", ".join(f"{k} {m.seconds[-1]:.2f} s" for k, m in results.items())
            )
        best_run = results["edgeml"].seconds.index(results["edgeml"].best)
        tasks = ray_task_spans(*windows[best_run])
        profile: tuple[list[tuple[str, float]], list[tuple[str, float]], str] | None = None
        if args.profile:
            print("profiling one edgeml block (one file, in-process)...")
            profile = profile_block(spec, paths[0], scratch / "profile")
    finally:
        try:
            import ray

            ray.shutdown()
        except ImportError:
            pass
        shutil.rmtree(scratch, ignore_errors=True)
        if not args.keep_data:
            shutil.rmtree(folder, ignore_errors=True)
            for empty in (CACHE, DATA_DIR):
                if empty.is_dir() and not any(empty.iterdir()):
                    empty.rmdir()
    report.measured()

    edg, duck = results["edgeml"], results["duckdb"]
    ratio = edg.mb_per_s / duck.mb_per_s
    headers = ["contender", "best s", "median s", "MB/s", "rows/s", "x DuckDB"]
    table_rows = [
        [
            m.name,
            f"{m.best:.2f}",
            f"{m.median:.2f}",
            f"{m.mb_per_s:.1f}",
            f"{m.rows_per_s:,.0f}",
            f"{m.mb_per_s / duck.mb_per_s:.2f}x",
        ]
        for m in results.values()
    ]
    checks = [["edgeml / DuckDB throughput", f"{ratio:.3f}x", f"≥ {TARGET:.2f}x", verdict(ratio, TARGET)]]
    landed = (
        f"edgeml landed {facts['rows_clean']:,} of {rows:,} rows ({facts['rows_quarantined']} quarantined) "
        f"in {facts['parts']} parts, {facts['parquet_bytes'] / 1e6:.1f} MB of Parquet; "
        f"snapshot rows {facts['snapshot_rows']:,}; "
        f"rows in the Parquet files on disk {facts['rows_on_disk']:,}: OK"
    )
    inputs = (
        f"{args.files} CSV files, {rows:,} rows, {size / 1e6:.1f} MB "
        f"(simulated pump readings, {MACHINES} pumps, one day per file), read with the schema of "
        "`examples/pump-faults.yaml`"
    )
    parts: list[str | Table] = [
        f"Input: {inputs}. Best of {args.repeat} wall-clock runs each, page cache warm, repetitions "
        "interleaved (edgeml, DuckDB, pandas, edgeml, ...). edgeml runs `ingest()` on a Ray started "
        "with `num_cpus=2` before the timer (its workers warmed up by one small untimed ingest), into a "
        "fresh `EDGEML_HOME` each time; DuckDB uses its "
        "defaults (all cores, type sniffing, which finds the same types edgeml enforces: VARCHAR, "
        "TIMESTAMPTZ, DOUBLE, BOOLEAN; snappy) and writes one file; pandas is single-threaded.",
        Table(headers, table_rows),
        report.checks(checks),
        landed + ".",
        describe_tasks(tasks, edg.best, 2) + ".",
    ]
    if profile is not None:
        stages, leaves, text = profile
        per_file = dict(stages)[READ_STAGE] + dict(stages)[BLOCK_STAGE]
        total = sum(sec for _, sec in leaves)
        top = sorted(leaves, key=lambda x: -x[1])[:4]
        estimate_top = "Top costs per file: " + "; ".join(f"{n} {sec / total:.0%}" for n, sec in top)
        cores = 2
        estimate = (
            f"One file costs {per_file:.3f} s of CPU in-process (read + land_batch); x {args.files} files / "
            f"{cores} cores = {per_file * args.files / cores:.2f} s if Ray added nothing, against "
            f"{edg.best:.2f} s measured; DuckDB needs {duck.best:.2f} s for everything. {estimate_top}."
        )
        print("\ncProfile of land_batch on one block (one file, as one Ray task would see it):")
        print(trim_profile(text))
        parts += [
            "### Where edgeml's time goes (`--profile`)",
            "One file (one day, "
            f"{rows // args.files:,} rows) put through what one Ray task does, in-process and warm "
            "(best of 3 per stage), handed over as Arrow like Ray Data does for file sources "
            "(lines marked ↳ are parts of the 'whole' line below them):",
            Table(["stage", "seconds"], [[n, f"{s:.3f}"] for n, s in stages]),
            estimate,
        ]
    report.publish(parts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
