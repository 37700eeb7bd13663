"""The telemetry file: its tables, how it is opened, and how an older file is brought up to date.

Tables
------
``batches``
    One row per accepted batch: ``seq`` (store-assigned, joins the child tables),
    ``device_id`` + ``batch_id`` (primary key: the idempotency key), model, version, profile,
    ``device_group``, window start and end, row/request counts, ``errors`` (JSON), the
    spool drops it reports, calibrated-row count and expected-correct sum (CBPE),
    ``received_at``, ``body_sha256`` (of the batch's canonical JSON) and ``payload``: that
    JSON without the histograms the two tables below hold (their names only, in order; see
    :func:`~edgeml.telemetry.db.batch_group.payload_of`), from which, with those rows,
    :meth:`DuckDBStore.batches <edgeml.telemetry.db.store.DuckDBStore.batches>` rebuilds the
    exact :class:`~edgeml.telemetry.schema.TelemetryBatch` the device sent.
``batch_features``
    One row per batch and feature: reference ``edges`` or ``categories``, ``counts`` (a list,
    one per bin), ``missing``, ``out_of_range``, and ``bins``: a fingerprint of the edges or
    categories (DuckDB's ``hash``, computed as the row is written), so that a query can check
    that batches agree on their bins without reading them.
``batch_scores``
    One row per batch and score histogram (``probability:<class>``, ...): ``edges``, ``counts``,
    ``missing`` and the ``bins`` fingerprint.
``batch_labels``
    One row per batch and class: ``predicted`` count and ``calibrated_sum`` (label-free
    accuracy estimation needs these per class).
``devices``
    The fleet: id, group, profile, model, sha256 of its token (never the token),
    registered/decommissioned times, last seen, the model version it last reported serving,
    spool drops it reported in total.
``feedback``
    Ground-truth labels by prediction id (the latest per id counts), with what was
    predicted when the caller knows it.
``predictions``
    The devices' prediction logs: per prediction id (the first one received counts) the model,
    version, device, when it answered, the inputs its compliance mode let leave it (JSON) and
    what it predicted; a label is joined with its row here.

A file written before ``batch_scores`` and ``bins`` existed gets them when it is opened
(once; the score histograms are read from the payloads): ``meta`` holds the schema version.
Payloads are compressed with zstd (see :func:`payload_compression`). The file is attached
with row groups of ``ROW_GROUP_ROWS``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from edgeml.errors import StoreConfigError
from edgeml.telemetry.db.batch_group import BATCH_TYPES, FEATURE_TYPES, LABEL_TYPES, SCORE_TYPES
from edgeml.telemetry.db.sealed import load_crypto

__all__ = [
    "CATALOG",
    "DEFAULT_MEMORY_LIMIT",
    "check_columns",
    "connect",
    "create",
    "from_us",
    "insert",
    "migrate",
    "payload_compression",
    "select_list",
]

#: DuckDB's buffer pool. It keeps every block written in memory until it reaches this (DuckDB's
#: own default is 80% of RAM), so a node taking telemetry grows by ~3 MB per 1,000 batches up to
#: it; pooling a day of 1,000 devices (``pooled_windows``) runs as fast with 1 GB as unbounded,
#: and spills (~6× slower) with 256 MB. The blocks are in the OS page cache anyway. The central
#: node's config sets it (``db_memory``).
DEFAULT_MEMORY_LIMIT = "1GB"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq BIGINT NOT NULL,
    device_id VARCHAR NOT NULL,
    batch_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    profile VARCHAR NOT NULL,
    device_group VARCHAR,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    row_count BIGINT NOT NULL,
    request_count BIGINT NOT NULL,
    errors JSON NOT NULL,
    dropped_before BIGINT NOT NULL,
    calibrated_rows BIGINT,
    expected_correct DOUBLE,
    received_at TIMESTAMPTZ NOT NULL,
    body_sha256 VARCHAR NOT NULL,
    payload VARCHAR NOT NULL USING COMPRESSION zstd,
    PRIMARY KEY (device_id, batch_id)
);
CREATE TABLE IF NOT EXISTS batch_features (
    seq BIGINT NOT NULL,
    feature VARCHAR NOT NULL,
    edges DOUBLE[],
    categories VARCHAR[],
    counts BIGINT[] NOT NULL,
    missing BIGINT NOT NULL,
    out_of_range BIGINT NOT NULL,
    bins UBIGINT
);
CREATE TABLE IF NOT EXISTS batch_scores (
    seq BIGINT NOT NULL,
    score VARCHAR NOT NULL,
    edges DOUBLE[] NOT NULL,
    counts BIGINT[] NOT NULL,
    missing BIGINT NOT NULL,
    bins UBIGINT
);
CREATE TABLE IF NOT EXISTS batch_labels (
    seq BIGINT NOT NULL,
    label VARCHAR NOT NULL,
    predicted BIGINT NOT NULL,
    calibrated_sum DOUBLE
);
CREATE TABLE IF NOT EXISTS devices (
    device_id VARCHAR NOT NULL,
    device_group VARCHAR,
    profile VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    token_sha256 VARCHAR NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    decommissioned_at TIMESTAMPTZ,
    last_seen TIMESTAMPTZ,
    last_window_end TIMESTAMPTZ,
    serving_model VARCHAR,
    serving_version INTEGER,
    dropped_total BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id VARCHAR NOT NULL,
    label VARCHAR NOT NULL,
    predicted VARCHAR,
    model VARCHAR,
    version INTEGER,
    device_id VARCHAR,
    received_at TIMESTAMPTZ NOT NULL,
    source VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions (
    prediction_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    device_id VARCHAR NOT NULL,
    predicted_at TIMESTAMPTZ NOT NULL,
    inputs VARCHAR NOT NULL,
    prediction VARCHAR,
    traceparent VARCHAR,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL);
"""
#: ``meta`` key of the schema's version: absent in files written before ``batch_scores`` and ``bins``
_SCHEMA_KEY = "schema"
_SCHEMA_VERSION = "2"
#: the ``bins`` fingerprints: equal bins, equal fingerprint (computed by DuckDB as rows are written)
_FEATURE_BINS = "hash(edges, categories)"
_SCORE_BINS = "hash(edges)"


#: write-ahead log size that makes DuckDB checkpoint (its default is 16 MB). A checkpoint
#: compresses and rewrites the table's last, partly filled row groups; at 16 MB that
#: happened every ~800 batches and cost a third of the write path's CPU. A larger log takes
#: longer to replay at start-up after a crash, and stays in the buffer pool until written.
CHECKPOINT_WAL = "128MB"
#: seconds to wait for another process's lock on the database file to go
LOCK_WAIT_S = 30.0
#: rows per row group of the telemetry file (DuckDB's default is 122,880). A checkpoint rewrote
#: more and more of the last row groups as they filled: with ``batch_features`` growing 20 rows
#: a batch, its stalls grew from 0.2 to over 1 s every few seconds of ingest. At this size they
#: stay flat, at ~25 µs a batch; a day of a fleet is pooled as fast.
ROW_GROUP_ROWS = 16_384
#: the name the telemetry file is attached as: every connection of the store uses it
CATALOG = "telemetry"


def from_us(value: int | None) -> datetime | None:
    """A timestamp as ``epoch_us()`` reads it back."""
    return None if value is None else EPOCH + timedelta(microseconds=value)


def create(con: duckdb.DuckDBPyConnection) -> None:
    """The tables, brought up to this version's schema and checked."""
    con.execute(_SCHEMA)
    migrate(con)
    check_columns(con)
    payload_compression(con)


def connect(
    path: Path, memory_limit: str, encryption_key: str | None = None, unsafe_crypto: bool | None = None
) -> duckdb.DuckDBPyConnection:
    """The database (attached as ``CATALOG``, the default), once no other process holds it.

    With ``encryption_key`` (a sealed file, :mod:`.sealed`) DuckDB encrypts the file, its log
    and its spill files.

    A node killed (or restarted) leaves its store process finishing the writes it had
    queued, which takes a moment; a new node waits for it rather than failing.
    """
    deadline = time.monotonic() + LOCK_WAIT_S
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": memory_limit,
        "checkpoint_threshold": CHECKPOINT_WAL,
        # where DuckDB spills beyond memory_limit: beside the file, as when a file is opened directly
        # (an in-memory connection would spill into the working directory, read-only under systemd)
        "temp_directory": f"{path}.tmp",
    }
    con = duckdb.connect(config=config)
    quoted = str(path).replace("'", "''")
    options = f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}"
    if encryption_key is not None:
        load_crypto(con, unsafe_crypto)
        options += f", ENCRYPTION_KEY '{encryption_key}'"  # hex: nothing to quote
    while True:
        try:
            con.execute(f"ATTACH '{quoted}' AS {CATALOG} ({options})")
        except duckdb.IOException as exc:
            if "newer version of duckdb" in str(exc).lower():
                con.close()
                raise StoreConfigError(
                    f"telemetry file {path} was written by a newer DuckDB than this node's "
                    f"{duckdb.__version__}: {str(exc).splitlines()[0]}",
                    hint="start the node on a new telemetry file (`db_path` in central.yaml), or move the "
                    "rows over with the newer DuckDB's EXPORT DATABASE and this one's IMPORT DATABASE",
                ) from exc
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                con.close()
                raise
            time.sleep(0.1)
        except (duckdb.CatalogException, duckdb.InvalidInputException) as exc:
            con.close()
            if "encrypt" not in str(exc).lower():
                raise
            # a sealed file without its marker or key, a clear file with one, or the wrong key
            raise StoreConfigError(f"telemetry file {path}: {str(exc).splitlines()[0]}") from exc
        else:
            con.execute(f"USE {CATALOG}")
            return con


def insert(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    """Append ``data`` (columns in the table's order, see :data:`_COLUMNS`) to ``table``."""
    if data.num_rows:
        con.from_arrow(data).project(select_list(table)).insert_into(table)


def select_list(table: str, first_seq: int = 0) -> str:
    """The columns of ``table`` in order, from an Arrow table of :data:`_COLUMNS`, bins computed.

    ``seq``, where the table has it, is offset by ``first_seq``.
    """
    bins = _BINS.get(table)

    def column(name: str) -> str:
        if name == "bins" and bins:
            return f"{bins} AS bins"
        return f"seq + {int(first_seq)} AS seq" if name == "seq" and first_seq else f'"{name}"'

    return ", ".join(column(c) for c in _COLUMNS[table])


def check_columns(con: duckdb.DuckDBPyConnection) -> None:
    """:func:`insert` appends by position: the tables must have the columns it expects, in order."""
    for table, expected in _COLUMNS.items():
        found = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main' "
                "ORDER BY column_index",
                [table],
            ).fetchall()
        ]
        if found != expected:
            raise RuntimeError(f"table {table} has columns {found}, this version writes {expected}")


def payload_compression(con: duckdb.DuckDBPyConnection) -> None:
    """Payloads (kilobytes of JSON each) are compressed with zstd, never DICT_FSST.

    DuckDB's default for strings analyses them for DICT_FSST at every checkpoint, which on
    payloads is ~15× slower than zstd: a checkpoint every few seconds stalled the writer for
    seconds. Files created with this schema say so per column; for an older file the method
    is turned off for the whole database (its short strings are then stored uncompressed).
    """
    sql = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'batches'").fetchall()[0][0]
    if "USING COMPRESSION ZSTD" not in sql.upper():
        con.execute("SET disabled_compression_methods = 'dict_fsst'")


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a file written before schema 2 up to it, once: ``bins`` fingerprints, ``batch_scores``.

    Score histograms were only in the payloads then: they are read from there (DuckDB parses
    the JSON; its doubles are the ones the payload holds, bit for bit).
    """
    found = con.execute("SELECT value FROM meta WHERE key = ?", [_SCHEMA_KEY]).fetchall()
    if found:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        columns = con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'batch_features'"
        ).fetchall()
        if ("bins",) not in columns:
            con.execute("ALTER TABLE batch_features ADD COLUMN bins UBIGINT")
        con.execute(f"UPDATE batch_features SET bins = {_FEATURE_BINS} WHERE bins IS NULL")  # noqa: S608 (constant)
        con.execute(
            "INSERT INTO batch_scores (seq, score, edges, counts, missing, bins) "  # noqa: S608 (constant)
            f"SELECT seq, key, edges, counts, missing, {_SCORE_BINS} FROM ("
            "  SELECT b.seq, s.key, (s.value->'edges')::DOUBLE[] AS edges,"
            "    (s.value->'counts')::BIGINT[] AS counts, (s.value->>'missing')::BIGINT AS missing, s.id"
            "  FROM batches b, json_each(b.payload::JSON->'scores') s"
            "  WHERE b.seq NOT IN (SELECT seq FROM batch_scores))"
            " ORDER BY seq, id"  # as ingestion writes them: batch by batch, in the payload's order
        )
        con.execute("INSERT INTO meta VALUES (?, ?)", [_SCHEMA_KEY, _SCHEMA_VERSION])
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


#: the tables :func:`insert` appends to, their columns in order (``insert_into`` is positional)
_COLUMNS: dict[str, list[str]] = {
    "batches": list(BATCH_TYPES),
    "batch_features": [*FEATURE_TYPES, "bins"],
    "batch_scores": [*SCORE_TYPES, "bins"],
    "batch_labels": list(LABEL_TYPES),
    "feedback": [
        "prediction_id",
        "label",
        "predicted",
        "model",
        "version",
        "device_id",
        "received_at",
        "source",
    ],
    "predictions": [
        "prediction_id",
        "model",
        "version",
        "device_id",
        "predicted_at",
        "inputs",
        "prediction",
        "traceparent",
        "received_at",
    ],
}
_BINS = {"batch_features": _FEATURE_BINS, "batch_scores": _SCORE_BINS}
