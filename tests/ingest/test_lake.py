"""The lake on the object store: date partitions, content-addressed parts, catalog and snapshots."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from edgeml.errors import UserError
from edgeml.ingest.coerce import arrow_schema, coerce_batch
from edgeml.ingest.lake import (
    Part,
    Snapshot,
    list_snapshots,
    load_snapshot,
    parquet_bytes,
    read_parts,
    record_source_parts,
    schema_fingerprint,
    take_snapshot,
    write_clean_parts,
    write_quarantine_part,
)
from edgeml.ingest.lake import source_parts as current_parts
from edgeml.simulate.sensors import SensorSimulation, simulate_sensors
from edgeml.spec import Spec
from edgeml.store import LocalStore, MemoryStore, ObjectStore

PART_KEY = re.compile(r"lake/pumps/history/date=(\d{4}-\d{2}-\d{2})/part-([0-9a-f]{16})\.parquet")
TWO_SOURCES = (
    "{name: history, kind: file, path: data/*.csv}",
    "{name: api, kind: http, url: 'http://127.0.0.1:1/x'}",
)


@pytest.fixture
def spec(make_spec: Callable[..., Spec]) -> Spec:
    return make_spec(None, *TWO_SOURCES)


def sensor_table(spec: Spec, *, readings: int = 60, interval_s: float = 3600, seed: int = 0) -> pa.Table:
    """Clean simulator rows; the default spans 60 hours, so three event dates."""
    cols = simulate_sensors(SensorSimulation(machines=2, readings=readings, interval_s=interval_s, seed=seed))
    result = coerce_batch(pd.DataFrame(cols), spec.schema_, source="history")
    assert result.quarantine.num_rows == 0
    return result.clean


def write(store: ObjectStore, spec: Spec, table: pa.Table, source: str = "history") -> list[Part]:
    return write_clean_parts(store, spec.name, source, table, spec.schema_.timestamp)


def snapshot_of(store: ObjectStore, spec: Spec, table: pa.Table) -> Snapshot:
    record_source_parts(store, spec.name, "history", write(store, spec, table), append=False)
    return take_snapshot(store, spec)


# ------------------------------------------------------------------------------- parts


def test_clean_parts_are_partitioned_by_event_date(spec: Spec) -> None:
    store = MemoryStore()
    table = sensor_table(spec)
    parts = write(store, spec, table)
    assert [p.date for p in parts] == ["2026-01-05", "2026-01-06", "2026-01-07"]
    assert sum(p.rows for p in parts) == table.num_rows == 120
    for part in parts:
        match = PART_KEY.fullmatch(part.key)
        assert match, part.key
        assert match.group(1) == part.date
        data = store.get(part.key)
        assert match.group(2) == part.sha256[:16] == hashlib.sha256(data).hexdigest()[:16]
        assert part.sha256 == hashlib.sha256(data).hexdigest()
        assert (part.bytes, part.source) == (len(data), "history")
        back = pq.read_table(io.BytesIO(data))
        assert back.num_rows == part.rows
        days = set(pc.strftime(back["ts"], format="%Y-%m-%d").to_pylist())
        assert days == {part.date}
    assert sorted(store.keys("lake/")) == sorted(p.key for p in parts)


def test_parts_are_content_addressed_and_written_once(spec: Spec, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    table = sensor_table(spec)
    first = write(store, spec, table)
    inodes = {p.key: (store.root / p.key).stat().st_ino for p in first}
    again = write(store, spec, table)
    assert again == first
    # An identical part is not rewritten: an atomic put would have renamed a new file in.
    assert {p.key: (store.root / p.key).stat().st_ino for p in again} == inodes
    other = write(store, spec, sensor_table(spec, seed=1))
    assert not {p.key for p in other} & set(inodes)


def test_parquet_bytes_are_deterministic(spec: Spec) -> None:
    table = sensor_table(spec)
    assert parquet_bytes(table) == parquet_bytes(table.replace_schema_metadata({b"x": b"y"}))


def test_without_a_timestamp_column_parts_go_under_the_ingestion_date(
    make_spec: Callable[..., Spec],
) -> None:
    spec = make_spec(None, TWO_SOURCES[0], schema="schema:\n  columns:\n    v: {type: float}\n")
    store = MemoryStore()
    before = datetime.now(UTC).date().isoformat()
    parts = write_clean_parts(store, spec.name, "history", pa.table({"v": [1.0, 2.0]}), None)
    after = datetime.now(UTC).date().isoformat()
    assert len(parts) == 1
    assert parts[0].date in {before, after}
    assert parts[0].key.startswith(f"lake/pumps/history/date={parts[0].date}/part-")


def test_rows_without_a_timestamp_go_to_an_unknown_date(spec: Spec) -> None:
    schema = arrow_schema(spec.schema_)
    table = pa.table(
        {"ts": pa.array([datetime(2026, 1, 5, tzinfo=UTC), None], schema.field("ts").type), "v": [1, 2]}
    )
    parts = write_clean_parts(MemoryStore(), "pumps", "history", table, "ts")
    assert sorted((p.date, p.rows) for p in parts) == [("2026-01-05", 1), ("unknown", 1)]


def test_no_rows_no_parts(spec: Spec) -> None:
    store = MemoryStore()
    empty = arrow_schema(spec.schema_).empty_table()
    assert write(store, spec, empty) == []
    quarantine = coerce_batch(
        pd.DataFrame({"msg_id": ["a"], "ts": ["x"], "machine_id": ["m"], "fault": ["ok"]}),
        spec.schema_,
        source="history",
    ).quarantine
    assert write_quarantine_part(store, "pumps", "history", quarantine.slice(0, 0)) is None
    assert store.keys() == []


def test_quarantine_part_keeps_rows_and_reasons(spec: Spec) -> None:
    store = MemoryStore()
    frame = pd.DataFrame(
        {
            "msg_id": ["a", "b"],
            "ts": ["2026-01-05T00:00:00Z", "never"],
            "machine_id": ["m", "m"],
            "fault": ["ok", "ok"],
        }
    )
    quarantine = coerce_batch(frame, spec.schema_, source="history").quarantine
    part = write_quarantine_part(store, "pumps", "history", quarantine)
    assert part is not None
    assert re.fullmatch(r"quarantine/pumps/history/part-[0-9a-f]{16}\.parquet", part.key)
    back = read_parts(store, [part])
    assert back.column("reason").to_pylist() == ["ts: not an ISO 8601 timestamp (never)"]
    assert back.column("source").to_pylist() == ["history"]


# ----------------------------------------------------------------------------- catalog


def test_record_source_parts_replaces_or_appends(spec: Spec) -> None:
    store = MemoryStore()
    a = write(store, spec, sensor_table(spec, seed=1))
    b = write(store, spec, sensor_table(spec, seed=2))
    assert current_parts(store, "pumps", "history") == []
    assert record_source_parts(store, "pumps", "history", a, append=False) == a
    assert record_source_parts(store, "pumps", "history", b, append=False) == b
    assert current_parts(store, "pumps", "history") == b
    merged = record_source_parts(store, "pumps", "history", a, append=True)
    assert merged == b + a
    # appending parts that are already there changes nothing: same key, same rows
    assert record_source_parts(store, "pumps", "history", a[:1] + b, append=True) == b + a
    assert current_parts(store, "pumps", "history") == b + a


# --------------------------------------------------------------------------- snapshots


def test_a_snapshot_lists_parts_and_rows_by_source(spec: Spec) -> None:
    store = MemoryStore()
    table = sensor_table(spec)
    snap = snapshot_of(store, spec, table)
    assert snap.dataset == "pumps"
    assert snap.rows == table.num_rows
    assert dict(snap.rows_by_source) == {"history": table.num_rows, "api": 0}
    assert [p.key for p in snap.parts] == sorted(p.key for p in snap.parts)
    assert snap.schema_fingerprint == schema_fingerprint(spec.schema_)
    assert snap.spec_fingerprint == spec.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", snap.id)
    assert store.keys(f"catalog/pumps/snapshots/{snap.id}.json")
    assert Snapshot.from_json(snap.to_json()) == snap
    assert read_parts(store, snap.parts, spec.schema_).num_rows == table.num_rows


def test_the_snapshot_id_depends_on_data_and_schema_only(spec: Spec, make_spec: Callable[..., Spec]) -> None:
    table = sensor_table(spec)
    one, two = MemoryStore(), MemoryStore()
    first = snapshot_of(one, spec, table)
    assert snapshot_of(two, spec, table).id == first.id  # same data, same schema, another store
    assert take_snapshot(one, spec).id == first.id  # again: the same snapshot, recorded once
    assert len(list_snapshots(one, "pumps")) == 1

    changed_data = snapshot_of(two, spec, table.slice(1))
    assert changed_data.id != first.id

    wider = make_spec(None, *TWO_SOURCES, schema=_with_extra_column(spec))
    assert schema_fingerprint(wider.schema_) != schema_fingerprint(spec.schema_)
    three = MemoryStore()
    record_source_parts(three, "pumps", "history", write(three, spec, table), append=False)
    assert take_snapshot(three, wider).id != first.id


def _with_extra_column(spec: Spec) -> str:
    import yaml

    schema = spec.schema_.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    schema["columns"]["note"] = {"type": "string"}
    return yaml.safe_dump({"schema": schema}, sort_keys=False)


def test_load_snapshot_by_prefix_and_the_newest_by_default(spec: Spec) -> None:
    store = MemoryStore()
    a = snapshot_of(store, spec, sensor_table(spec, seed=1))
    b = snapshot_of(store, spec, sensor_table(spec, seed=2))
    assert a.id != b.id
    assert {s.id for s in list_snapshots(store, "pumps")} == {a.id, b.id}
    assert load_snapshot(store, "pumps") == b
    assert load_snapshot(store, "pumps", a.id) == a
    assert load_snapshot(store, "pumps", b.id[:6]) == b
    # The data goes back to what it was: its snapshot (recorded before) is the newest again.
    again = snapshot_of(store, spec, sensor_table(spec, seed=1))
    assert again == a
    assert load_snapshot(store, "pumps") == a
    assert len(list_snapshots(store, "pumps")) == 2


def test_snapshots_are_listed_oldest_first(spec: Spec) -> None:
    store = MemoryStore()
    table = sensor_table(spec)
    snap = snapshot_of(store, spec, table)
    older = Snapshot(
        id="0" * 16,
        dataset="pumps",
        parts=(),
        rows=0,
        schema_fingerprint=snap.schema_fingerprint,
        created=(datetime.fromisoformat(snap.created) - timedelta(days=1)).isoformat(timespec="seconds"),
    )
    store.put(f"catalog/pumps/snapshots/{older.id}.json", older.to_json().encode())
    assert [s.id for s in list_snapshots(store, "pumps")] == [older.id, snap.id]
    assert list_snapshots(store, "other") == []


def test_unknown_ambiguous_and_missing_snapshots_are_user_errors(spec: Spec) -> None:
    store = MemoryStore()
    with pytest.raises(UserError, match=r"dataset 'pumps' has no snapshot yet"):
        load_snapshot(store, "pumps")
    # 17 snapshots of different data: two ids must share their first hex digit.
    ids = [snapshot_of(store, spec, sensor_table(spec, readings=3, seed=seed)).id for seed in range(17)]
    assert len(set(ids)) == 17
    prefix = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    with pytest.raises(UserError, match=rf"more than one snapshot of 'pumps' matches '{prefix}'"):
        load_snapshot(store, "pumps", prefix)
    with pytest.raises(UserError, match=r"no snapshot of 'pumps' matches 'zz'"):
        load_snapshot(store, "pumps", "zz")


# ------------------------------------------------------------------------------ reading


def test_read_parts_concatenates_and_verifies(spec: Spec) -> None:
    store = MemoryStore()
    table = sensor_table(spec)
    parts = write(store, spec, table)
    back = read_parts(store, parts, spec.schema_)
    assert back.schema == arrow_schema(spec.schema_)
    assert back.sort_by("msg_id").equals(table.sort_by("msg_id"))
    empty = read_parts(store, [], spec.schema_)
    assert empty.num_rows == 0
    assert empty.schema == arrow_schema(spec.schema_)


def test_read_parts_refuses_a_part_whose_bytes_were_altered(spec: Spec, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    parts = write(store, spec, sensor_table(spec))
    victim = parts[1]
    # Still valid Parquet, other rows: only the recorded sha256 can tell.
    store.put(victim.key, parquet_bytes(sensor_table(spec, seed=9).slice(0, victim.rows)))
    with pytest.raises(UserError) as info:
        read_parts(store, parts, spec.schema_)
    assert victim.key in str(info.value)
    assert "does not match its recorded sha256" in str(info.value)
    # One flipped byte in the file is caught the same way.
    path = store.root / parts[0].key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="altered"):
        read_parts(store, parts[:1])
