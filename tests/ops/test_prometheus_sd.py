"""The file_sd JSON the central node writes for Prometheus, from its own Device records."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgeml.ops.prometheus_sd import write_sd_file
from edgeml.telemetry.schema import Device

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def device(name: str, group: str | None = "line-a", retired: bool = False) -> Device:
    return Device(
        device_id=name,
        group=group,
        profile="x86-64-generic",
        model="pump",
        registered_at=NOW,
        decommissioned_at=NOW if retired else None,
    )


def test_one_labelled_target_per_active_device(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "agents.json"
    fleet = [device("pump-2"), device("pump-1", group=None), device("old", retired=True)]
    assert write_sd_file(fleet, path) == 2
    assert json.loads(path.read_text()) == [
        {"targets": ["pump-1:8500"], "labels": {"device": "pump-1", "profile": "x86-64-generic"}},
        {
            "targets": ["pump-2:8500"],
            "labels": {"device": "pump-2", "group": "line-a", "profile": "x86-64-generic"},
        },
    ]
    assert path.stat().st_mode & 0o777 == 0o644


def test_addresses_come_from_the_caller_and_none_leaves_a_device_out(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    known = {"pump-1": "10.0.0.7:9100"}
    write_sd_file([device("pump-1"), device("pump-2")], path, address=lambda d: known.get(d.device_id))
    assert [e["targets"] for e in json.loads(path.read_text())] == [["10.0.0.7:9100"]]


def test_an_unchanged_fleet_does_not_touch_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    write_sd_file([device("pump-1")], path, port=9000)
    before = path.stat().st_mtime_ns
    write_sd_file([device("pump-1")], path, port=9000)
    assert path.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agents.json"]  # no temporary file left


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool: apt-get install prometheus")
def test_promtool_accepts_the_file(tmp_path: Path) -> None:
    sd = tmp_path / "agents.json"
    write_sd_file([device("pump-1"), device("pump-2", group=None)], sd)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "scrape_configs:\n  - job_name: agents\n    file_sd_configs:\n      - files: [" + str(sd) + "]\n"
    )
    done = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr
