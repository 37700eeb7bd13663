"""hipaa access records: every command that reads lake data leaves a ``data.read`` entry (who, what, when)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edgeml.audit import ACTOR_ENV, AuditEntry, AuditLog, cli_actor
from edgeml.cli import main
from edgeml.settings import Settings
from edgeml.store import store_from_settings
from edgeml.train.data import load_training_data
from train.helpers import faults_spec, make_snapshot, simulate_frame, spec_from_dict


def _reads(settings: Settings) -> list[AuditEntry]:
    return [e for e in AuditLog(store_from_settings(settings)).entries() if e.action == "data.read"]


def test_every_read_of_lake_data_is_recorded_under_hipaa(
    clean_env: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_from_dict({**faults_spec("ward-pumps"), "compliance": "hipaa"}, tmp_path)
    started = datetime.now(UTC)
    snapshot = make_snapshot(spec, settings, simulate_frame(machines=3, readings=400))
    reads = _reads(settings)
    assert [(e.subject, e.after["stage"], e.after["snapshot"]) for e in reads] == [
        ("ward-pumps", "lake", snapshot),  # validation reads the landed parts
        ("ward-pumps", "validated", snapshot),  # feature building reads the validated ones
    ]
    assert all(e.actor == cli_actor() and e.after["parts"] >= 1 for e in reads)
    assert all(datetime.fromisoformat(e.at) >= started for e in reads)  # when

    load_training_data(spec, settings)  # training, export and bundle building read through here
    assert _reads(settings)[-1].after["stage"] == "features"

    monkeypatch.setenv(ACTOR_ENV, "central:auto")  # a retraining job the node started reads as itself
    assert main(["validate", str(tmp_path / "ward-pumps.yaml")]) == 0
    monkeypatch.delenv(ACTOR_ENV)
    assert main(["features", str(tmp_path / "ward-pumps.yaml")]) == 0
    last = _reads(settings)[-2:]
    assert [(e.actor, e.after["command"], e.after["stage"]) for e in last] == [
        ("central:auto", "edgeml validate", "lake"),
        (cli_actor(), "edgeml features", "validated"),
    ]
    assert AuditLog(store_from_settings(settings)).verify() == []


@pytest.mark.integration
@pytest.mark.slow
def test_the_lander_re_reading_its_recent_parts_is_one_read(mosquitto: Any, settings: Settings) -> None:
    """A restarted MQTT lander reads its recent parts back (the message ids it landed): one entry for
    the lot, however many parts; a first start, with nothing landed, reads nothing."""
    from edgeml.ingest.lake import source_parts
    from edgeml.ingest.mqtt import lander_for
    from edgeml.simulate.publish import publish_records
    from edgeml.spec import parse_spec
    from ingest.test_mqtt import SPEC, readings, wait_until

    text = SPEC.format(url=mosquitto.url, client_id="ward-1", max_rows=100, max_seconds=0.5)
    spec = parse_spec(text.replace("name: stream-test", "name: ward-stream\ncompliance: hipaa"))
    records = readings(100)  # 300 messages, parts of at most 100 rows
    with lander_for(spec, settings, None) as lander:
        publish_records(records, mosquitto.url)
        wait_until(lambda: lander.stats.landed == len(records))
    assert _reads(settings) == []
    parts = len(source_parts(store_from_settings(settings), spec.name, "live"))
    assert parts >= 3
    with lander_for(spec, settings, None):
        pass
    (read,) = _reads(settings)
    assert (read.actor, read.subject) == (cli_actor(), "ward-stream")
    assert {k: read.after[k] for k in ("stage", "snapshot", "parts", "source")} == {
        "stage": "lake",
        "snapshot": None,
        "parts": parts,
        "source": "live",
    }


def test_other_modes_keep_reads_off_the_trail(clean_env: Path, settings: Settings, tmp_path: Path) -> None:
    spec = spec_from_dict(faults_spec("plain-pumps"), tmp_path)
    make_snapshot(spec, settings, simulate_frame(machines=3, readings=400))
    load_training_data(spec, settings)
    assert _reads(settings) == []


def test_raw_reads_of_a_datasets_objects_are_recorded_in_every_mode(
    clean_env: Path, settings: Settings, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    spec = spec_from_dict(faults_spec("plain-pumps"), tmp_path)
    make_snapshot(spec, settings, simulate_frame(machines=3, readings=400))
    store = store_from_settings(settings)
    part = next(k for k in store.keys("lake/plain-pumps/") if k.endswith(".parquet"))
    assert main(["store", "cat", part]) == 0
    assert capsysbinary.readouterr().out == store.get(part)
    assert main(["store", "get", part, str(tmp_path / "part.parquet")]) == 0
    assert main(["store", "cat", "catalog/plain-pumps/latest.json"]) == 0  # not rows: not recorded
    assert main(["store", "cat", "lake/plain-pumps/no-such.parquet"]) == 1  # nothing read
    assert [(e.subject, e.after["stage"], e.after["key"], e.after["command"]) for e in _reads(settings)] == [
        ("plain-pumps", "lake", part, "edgeml store cat"),
        ("plain-pumps", "lake", part, "edgeml store get"),
    ]
