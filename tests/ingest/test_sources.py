"""``ingest()`` end to end on a local Ray: every bounded source kind lands typed rows in the lake."""

from __future__ import annotations

import csv
import json
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeml.errors import UserError
from edgeml.ingest.coerce import arrow_schema
from edgeml.ingest.lake import list_snapshots, read_parts
from edgeml.ingest.run import IngestReport, SourceReport, ingest
from edgeml.settings import Settings, StoreSettings
from edgeml.simulate.sensors import SensorSimulation, simulate_sensors, write_jsonl
from edgeml.spec import Spec
from edgeml.store import store_from_settings

pytestmark = pytest.mark.usefixtures("ray_local")

SpecFactory = Callable[..., Spec]
CsvFactory = Callable[..., tuple[list[Path], int]]
CATEGORIES = {"ok", "bearing_wear", "overheating", "pressure_leak"}


def run(spec: Spec, settings: Settings, **kwargs: Any) -> IngestReport:
    return ingest(spec, settings, progress_bars=False, **kwargs)


def only_source(report: IngestReport) -> SourceReport:
    assert len(report.sources) == 1
    return report.sources[0]


def lake_rows(settings: Settings, spec: Spec, report: IngestReport) -> pa.Table:
    return read_parts(store_from_settings(settings), report.snapshot.parts, spec.schema_)


def msg_ids(paths: list[Path]) -> list[str]:
    ids: list[str] = []
    for path in paths:
        with path.open(encoding="utf-8") as fh:
            ids.extend(row["msg_id"] for row in csv.DictReader(fh))
    return sorted(ids)


def assert_landed(report: IngestReport, settings: Settings, spec: Spec, rows: int) -> pa.Table:
    """Every row read landed clean, the snapshot holds them all, typed per the schema."""
    src = only_source(report)
    assert (src.rows_in, src.rows_clean, src.rows_quarantined) == (rows, rows, 0)
    assert src.quarantine == []
    assert src.nodes
    assert sum(p.rows for p in src.parts) == rows
    assert all(p.key.startswith(f"lake/{spec.name}/{src.name}/date=") for p in src.parts)
    assert report.snapshot.rows == rows
    assert dict(report.snapshot.rows_by_source) == {src.name: rows}
    table = lake_rows(settings, spec, report)
    assert table.schema == arrow_schema(spec.schema_)
    assert table.num_rows == rows
    assert set(table.column("fault").to_pylist()) <= CATEGORIES
    assert table.column("ts").null_count == 0
    return table


# -------------------------------------------------------------------------------- files


def test_csv_files_by_a_glob_relative_to_the_spec(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory, sensor_csvs: CsvFactory
) -> None:
    paths, rows = sensor_csvs(tmp_path / "data", files=3)
    (tmp_path / "data" / "notes.txt").write_text("not a csv")
    spec = make_spec(tmp_path, "{name: history, kind: file, path: data/*.csv}")
    report = run(spec, settings)
    table = assert_landed(report, settings, spec, rows)
    assert sorted(table.column("msg_id").to_pylist()) == msg_ids(paths)
    src = only_source(report)
    assert src.ignored_columns == {"is_anomaly"}
    assert src.kind == "file"
    assert report.skipped == []
    assert {p.date for p in src.parts} == {"2026-01-05"}


def test_store_url_on_the_local_store(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory, sensor_csvs: CsvFactory
) -> None:
    paths, rows = sensor_csvs(tmp_path / "export", files=2)
    store = store_from_settings(settings)
    for path in paths:
        store.put(f"landing/pumps/{path.name}", path)
    store.put("landing/pumps/readme.txt", b"ignored")
    spec = make_spec(tmp_path, "{name: history, kind: file, path: 'store://landing/pumps/*.csv'}")
    table = assert_landed(run(spec, settings), settings, spec, rows)
    assert sorted(table.column("msg_id").to_pylist()) == msg_ids(paths)


@pytest.fixture
def s3_settings(settings: Settings, s3_server: Any) -> Settings:
    """The appliance's store on the S3-protocol server, under a prefix of its own."""
    url = f"s3://{s3_server.bucket}/{uuid.uuid4().hex}"
    return settings.model_copy(update={"store": StoreSettings(url=url, s3=s3_server.settings())})


@pytest.mark.integration
def test_store_url_with_the_store_on_s3(
    tmp_path: Path, s3_settings: Settings, make_spec: SpecFactory, sensor_csvs: CsvFactory
) -> None:
    paths, rows = sensor_csvs(tmp_path / "export", files=2)
    store = store_from_settings(s3_settings)
    for path in paths:
        store.put(f"landing/pumps/{path.name}", path)
    spec = make_spec(tmp_path, "{name: history, kind: file, path: 'store://landing/pumps/*.csv'}")
    report = run(spec, s3_settings)
    table = assert_landed(report, s3_settings, spec, rows)
    assert sorted(table.column("msg_id").to_pylist()) == msg_ids(paths)
    # The lake and catalog are on S3 too.
    assert set(store.keys("lake/pumps/history/")) == {p.key for p in report.snapshot.parts}
    assert [s.id for s in list_snapshots(store, "pumps")] == [report.snapshot.id]


@pytest.mark.integration
def test_s3_urls_on_the_configured_endpoint(
    tmp_path: Path, settings: Settings, s3_server: Any, make_spec: SpecFactory, sensor_csvs: CsvFactory
) -> None:
    paths, rows = sensor_csvs(tmp_path / "export", files=2)
    prefix = uuid.uuid4().hex
    s3_only = settings.model_copy(update={"store": StoreSettings(s3=s3_server.settings())})
    bucket_store = store_from_settings(
        s3_only.model_copy(
            update={"store": StoreSettings(url=f"s3://{s3_server.bucket}", s3=s3_server.settings())}
        )
    )
    for path in paths:
        bucket_store.put(f"{prefix}/landing/{path.name}", path)
    bucket_store.put(f"{prefix}/landing/old/archive.txt", b"not this one")
    spec = make_spec(
        tmp_path, f"{{name: history, kind: file, path: 's3://{s3_server.bucket}/{prefix}/landing/*.csv'}}"
    )
    table = assert_landed(run(spec, s3_only), s3_only, spec, rows)  # the lake is the local store
    assert sorted(table.column("msg_id").to_pylist()) == msg_ids(paths)


@pytest.mark.integration
def test_no_match_on_s3_names_the_pattern(
    tmp_path: Path, s3_settings: Settings, make_spec: SpecFactory
) -> None:
    spec = make_spec(tmp_path, "{name: history, kind: file, path: 'store://landing/none/*.csv'}")
    with pytest.raises(UserError, match=r"source 'history': no files match 'landing/none/\*\.csv' in s3://"):
        run(spec, s3_settings)


def test_parquet_files(tmp_path: Path, settings: Settings, make_spec: SpecFactory) -> None:
    (tmp_path / "pq").mkdir()
    total = 0
    for seed in range(2):
        cols = simulate_sensors(
            SensorSimulation(machines=3, readings=200, seed=seed, machine_prefix=f"p{seed}")
        )
        pq.write_table(pa.table(cols), tmp_path / "pq" / f"part-{seed}.parquet")
        total += len(cols["msg_id"])
    spec = make_spec(tmp_path, "{name: history, kind: file, path: pq/*.parquet}")
    table = assert_landed(run(spec, settings), settings, spec, total)
    first = table.filter(pa.compute.equal(table["msg_id"], "p0-000-00000000"))
    assert first.column("ts").to_pylist()[0].isoformat() == "2026-01-05T00:00:00+00:00"


def test_json_lines_with_malformed_lines_quarantined(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    cols = simulate_sensors(SensorSimulation(machines=2, readings=300))
    path = tmp_path / "feed.jsonl"
    with path.open("w", encoding="utf-8") as out:
        rows = write_jsonl(cols, out)
        out.write('{"msg_id": "broken", "ts": \n')
        out.write("[1, 2, 3]\n")
    spec = make_spec(tmp_path, "{name: feed, kind: file, path: feed.jsonl}")
    report = run(spec, settings)
    src = only_source(report)
    assert (src.rows_in, src.rows_clean, src.rows_quarantined) == (rows + 2, rows, 2)
    assert src.problems == {"(line): not a JSON object": 2}
    assert report.snapshot.rows == rows
    quarantined = read_parts(store_from_settings(settings), src.quarantine)
    assert quarantined.column("reason").to_pylist() == ["not a JSON object"] * 2
    assert sorted(quarantined.column("row").to_pylist()) == sorted(
        ['{"msg_id": "broken", "ts": ', "[1, 2, 3]"]
    )


def test_json_lines_that_are_all_malformed_are_all_quarantined(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    # Once a user error ("source has no column 'msg_id'") instead of quarantine.
    (tmp_path / "feed.jsonl").write_text('nope\n[1]\n"text"\n')
    spec = make_spec(tmp_path, "{name: feed, kind: file, path: feed.jsonl}")
    src = only_source(run(spec, settings))
    assert (src.rows_in, src.rows_clean, src.rows_quarantined) == (3, 0, 3)
    assert src.parts == []


def test_bad_csv_cells_are_quarantined_and_counted(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory, sensor_csvs: CsvFactory
) -> None:
    (path,), rows = sensor_csvs(tmp_path / "data", files=1, machines=2, readings=200)
    with path.open(encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    bad = {5: ("temperature", "hot"), 7: ("ts", "yesterday"), 9: ("fault", "smoke"), 11: ("machine_id", "")}
    for index, (column, value) in bad.items():
        records[index][column] = value
    records[13]["rpm"] = ""  # a blank in a nullable column is a null, not a problem
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)

    spec = make_spec(tmp_path, "{name: history, kind: file, path: data/*.csv}")
    report = run(spec, settings)
    src = only_source(report)
    assert (src.rows_in, src.rows_clean, src.rows_quarantined) == (rows, rows - 4, 4)
    assert src.problems == {
        "temperature: not a number": 1,
        "ts: not an ISO 8601 timestamp": 1,
        "fault: not one of ok, bearing_wear, overheating, pressure_leak": 1,
        "machine_id: missing (column is required)": 1,
    }
    assert report.snapshot.rows == rows - 4
    quarantined = read_parts(store_from_settings(settings), src.quarantine)
    by_id = {
        json.loads(r)["msg_id"]: (reason, json.loads(r))
        for r, reason in zip(
            quarantined.column("row").to_pylist(), quarantined.column("reason").to_pylist(), strict=True
        )
    }
    assert by_id[records[5]["msg_id"]][0] == "temperature: not a number (hot)"
    assert by_id[records[7]["msg_id"]][0] == "ts: not an ISO 8601 timestamp (yesterday)"
    assert by_id[records[9]["msg_id"]][0].startswith("fault: not one of ")
    assert by_id[records[11]["msg_id"]][0] == "machine_id: missing"
    assert by_id[records[5]["msg_id"]][1]["temperature"] == "hot"
    lake = lake_rows(settings, spec, report)
    landed = lake.filter(pa.compute.equal(lake["msg_id"], records[13]["msg_id"]))
    assert landed.column("rpm").to_pylist() == [None]


def test_reingesting_the_same_files_gives_the_same_snapshot(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory, sensor_csvs: CsvFactory
) -> None:
    sensor_csvs(tmp_path / "data", files=3)
    spec = make_spec(tmp_path, "{name: history, kind: file, path: data/*.csv}")
    first = run(spec, settings)
    second = run(spec, settings)
    assert second.snapshot.id == first.snapshot.id
    assert sorted(p.key for p in second.snapshot.parts) == sorted(p.key for p in first.snapshot.parts)
    assert len(list_snapshots(store_from_settings(settings), "pumps")) == 1
    # New data: a new snapshot, and the source's parts are replaced, not added to.
    sensor_csvs(tmp_path / "data", files=3, seed=5)
    third = run(spec, settings)
    assert third.snapshot.id != first.snapshot.id
    assert third.snapshot.rows == first.snapshot.rows


# ---------------------------------------------------------------------------------- SQL


def sensor_frame(readings: int = 150) -> pd.DataFrame:
    cols = simulate_sensors(SensorSimulation(machines=2, readings=readings))
    frame = pd.DataFrame(cols)
    return frame.drop(columns=["is_anomaly"])


def test_sql_from_a_duckdb_file_relative_to_the_spec(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    import duckdb

    frame = sensor_frame()
    (tmp_path / "db").mkdir()
    with duckdb.connect(str(tmp_path / "db" / "plant.duckdb")) as con:
        con.register("frame", frame)
        con.execute("CREATE TABLE readings AS SELECT * FROM frame")
    spec = make_spec(
        tmp_path,
        "{name: plant-db, kind: sql, url: 'duckdb:///db/plant.duckdb', "
        "query: \"SELECT * FROM readings WHERE machine_id = 'pump-001'\"}",
    )
    report = run(spec, settings)
    table = assert_landed(report, settings, spec, len(frame) // 2)
    assert set(table.column("machine_id").to_pylist()) == {"pump-001"}
    assert only_source(report).kind == "sql"


def test_sql_from_sqlite_through_sqlalchemy(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    frame = sensor_frame()
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    (tmp_path / "db").mkdir()
    with sqlite3.connect(tmp_path / "db" / "plant.sqlite") as con:
        frame.to_sql("readings", con, index=False)
    con.close()
    spec = make_spec(
        tmp_path,
        "{name: plant-db, kind: sql, url: 'sqlite:///db/plant.sqlite', query: 'SELECT * FROM readings'}",
    )
    table = assert_landed(run(spec, settings), settings, spec, len(frame))
    assert sorted(table.column("msg_id").to_pylist()) == sorted(frame["msg_id"])


def test_bad_sql_is_a_user_error(tmp_path: Path, settings: Settings, make_spec: SpecFactory) -> None:
    import duckdb

    duckdb.connect(str(tmp_path / "plant.duckdb")).close()
    spec = make_spec(
        tmp_path, "{name: plant-db, kind: sql, url: 'duckdb:///plant.duckdb', query: 'SELECT * FROM nowhere'}"
    )
    with pytest.raises(UserError, match=r"source 'plant-db': the query failed: .*nowhere"):
        run(spec, settings)


def test_a_missing_duckdb_file_is_a_user_error(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    spec = make_spec(
        tmp_path, "{name: plant-db, kind: sql, url: 'duckdb:///missing.duckdb', query: 'SELECT 1'}"
    )
    with pytest.raises(UserError, match=r"source 'plant-db': cannot open duckdb:///missing.duckdb"):
        run(spec, settings)
    assert not (tmp_path / "missing.duckdb").exists()


# ------------------------------------------------------------------------------- errors


def test_no_files_matching_a_glob_names_the_pattern(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    spec = make_spec(tmp_path, "{name: history, kind: file, path: data/*.csv}")
    with pytest.raises(UserError) as info:
        run(spec, settings)
    assert f"source 'history': no files match {tmp_path / 'data' / '*.csv'}" in str(info.value)
    assert "relative to the spec file" in (info.value.hint or "")


def test_no_files_on_the_store_names_the_pattern(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    spec = make_spec(tmp_path, "{name: history, kind: file, path: 'store://landing/pumps/*.csv'}")
    with pytest.raises(UserError, match=r"no files match 'landing/pumps/\*\.csv' in file://"):
        run(spec, settings)


def test_an_unknown_source_in_only_lists_the_sources(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    spec = make_spec(
        tmp_path,
        "{name: history, kind: file, path: data/*.csv}",
        "{name: api, kind: http, url: 'http://127.0.0.1:9/x'}",
    )
    with pytest.raises(UserError, match=r"no source named nope in spec 'pumps'; it has api, history"):
        run(spec, settings, only=["nope", "history"])
    assert not list_snapshots(store_from_settings(settings), "pumps")


def test_only_ingests_the_named_sources_and_mqtt_is_skipped(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory, sensor_csvs: CsvFactory
) -> None:
    _, rows = sensor_csvs(tmp_path / "data", files=1)
    spec = make_spec(
        tmp_path,
        "{name: plant-sensors, kind: mqtt, broker: 'mqtt://127.0.0.1:1883', topics: ['plant/+/telemetry']}",
        "{name: history, kind: file, path: data/*.csv}",
        "{name: api, kind: http, url: 'http://127.0.0.1:9/unreachable'}",
    )
    report = run(spec, settings, only=["plant-sensors", "history"])
    assert report.skipped == ["plant-sensors"]
    assert [s.name for s in report.sources] == ["history"]
    assert dict(report.snapshot.rows_by_source) == {"plant-sensors": 0, "history": rows, "api": 0}


def test_a_spec_of_only_streams_is_all_skipped(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    spec = make_spec(
        tmp_path, "{name: plant-sensors, kind: mqtt, broker: 'mqtt://127.0.0.1:1883', topics: ['a/#']}"
    )
    report = run(spec, settings)
    assert (report.sources, report.skipped, report.snapshot.rows) == ([], ["plant-sensors"], 0)


# ------------------------------------------------------------------------------ retries


def test_an_unreachable_source_is_retried_with_backoff_then_read(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    from edgeml.ingest.run import _ingest_with_retries

    frame = sensor_frame()
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    spec = make_spec(
        tmp_path,
        "{name: plant-db, kind: sql, url: 'sqlite:///db/plant.sqlite', query: 'SELECT * FROM readings'}",
    )
    delays: list[float] = []
    said: list[str] = []

    def sleep(delay: float) -> None:  # the database comes up during the second wait
        delays.append(delay)
        if len(delays) == 2:
            (tmp_path / "db").mkdir()
            with sqlite3.connect(tmp_path / "db" / "plant.sqlite") as con:
                frame.to_sql("readings", con, index=False)
            con.close()

    report = _ingest_with_retries(spec.sources[0], spec, settings, 2, said.append, sleep)
    assert report.rows_clean == len(frame)
    assert len(delays) == 2
    assert 1.0 <= delays[0] <= 1.25
    assert 2.0 <= delays[1] <= 2.5  # doubling, with jitter
    assert said[0].startswith("source plant-db: source 'plant-db': cannot open sqlite:///")
    assert "retry 1 of 2 in 1 s" in said[0]


def test_retries_give_up_and_a_broken_query_is_not_retried(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory
) -> None:
    from edgeml.errors import SourceUnavailableError
    from edgeml.ingest.run import _ingest_with_retries

    spec = make_spec(
        tmp_path, "{name: plant-db, kind: sql, url: 'sqlite:///nowhere/x.sqlite', query: 'SELECT 1'}"
    )
    delays: list[float] = []
    with pytest.raises(SourceUnavailableError, match="cannot open"):
        _ingest_with_retries(spec.sources[0], spec, settings, 2, None, delays.append)
    assert len(delays) == spec.pipeline.retries == 2
    import duckdb

    duckdb.connect(str(tmp_path / "plant.duckdb")).close()
    spec = make_spec(
        tmp_path, "{name: plant-db, kind: sql, url: 'duckdb:///plant.duckdb', query: 'SELECT * FROM nowhere'}"
    )
    delays.clear()
    with pytest.raises(UserError, match="the query failed"):
        _ingest_with_retries(spec.sources[0], spec, settings, 2, None, delays.append)
    assert delays == []


def test_sql_rows_land_chunk_by_chunk(
    tmp_path: Path, settings: Settings, make_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgeml.ingest.run as ingest_run

    monkeypatch.setattr(ingest_run, "CHUNK_ROWS", 100)
    frame = sensor_frame()
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    (tmp_path / "db").mkdir()
    with sqlite3.connect(tmp_path / "db" / "plant.sqlite") as con:
        frame.to_sql("readings", con, index=False)
    con.close()
    spec = make_spec(
        tmp_path,
        "{name: plant-db, kind: sql, url: 'sqlite:///db/plant.sqlite', query: 'SELECT * FROM readings'}",
    )
    report = run(spec, settings)
    table = assert_landed(report, settings, spec, len(frame))
    assert len(only_source(report).parts) >= -(-len(frame) // 100)  # one part (or more) per chunk
    assert sorted(table.column("msg_id").to_pylist()) == sorted(frame["msg_id"])
