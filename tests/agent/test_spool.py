"""The spool keeps every batch it took, through kill -9, within its bounds, and says what it dropped."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgeml.agent.spool import Spool
from edgeml.bundle.manifest import Histogram
from edgeml.observability import REGISTRY
from edgeml.telemetry.schema import LATENCY_EDGES, TelemetryBatch


def make_batch(rows: int = 10) -> TelemetryBatch:
    now = datetime.now(UTC)
    return TelemetryBatch(
        device_id="dev-1",
        batch_id=uuid.uuid4().hex,
        model="pump",
        version=1,
        profile="x86-64-generic",
        window_start=now,
        window_end=now,
        rows=rows,
        requests=rows,
        features={},
        predictions={"ok": rows},
        scores={},
        latency=Histogram(edges=LATENCY_EDGES, counts=[rows] + [0] * len(LATENCY_EDGES)),
    )


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def size_of(batch: TelemetryBatch, dropped_before: int = 0) -> int:
    return len(batch.model_copy(update={"dropped_before": dropped_before}).model_dump_json().encode())


def test_put_peek_ack_in_order_with_gauges(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        batches = [make_batch(i + 1) for i in range(5)]
        for batch in batches:
            assert spool.put(batch) == batch
        assert len(spool) == 5
        assert spool.bytes == sum(size_of(b) for b in batches)
        assert metric("edgeml_telemetry_spool_batches") == 5
        assert metric("edgeml_telemetry_spool_bytes") == spool.bytes
        assert spool.peek(3) == batches[:3]
        assert spool.put(batches[0]) == batches[0]  # again: already here, nothing changes
        assert len(spool) == 5
        assert spool.ack(batches[1].batch_id)
        assert not spool.ack(batches[1].batch_id)
        assert spool.peek(10) == [batches[0], *batches[2:]]
        assert metric("edgeml_telemetry_spool_batches") == 4
    with Spool(tmp_path / "spool.db") as spool:  # a restart finds them, and the gauges say so
        assert [b.rows for b in spool.peek(10)] == [1, 3, 4, 5]
        assert (
            metric("edgeml_telemetry_spool_bytes") == spool.bytes == sum(size_of(b) for b in spool.peek(10))
        )
        journal = sqlite3.connect(tmp_path / "spool.db").execute("PRAGMA journal_mode").fetchone()[0]
        assert journal == "wal"


def test_full_spool_drops_the_oldest_and_reports_it(tmp_path: Path) -> None:
    batches = [make_batch(i + 1) for i in range(4)]
    budget = size_of(batches[0]) * 2 + 5  # two batches, with room for a "dropped_before" of a few digits
    before = metric("edgeml_telemetry_dropped_batches_total")
    with Spool(tmp_path / "spool.db", max_bytes=budget) as spool:
        spool.put(batches[0])
        spool.put(batches[1])
        stored = spool.put(batches[2])
        assert stored is not None
        assert stored.dropped_before == 1
        assert [b.batch_id for b in spool.peek(10)] == [batches[1].batch_id, batches[2].batch_id]
        assert spool.bytes <= budget
        # the oldest now carries the news of a drop; if it goes too, the news goes on with the next one
        stored = spool.put(batches[3])
        assert stored is not None
        assert [b.rows for b in spool.peek(10)] == [3, 4]
        assert [b.dropped_before for b in spool.peek(10)] == [1, 1]
    assert metric("edgeml_telemetry_dropped_batches_total") - before == 2
    with Spool(tmp_path / "spool.db", max_bytes=budget) as spool:
        assert spool.dropped_total == 2
        assert sum(b.dropped_before for b in spool.peek(10)) == 2


def test_drop_news_survives_when_its_carrier_is_dropped(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db", max_batches=1) as spool:
        spool.put(make_batch(1))
        second = spool.put(make_batch(2))
        third = spool.put(make_batch(3))
        assert second is not None
        assert third is not None
        assert (second.dropped_before, third.dropped_before) == (1, 2)
        assert spool.dropped_total == 2


def test_the_batch_being_sent_is_not_dropped_and_a_dropped_one_is_not_sent(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db", max_batches=2) as spool:
        first, second = make_batch(1), make_batch(2)
        spool.put(first)
        spool.put(second)
        assert spool.claim(first.batch_id)
        spool.put(make_batch(3))  # full: the oldest not being sent goes
        assert [b.rows for b in spool.peek(10)] == [1, 3]
        assert not spool.claim(second.batch_id)  # dropped and counted: it must not arrive as well
        spool.release()
        spool.put(make_batch(4))
        assert [b.rows for b in spool.peek(10)] == [3, 4]
        assert spool.dropped_total == 2


def test_a_batch_too_big_for_the_spool_is_dropped_counted_and_reported(tmp_path: Path) -> None:
    small = make_batch(1)
    budget = size_of(small) + 50
    with Spool(tmp_path / "spool.db", max_bytes=budget) as spool:
        spool.put(small)
        big = make_batch(2).model_copy(update={"errors": {f"kind-{i}": i for i in range(50)}})
        assert spool.put(big) is None
        assert [b.rows for b in spool.peek(10)] == [1]  # nothing was evicted for it
    with Spool(tmp_path / "spool.db", max_bytes=budget) as spool:  # the unreported drop is on disk
        spool.ack(small.batch_id)
        stored = spool.put(make_batch(3))
        assert stored is not None
        assert stored.dropped_before == 1


CHILD = textwrap.dedent(
    """
    import sys, uuid
    from datetime import UTC, datetime
    from pathlib import Path
    from edgeml.agent.spool import Spool
    from edgeml.telemetry.schema import LATENCY_EDGES, TelemetryBatch
    from edgeml.bundle.manifest import Histogram

    spool = Spool(Path(sys.argv[1]))
    now = datetime.now(UTC)
    put = []
    for i in range(1_000_000):
        batch = TelemetryBatch(
            device_id="dev-1", batch_id=uuid.uuid4().hex, model="pump", version=1, profile="p",
            window_start=now, window_end=now, rows=i, requests=i, features={}, predictions={},
            scores={}, latency=Histogram(edges=LATENCY_EDGES, counts=[0] * (len(LATENCY_EDGES) + 1)),
        )
        spool.put(batch)
        print("P", batch.batch_id, flush=True)
        put.append(batch.batch_id)
        if i % 3 == 2:  # acknowledge some, as the pusher would, interleaved with puts
            victim = put.pop(0)
            print("A", victim, flush=True)
            spool.ack(victim)
    """
)


@pytest.mark.parametrize("target", [40, 150, 400])
def test_kill_9_while_writing_loses_no_acknowledged_put(tmp_path: Path, target: int) -> None:
    """SIGKILL a process in the middle of writing batches: the spool reopens consistent and complete."""
    script = tmp_path / "writer.py"
    script.write_text(CHILD)
    db = tmp_path / "spool.db"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db)], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert proc.stdout is not None
    lines: list[str] = []
    puts = 0
    while puts < target:
        line = proc.stdout.readline()
        assert line, "the writer ended before it was killed"
        lines.append(line)
        puts += line.startswith("P")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # read the rest through the same buffered reader (communicate() would skip what it read ahead)
    lines += proc.stdout.read().splitlines(keepends=True)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    complete = [line.split() for line in lines if line.endswith("\n")]
    put = {bid for kind, bid in complete if kind == "P"}
    ack_started = {bid for kind, bid in complete if kind == "A"}
    assert len(put) >= target

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with Spool(db) as spool:
        stored = {b.batch_id for b in spool.peek(10**6)}
        assert put - ack_started <= stored  # every put that returned, and was not being acknowledged
        assert len(stored - put) <= 1  # at most the put in flight at the kill, whole
        assert len(spool) == len(stored)
        assert spool.bytes == sum(size_of(b, b.dropped_before) for b in spool.peek(10**6))
        assert spool.dropped_total == 0
