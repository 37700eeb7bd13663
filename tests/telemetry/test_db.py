"""The telemetry store on its own: durability across reopening, retention, the query API."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml.bundle.manifest import Histogram
from edgeml.errors import BatchConflict, StoreClosed
from edgeml.telemetry.db.batch_group import BatchGroup
from edgeml.telemetry.db.store import DuckDBStore
from edgeml.telemetry.db.tables import ROW_GROUP_ROWS
from edgeml.telemetry.db.writer import encode
from edgeml.telemetry.schema import (
    CompactResult,
    FeatureTelemetry,
    FeedbackItem,
    SampleRow,
    Stored,
    TelemetryBatch,
)

from .batches import make_batch


def count(store: DuckDBStore, table: str) -> int:
    rows = store.write(lambda con: con.execute(f"SELECT count(*) FROM {table}").fetchall()).result()
    return int(rows[0][0])


def test_acknowledged_batches_and_devices_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    with DuckDBStore(path) as store:
        _, token = store.register_device(device_id="dev-1", group="g", profile="x86-64-generic", model="pump")
        acked = [store.ingest(make_batch(group="g", dropped_before=i % 2)) for i in range(50)]
        sent = store.batches()
    with DuckDBStore(path) as store:
        assert store.batches() == sent
        assert {b.batch_id for b in sent} == {a.ack.batch_id for a in acked}
        assert count(store, "batch_features") == 100  # two features per batch
        assert count(store, "batch_labels") == 100  # two classes per batch
        again = store.ingest(sent[0])
        assert again.duplicate
        assert again.ack == acked[0].ack  # the stored answer, after a restart too
        known = store.authenticate(token)
        assert known is not None
        assert known.dropped_total == 25
        assert known.serving_version == 1
        assert known.last_seen is not None


def test_queries_filter_by_model_version_group_and_window(tmp_path: Path) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    with DuckDBStore(tmp_path / "t.duckdb") as store:
        batches = [
            make_batch(group=group, version=version, window_end=t0 + timedelta(minutes=minute))
            for minute, (group, version) in enumerate([("a", 1), ("b", 1), ("a", 2), (None, 2), ("a", 1)])
        ]
        for batch in reversed(batches):
            store.ingest(batch)
        assert store.batches() == batches  # by window end, whatever the arrival order
        assert store.batches(group="a", version=1) == [batches[0], batches[4]]
        assert store.batches(version=2) == [batches[2], batches[3]]
        assert store.batches(model="other") == []
        # (since, until]: consecutive ranges share no batch
        assert store.batches(since=t0, until=t0 + timedelta(minutes=2)) == batches[1:3]
        assert store.batches(since=t0 + timedelta(minutes=2)) == batches[3:]
        assert store.batches(device="dev-1", until=t0) == [batches[0]]
        points = store.rows_over_time(t0 - timedelta(minutes=1), timedelta(minutes=10))
        assert {(p.group, p.rows) for p in points} == {("a", 30), ("b", 10), (None, 10)}


def test_feedback_latest_label_per_prediction_with_the_device_group(tmp_path: Path) -> None:
    with DuckDBStore(tmp_path / "t.duckdb") as store:
        store.register_device(device_id="dev-1", group="line-a", profile="p", model="pump")
        store.add_feedback(
            [
                FeedbackItem(prediction_id="p1", label="ok", predicted="ok", device_id="dev-1", model="pump"),
                FeedbackItem(prediction_id="p2", label=3.5, predicted=3.0),
            ],
            source="admin",
        )
        store.add_feedback(
            [FeedbackItem(prediction_id="p1", label="fault", device_id="dev-1")], source="dev-1"
        )
        records = {r.prediction_id: r for r in store.feedback()}
        assert records["p1"].label == "fault"
        assert records["p1"].group == "line-a"
        assert records["p1"].source == "dev-1"
        assert records["p2"].label == 3.5
        assert records["p2"].group is None
        assert [r.prediction_id for r in store.feedback(group="line-a")] == ["p1"]
        # the model filter sees the latest label only: p1's latest names no model
        assert store.feedback(model="pump") == []


def test_retention_deletes_old_telemetry_and_feedback_and_keeps_the_rest(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with DuckDBStore(tmp_path / "t.duckdb", retention_days=7) as store:
        for _ in range(3):
            store.ingest(make_batch(window_end=now - timedelta(days=8)))
        fresh = store.ingest(make_batch(window_end=now - timedelta(days=6)))
        store.add_feedback([FeedbackItem(prediction_id="p", label="ok")], source="admin")
        assert store.compact(now) == CompactResult(batches=3, feedback=0)
        assert [b.batch_id for b in store.batches()] == [fresh.ack.batch_id]
        assert count(store, "batch_features") == 2
        assert count(store, "batch_labels") == 2
        assert len(store.feedback()) == 1
    with DuckDBStore(tmp_path / "t.duckdb", retention_days=7) as store:  # committed, checkpointed
        assert [b.batch_id for b in store.batches()] == [fresh.ack.batch_id]
        # a week on, the rest is past it too; labels count from when they arrived (after `now`: a
        # loaded machine can take seconds to get here, hence the margin)
        assert store.compact(now + timedelta(days=7, minutes=10)) == CompactResult(batches=1, feedback=1)
        assert store.batches() == []
        assert store.feedback() == []
        assert count(store, "batch_features") == 0


def test_a_file_written_by_a_newer_duckdb_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """A node downgraded below the DuckDB that wrote its file (DuckDB 2.0.1 wrote this one)."""
    import gzip

    from edgeml.errors import StoreConfigError

    path = tmp_path / "telemetry.duckdb"
    path.write_bytes(
        gzip.decompress((Path(__file__).parent / "data/written-by-duckdb-2.0.1.duckdb.gz").read_bytes())
    )
    with pytest.raises(StoreConfigError, match="written by a newer DuckDB") as error:
        DuckDBStore(path)
    assert "EXPORT DATABASE" in (error.value.hint or "")


def test_a_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "t.duckdb")
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreClosed):
        store.submit(make_batch())
    with pytest.raises(StoreClosed):
        store.batches()


_CRASH = """
import os, sys
from datetime import datetime, timedelta, UTC
sys.path.insert(0, {tests!r})
from telemetry.batches import make_batch
from pathlib import Path
from edgeml.telemetry.db.store import DuckDBStore

store = DuckDBStore(Path({path!r}))
for name in ("d1", "d2"):
    store.register_device(group="g", profile="x86-64-generic", model="pump", device_id=name)
now = datetime.now(UTC)
acks = [
    store.ingest(make_batch("d1", version=1, window_end=now - timedelta(minutes=2), dropped_before=2)),
    store.ingest(make_batch("d1", version=2, window_end=now - timedelta(minutes=1), dropped_before=1)),
    store.ingest(make_batch("d1", version=1, window_end=now - timedelta(minutes=3))),  # a late window
]
print(acks[-1].ack.received_at.isoformat(), flush=True)
os._exit(0)  # a crash: the devices' state was never saved (the store saves it every few seconds)
"""


def test_device_state_lost_in_a_crash_is_rebuilt_from_the_batches(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    script = _CRASH.format(tests=str(Path(__file__).parents[1]), path=str(path))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    last_received = datetime.fromisoformat(out.stdout.strip())
    with DuckDBStore(path) as store:
        d1, d2 = store.device("d1"), store.device("d2")
        assert d1 is not None
        assert d2 is not None
        assert d1.last_seen == last_received
        assert d1.dropped_total == 3
        assert (d1.serving_model, d1.serving_version) == (
            "pump",
            2,
        )  # the newest window, not the last to arrive
        assert d2.last_seen is None  # nothing arrived from it
        assert store.batch_count() == 3
    with DuckDBStore(path) as again:  # saved at close: nothing is counted twice
        assert again.device("d1") == d1


def test_a_group_handed_over_stores_its_new_batches_and_answers_repeats_in_order(tmp_path: Path) -> None:
    first, stored, fresh = make_batch("d1"), make_batch("d1", dropped_before=2), make_batch("d2")
    conflicting = stored.model_copy(update={"rows": stored.rows + 1})
    with DuckDBStore(tmp_path / "t.duckdb") as store:
        store.register_device(device_id="d1", group="g", profile="x86-64-generic", model="pump")
        before = store.ingest(stored)
        items = [first, stored, conflicting, fresh, first]  # a stored id, a reused one, one twice
        at = datetime(2026, 11, 26, 12, tzinfo=UTC)
        group = BatchGroup.of([(b, *encode(b)) for b in items], at)
        outcomes = store.submit_group(group).result(10)
        assert outcomes[0] == Stored(at, duplicate=False)
        assert outcomes[1] == Stored(before.ack.received_at, duplicate=True)
        assert isinstance(outcomes[2], BatchConflict)
        assert outcomes[3] == Stored(at, duplicate=False)
        assert outcomes[4] == Stored(at, duplicate=True)  # the copy earlier in the same group
        assert {b.batch_id for b in store.batches()} == {first.batch_id, stored.batch_id, fresh.batch_id}
        assert count(store, "batch_features") == 6  # the repeats' child rows were left out
        assert count(store, "batch_labels") == 6
        seqs = store.fetch("SELECT seq FROM batches ORDER BY seq")
        assert len(set(seqs)) == 3
        device = store.device("d1")
        assert device is not None
        assert (device.last_seen, device.dropped_total) == (at, 2)  # the repeat is not counted again
        assert store.queued_batches == 0
        later = store.ingest(make_batch("d2"))  # numbering goes on after the group's
        assert later.ack.received_at > before.ack.received_at
        assert len({r[0] for r in store.fetch("SELECT seq FROM batches")}) == 4


def test_payloads_keep_histogram_names_only_and_batches_come_back_whole(tmp_path: Path) -> None:
    with DuckDBStore(tmp_path / "t.duckdb") as store:
        sent = [make_batch(rows=10 + i) for i in range(3)]
        for batch in sent:
            store.ingest(batch)
        stored = store.fetch("SELECT payload FROM batches ORDER BY seq")
        for (payload,) in stored:
            data = json.loads(payload)
            assert data["features"] == ["a", "machine"]  # the histograms are in batch_features
            assert data["scores"] == ["probability:ok"]
            assert data["latency"]["counts"]  # what no child table holds stays
        back = store.batches()
        assert back == sent
        assert [b.model_dump_json() for b in back] == [b.model_dump_json() for b in sent]  # key order too


def test_payloads_written_whole_by_an_earlier_version_still_read_back(tmp_path: Path) -> None:
    with DuckDBStore(tmp_path / "t.duckdb") as store:
        old, new = make_batch(), make_batch()
        store.ingest(old)
        store.ingest(new)
        store.write(
            lambda con: con.execute(
                "UPDATE batches SET payload = ? WHERE batch_id = ?", [old.model_dump_json(), old.batch_id]
            )
        ).result()
        assert store.batches() == [old, new]


_names = st.text(min_size=1, max_size=12)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_counts = st.lists(st.integers(min_value=0, max_value=2**40), max_size=6)


@st.composite
def batches(draw: st.DrawFn) -> TelemetryBatch:
    numeric = st.builds(FeatureTelemetry, edges=st.lists(_floats, max_size=5), counts=_counts)
    categorical = st.builds(FeatureTelemetry, values=st.lists(_names, max_size=4), counts=_counts)
    empty = st.builds(FeatureTelemetry, missing=st.integers(min_value=0, max_value=9))
    features = draw(st.dictionaries(_names, st.one_of(numeric, categorical, empty), max_size=6))
    scores = draw(
        st.dictionaries(
            _names, st.builds(Histogram, edges=st.lists(_floats, max_size=4), counts=_counts), max_size=3
        )
    )
    sample = draw(
        st.lists(st.builds(SampleRow, inputs=st.dictionaries(_names, _floats, max_size=3)), max_size=2)
    )
    return make_batch().model_copy(update={"features": features, "scores": scores, "sample": sample})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(batches(), min_size=1, max_size=4))
def test_any_batch_reads_back_exactly_as_it_was_sent(tmp_path: Path, sent: list[TelemetryBatch]) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.duckdb"
    with DuckDBStore(path) as store:
        for batch in sent:
            store.ingest(batch)
        back = store.batches()
    assert [b.model_dump_json() for b in back] == [b.model_dump_json() for b in sent]


def test_the_file_is_written_in_row_groups_of_the_configured_size(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    with DuckDBStore(path) as store:
        rows = 3 * ROW_GROUP_ROWS
        insert = f"INSERT INTO batch_labels SELECT range, 'ok', 1, NULL FROM range({rows})"
        store.write(lambda con: con.execute(insert)).result()
        store.write(lambda con: con.execute("CHECKPOINT")).result()
        groups = store.fetch("SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('batch_labels')")
        assert groups == [(3,)]  # DuckDB's default (122,880 rows a row group) would hold them in one
    with duckdb.connect(str(path)) as con:  # still a plain DuckDB file, for any tool
        assert con.execute("SELECT count(*) FROM batch_labels").fetchall() == [(rows,)]


def test_a_path_with_a_quote_opens(tmp_path: Path) -> None:
    path = tmp_path / "it's" / "t.duckdb"
    with DuckDBStore(path) as store:
        store.ingest(make_batch())
    with DuckDBStore(path) as store:
        assert store.batch_count() == 1


def test_duckdb_spills_beside_the_file_not_into_the_working_directory(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    with DuckDBStore(path) as store:
        assert store.fetch("SELECT current_setting('temp_directory')") == [(f"{path}.tmp",)]
