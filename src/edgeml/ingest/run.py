"""Bounded ingestion: read each source, enforce the schema, land the lake part by part.

Files become a Ray dataset of raw rows; one ``map_batches`` step coerces each block, writes
its clean rows (by date) and rejected rows (with reasons) to the object store as Parquet,
and returns only the metadata of what it wrote. SQL and HTTP sources are read in bounded
chunks (``fetchmany`` on a server-side cursor where the driver has one; pages gathered up to
a chunk) and each chunk is landed the same way as it arrives. The driver records each
source's parts in the catalog and takes a snapshot.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from edgeml.errors import SourceUnavailableError, UserError
from edgeml.ingest.coerce import coerce_batch
from edgeml.ingest.lake import (
    Part,
    Snapshot,
    record_source_parts,
    take_snapshot,
    write_clean_parts,
    write_quarantine_part,
)
from edgeml.settings import S3Settings, Settings, read_secret
from edgeml.spec.models import FileSource, HttpSource, MqttSource, Schema, Source, Spec, SqlSource
from edgeml.store import open_store, store_from_settings

__all__ = ["IngestReport", "SourceReport", "ingest"]

Progress = Callable[[str], None]


@dataclass
class SourceReport:
    """What one source delivered."""

    name: str
    kind: str
    rows_in: int = 0
    rows_clean: int = 0
    rows_quarantined: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    ignored_columns: set[str] = field(default_factory=set)
    parts: list[Part] = field(default_factory=list)
    quarantine: list[Part] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)
    seconds: float = 0.0


@dataclass
class IngestReport:
    dataset: str
    sources: list[SourceReport]
    snapshot: Snapshot
    skipped: list[str] = field(default_factory=list)


def _parse_jsonl(lines: Iterable[Any]) -> tuple[pd.DataFrame, list[str]]:
    records, bad = [], []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            bad.append(str(line))
            continue
        if isinstance(value, dict):
            records.append(value)
        else:
            bad.append(str(line))
    return pd.DataFrame.from_records(records), bad


def land_batch(
    batch: pd.DataFrame | Any,
    *,
    schema: Schema,
    dataset: str,
    source: str,
    timestamp: str | None,
    store_url: str,
    s3: S3Settings,
    jsonl: bool = False,
) -> pd.DataFrame:
    """Ray task body: coerce one block and write it; return one metadata row per file written."""
    import pyarrow as pa
    import ray

    store = open_store(store_url, s3)
    arrow = isinstance(batch, pa.Table)
    rows_in = batch.num_rows if arrow else len(batch)
    unparsable: list[str] = []
    if jsonl:
        batch, unparsable = _parse_jsonl(batch.column("text").to_pylist() if arrow else batch["text"])
        if not len(batch):  # no line parsed (all malformed, or an empty block): nothing has columns
            batch = pd.DataFrame(columns=list(schema.columns))
    result = coerce_batch(batch, schema, source=source)
    quarantine = result.quarantine
    if unparsable:
        extra = pa.table(
            {
                "source": [source] * len(unparsable),
                "reason": ["not a JSON object"] * len(unparsable),
                "row": unparsable,
            },
            schema=quarantine.schema,
        )
        quarantine = pa.concat_tables([quarantine, extra])
        result.problems["(line): not a JSON object"] += len(unparsable)
    parts = write_clean_parts(store, dataset, source, result.clean, timestamp)
    qpart = write_quarantine_part(store, dataset, source, quarantine)
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    rows = [
        {
            "kind": "batch",
            "key": "",
            "sha256": "",
            "rows": rows_in,
            "bytes": 0,
            "date": "",
            "node": node,
            "problems": json.dumps(result.problems),
            "ignored": json.dumps(result.ignored_columns),
        }
    ]
    for kind, part in [("clean", p) for p in parts] + ([("quarantine", qpart)] if qpart else []):
        rows.append(
            {
                "kind": kind,
                "key": part.key,
                "sha256": part.sha256,
                "rows": part.rows,
                "bytes": part.bytes,
                "date": part.date,
                "node": node,
                "problems": "{}",
                "ignored": "[]",
            }
        )
    return pd.DataFrame(rows)


def _sql_factory(source: SqlSource, spec: Spec) -> Callable[[], Any]:
    url = source.url
    password = (
        read_secret(source.password_env, purpose=f"source {source.name!r}") if source.password_env else None
    )
    if url.startswith("duckdb://"):
        path = url.removeprefix("duckdb://")
        path = path[1:] if path.startswith("//") else spec.resolve_path(path.removeprefix("/"))

        def duckdb_connection() -> Any:
            import duckdb

            return duckdb.connect(path, read_only=True)

        return duckdb_connection
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + spec.resolve_path(url.removeprefix("sqlite:///"))

    def sqlalchemy_connection() -> Any:
        import sqlalchemy

        target = sqlalchemy.engine.make_url(url)
        if password is not None:
            target = target.set(password=password)
        return sqlalchemy.create_engine(target).raw_connection()

    return sqlalchemy_connection


def _check_query(source: SqlSource, factory: Callable[[], Any]) -> None:
    """Run the query with LIMIT 0 in the driver: a bad query or database fails here, clearly."""
    try:
        conn = factory()
    except Exception as exc:
        raise SourceUnavailableError(f"source {source.name!r}: cannot open {source.url}: {exc}") from exc
    try:
        cursor = conn.cursor()
        cursor.execute(f"SELECT * FROM ({source.query}) AS edgeml_probe LIMIT 0")  # noqa: S608
    except Exception as exc:
        raise UserError(f"source {source.name!r}: the query failed: {exc}") from exc
    finally:
        conn.close()


def _dataset(source: Source, spec: Spec, settings: Settings, cpus: int) -> tuple[Any, bool]:
    """The raw Ray dataset of a file source, and whether its rows are JSON lines."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    if isinstance(source, FileSource):
        from edgeml.ingest.files import resolve_files

        files = resolve_files(source, spec, settings)
        blocks = max(1, min(len(files.paths) * 4, cpus))
        if source.format == "csv":
            strings = {name: pa.string() for name in spec.schema_.columns}
            return ray.data.read_csv(
                files.paths,
                filesystem=files.filesystem,
                override_num_blocks=blocks,
                parse_options=pacsv.ParseOptions(delimiter=source.delimiter),
                convert_options=pacsv.ConvertOptions(column_types=strings, strings_can_be_null=True),
            ), False
        if source.format == "parquet":
            return ray.data.read_parquet(
                files.paths, filesystem=files.filesystem, override_num_blocks=blocks
            ), False
        return ray.data.read_text(files.paths, filesystem=files.filesystem, override_num_blocks=blocks), True
    raise AssertionError(f"{source.kind} sources are read in chunks, not as a dataset")


#: rows an SQL or HTTP source lands at a time: the driver holds at most one chunk
CHUNK_ROWS = 50_000
#: rows of a file block coerced and landed at a time (a whole 128 MB block peaked near 900 MB)
LAND_ROWS = 200_000


def land_block(block: Any, **options: Any) -> pd.DataFrame:
    """Ray task body for one block of a file source: land it ``LAND_ROWS`` rows at a time.

    One task per block keeps the work spread over every node; slicing inside the task bounds
    what coercion holds at once.
    """
    slices = [block.slice(at, LAND_ROWS) for at in range(0, max(block.num_rows, 1), LAND_ROWS)]
    return pd.concat([land_batch(piece, **options) for piece in slices], ignore_index=True)


def _sql_chunks(source: SqlSource, spec: Spec) -> Iterator[pd.DataFrame]:
    """The query's rows, ``CHUNK_ROWS`` at a time (a server-side cursor where the driver has one)."""
    factory = _sql_factory(source, spec)
    _check_query(source, factory)
    conn = factory()
    try:
        try:
            cursor = conn.cursor(name="edgeml_ingest")  # psycopg: rows stay on the server until fetched
        except TypeError:
            cursor = conn.cursor()  # sqlite3, DuckDB: fetchmany streams already
        cursor.execute(source.query)
        columns = [d[0] for d in cursor.description]
        while rows := cursor.fetchmany(CHUNK_ROWS):
            yield pd.DataFrame.from_records(rows, columns=columns)
    finally:
        conn.close()


def _http_chunks(source: HttpSource) -> Iterator[pd.DataFrame]:
    """The API's records, pages gathered up to ``CHUNK_ROWS`` at a time."""
    from edgeml.ingest.http import fetch_records

    buffer: list[dict[str, Any]] = []
    for page in fetch_records(source):
        buffer.extend(page)
        if len(buffer) >= CHUNK_ROWS:
            yield pd.DataFrame.from_records(buffer)
            buffer = []
    if buffer:
        yield pd.DataFrame.from_records(buffer)


def _collect(report: SourceReport, meta: pd.DataFrame, source: Source) -> None:
    for row in meta.itertuples(index=False):
        report.nodes.add(str(row.node))
        if row.kind == "batch":
            report.rows_in += int(row.rows)
            report.problems.update(json.loads(row.problems))
            report.ignored_columns.update(json.loads(row.ignored))
            continue
        part = Part(str(row.key), str(row.sha256), int(row.rows), int(row.bytes), source.name, str(row.date))
        if row.kind == "clean":
            report.parts.append(part)
            report.rows_clean += part.rows
        else:
            report.quarantine.append(part)
            report.rows_quarantined += part.rows


def _ingest_source(source: Source, spec: Spec, settings: Settings, cpus: int) -> SourceReport:
    report = SourceReport(source.name, source.kind)
    start = time.perf_counter()
    options: dict[str, Any] = {
        "schema": spec.schema_,
        "dataset": spec.name,
        "source": source.name,
        "timestamp": spec.schema_.timestamp,
        "store_url": settings.store_url,
        "s3": settings.store.s3,
    }
    if isinstance(source, SqlSource | HttpSource):  # landed chunk by chunk, part by part
        chunks = _sql_chunks(source, spec) if isinstance(source, SqlSource) else _http_chunks(source)
        for chunk in chunks:
            _collect(report, land_batch(chunk, **options), source)
        report.seconds = time.perf_counter() - start
        return report
    ds, jsonl = _dataset(source, spec, settings, cpus)
    # Files arrive as Arrow and usually convert in Arrow (the pandas path explains bad rows).
    meta = ds.map_batches(
        land_block,
        batch_format="pyarrow",
        # one task per block: the read's blocks (sized to the cluster, capped by Ray Data's block
        # size) bound a task's memory and spread over every node; a fixed row count per batch
        # would bundle a small source's blocks into one task on one node
        batch_size=None,
        zero_copy_batch=False,
        fn_kwargs={**options, "jsonl": jsonl},
    ).to_pandas()
    _collect(report, meta, source)
    report.seconds = time.perf_counter() - start
    return report


def _transient(exc: BaseException) -> bool:
    """Whether a failed source read may succeed when tried again (network, disk, database down)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SourceUnavailableError | OSError):
            return True
        seen = getattr(seen, "cause", None) or seen.__cause__  # a Ray task error carries its cause
    return False


def _ingest_with_retries(
    source: Source,
    spec: Spec,
    settings: Settings,
    cpus: int,
    progress: Progress | None,
    sleep: Callable[[float], None] = time.sleep,
) -> SourceReport:
    """Read one source; retry a transient failure ``pipeline.retries`` times with doubling backoff."""
    retries, delay = spec.pipeline.retries, spec.pipeline.backoff_s
    for attempt in range(retries + 1):
        try:
            return _ingest_source(source, spec, settings, cpus)
        except Exception as exc:
            if attempt == retries or not _transient(exc):
                raise
            if progress:
                progress(f"source {source.name}: {exc}; retry {attempt + 1} of {retries} in {delay:g} s")
            sleep(delay * random.uniform(1.0, 1.25))  # noqa: S311 - jitter, not a secret
            delay *= 2
    raise AssertionError("unreachable")


def ingest(
    spec: Spec,
    settings: Settings,
    *,
    only: list[str] | None = None,
    progress: Progress | None = None,
    progress_bars: bool = True,
) -> IngestReport:
    """Ingest every bounded source of ``spec`` (or those named in ``only``) and take a snapshot.

    MQTT sources are streams: they land through ``edgeml ingest stream`` and are skipped here,
    but their parts already in the lake are part of the snapshot.
    """
    from edgeml.ingest.runtime import cluster_cpus, ray_session
    from edgeml.privacy.at_rest import require_encryption_at_rest

    names = {s.name for s in spec.sources}
    unknown = sorted(set(only or ()) - names)
    if unknown:
        raise UserError(
            f"no source named {', '.join(unknown)} in spec {spec.name!r}; it has {', '.join(sorted(names))}"
        )
    chosen = [s for s in spec.sources if not only or s.name in only]
    require_encryption_at_rest(spec, settings)  # before the store is opened: it may seal it
    store = store_from_settings(settings)
    reports: list[SourceReport] = []
    skipped = [s.name for s in chosen if isinstance(s, MqttSource)]
    with ray_session(settings.ray_address, progress_bars=progress_bars):
        cpus = cluster_cpus()
        for source in chosen:
            if isinstance(source, MqttSource):
                continue
            if progress:
                progress(f"reading {source.kind} source {source.name}")
            report = _ingest_with_retries(source, spec, settings, cpus, progress)
            record_source_parts(store, spec.name, source.name, report.parts, append=False)
            reports.append(report)
    snapshot = take_snapshot(store, spec)
    return IngestReport(spec.name, reports, snapshot, skipped)
