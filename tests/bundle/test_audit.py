"""The audit trail: rollouts and key changes are recorded; editing, deleting or truncating it is detected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeml.audit import AuditLog
from edgeml.bundle.keys import Signer
from edgeml.bundle.rollout import promote, rollback
from edgeml.bundle.rollout import publish as publish_channel
from edgeml.cli import main
from edgeml.store.base import ObjectStore

from .conftest import Publish


def _rollouts(publish: Publish, store: ObjectStore, signer: Signer) -> AuditLog:
    publish(1, seed=1)
    publish(2, seed=2)
    publish_channel(store, signer, "pump", 1, "stable", actor="cli:alice")
    publish_channel(store, signer, "pump", 2, "canary", groups=["line-a"], actor="cli:alice")
    promote(store, signer, "pump", actor="central:auto", reason="canary held its accuracy for 1 h")
    rollback(store, signer, "pump", "stable", 1, reason="alarms on line-a", actor="cli:bob")
    return AuditLog(store)


def test_every_rollout_change_is_recorded_with_who_what_and_why(
    publish: Publish, store: ObjectStore, signer: Signer
) -> None:
    log = _rollouts(publish, store, signer)
    entries = log.entries()
    assert [(e.actor, e.action, e.subject) for e in entries] == [
        ("cli:alice", "rollout.publish", "pump/stable"),
        ("cli:alice", "rollout.publish", "pump/canary"),
        ("central:auto", "rollout.promote", "pump/stable"),
        ("cli:bob", "rollout.rollback", "pump/stable"),
        ("cli:bob", "rollout.withdraw", "pump/canary"),
    ]
    assert entries[2].before["version"] == 1  # type: ignore[index]
    assert entries[2].after["version"] == 2  # type: ignore[index]
    assert entries[3].reason == "alarms on line-a"
    assert log.verify() == []


def test_the_latest_entries_are_read_from_the_head_back(
    publish: Publish, store: ObjectStore, signer: Signer
) -> None:
    log = _rollouts(publish, store, signer)
    assert [e.seq for e in log.latest(3)] == [5, 4, 3]
    assert [e.seq for e in log.latest(50)] == [5, 4, 3, 2, 1]
    store.delete("audit/000000000004.json")
    assert [e.seq for e in log.latest(3)] == [5, 3]  # a missing entry is skipped; verify() names it
    assert AuditLog(store).latest(0) == []


def test_an_edited_entry_is_detected(publish: Publish, store: ObjectStore, signer: Signer) -> None:
    log = _rollouts(publish, store, signer)
    key = "audit/000000000004.json"
    doc = json.loads(store.get(key))
    doc["actor"] = "cli:nobody"
    store.put(key, json.dumps(doc).encode())
    assert log.verify() == ["entry 4 was edited: its hash does not match its content"]


def test_a_deleted_entry_is_detected(publish: Publish, store: ObjectStore, signer: Signer) -> None:
    log = _rollouts(publish, store, signer)
    store.delete("audit/000000000002.json")
    problems = log.verify()
    assert "entries 2..2 are missing (deleted)" in problems
    assert "entry 3 does not follow entry 2: the chain is broken" in problems


def test_a_removed_last_entry_is_detected(publish: Publish, store: ObjectStore, signer: Signer) -> None:
    log = _rollouts(publish, store, signer)
    store.delete("audit/000000000005.json")
    assert log.verify() == ["the head names entry 5, the log ends at entry 4: entries were removed"]


def test_a_rewritten_chain_is_detected(publish: Publish, store: ObjectStore, signer: Signer) -> None:
    """Re-hashing an edited entry does not help: the next entry still points at the old hash."""
    from edgeml.audit import AuditEntry

    log = _rollouts(publish, store, signer)
    key = "audit/000000000003.json"
    entry = AuditEntry.model_validate_json(store.get(key)).model_copy(update={"reason": "nothing to see"})
    entry = entry.model_copy(update={"hash": entry.digest()})
    store.put(key, entry.model_dump_json().encode())
    assert log.verify() == ["entry 4 does not follow entry 3: the chain is broken"]


def test_cli_keys_and_audit_commands(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "init"]) == 0
    assert main(["keys", "rotate"]) == 0
    capsys.readouterr()
    assert main(["audit", "list"]) == 0
    out = capsys.readouterr().out
    assert "keys.init" in out
    assert "keys.rotate" in out
    assert main(["audit", "verify"]) == 0
    assert "audit trail intact: 2 entries" in capsys.readouterr().out
    (clean_env / "store" / "audit" / "000000000001.json").write_text("{}")
    assert main(["audit", "verify"]) == 3
    assert "tampered:" in capsys.readouterr().err


APPENDER = """
import json, sys
from pathlib import Path
from edgeml.audit import AuditLog
from edgeml.store import LocalStore
from edgeml.settings import S3Settings
from edgeml.store.s3 import S3Store
where = json.loads(sys.argv[1])
if where["kind"] == "local":
    store = LocalStore(Path(where["root"]))
else:
    store = S3Store(where["bucket"], S3Settings.model_validate(where["settings"]), prefix=where["prefix"])
log = AuditLog(store)
sys.stdin.readline()  # every appender starts at once
for n in range(int(sys.argv[2])):
    log.append(sys.argv[3], "device.register", f"dev-{n}")
"""


def test_appenders_in_two_processes_at_once_keep_one_chain(store: ObjectStore) -> None:
    import subprocess
    import sys

    from edgeml.store import LocalStore
    from edgeml.store.s3 import S3Store

    if isinstance(store, LocalStore):
        where: dict[str, object] = {"kind": "local", "root": str(store.root)}
    else:
        assert isinstance(store, S3Store)
        settings = store.settings.model_dump(mode="json")
        for name in ("access_key", "secret_key"):  # dumped masked
            secret = getattr(store.settings, name)
            settings[name] = secret.get_secret_value() if secret else None
        # the product's retries, not the fixture's none: S3 servers answer a transient 500 now and
        # then (moto does under concurrent writes of one key, with load), and clients retry them
        settings["retries"] = type(store.settings).model_fields["retries"].default
        where = {"kind": "s3", "bucket": store.bucket, "prefix": store.prefix, "settings": settings}
    each = 25
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, json.dumps(where), str(each), actor],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for actor in ("central:quality-gate", "cli:alice")
    ]
    try:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    log = AuditLog(store)
    assert log.verify() == []
    entries = log.entries()
    assert [e.seq for e in entries] == list(range(1, 2 * each + 1))
    for actor in ("central:quality-gate", "cli:alice"):
        assert [e.subject for e in entries if e.actor == actor] == [f"dev-{n}" for n in range(each)]
    assert log.latest(1)[0] == entries[-1]


# --- export for auditors ----------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "compliance.md"


def _offline_check() -> str:
    """The standard-library-only checker docs/compliance.md gives auditors."""
    text = DOCS.read_text(encoding="utf-8")
    return text.split("```python audit-check\n", 1)[1].split("```", 1)[0]


def _export(args: list[str], out: Path) -> list[dict[str, object]]:
    assert main(["audit", "export", "--out", str(out), *args]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_an_export_is_a_time_range_an_auditor_verifies_offline(
    clean_env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import subprocess
    import sys

    from edgeml.store import LocalStore

    log = AuditLog(LocalStore(clean_env / "store"))
    for n in range(6):
        log.append("cli:alice", "rollout.publish", f"pump/{n}", after={"version": n})
    entries = log.entries()
    everything = _export([], tmp_path / "all.jsonl")
    assert [e["seq"] for e in everything] == [1, 2, 3, 4, 5, 6]
    middle = _export(["--since", entries[2].at, "--until", entries[5].at], tmp_path / "mid.jsonl")
    assert [e["seq"] for e in middle] == [3, 4, 5]
    assert middle[0]["prev_hash"] == entries[1].hash  # links to the entry before the range
    assert main(["audit", "verify-export", str(tmp_path / "mid.jsonl")]) == 0

    check = [sys.executable, "-I", "-c", _offline_check()]  # -I: no edgeml on the path
    ok = subprocess.run([*check, str(tmp_path / "mid.jsonl")], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "3 entries intact" in ok.stdout

    # an auditor's copy edited, or with an entry taken out, fails both checks
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    edited = json.loads(lines[3])
    edited["actor"] = "cli:nobody"
    (tmp_path / "edited.jsonl").write_text("\n".join([*lines[:3], json.dumps(edited), *lines[4:]]) + "\n")
    (tmp_path / "gap.jsonl").write_text("\n".join([*lines[:2], *lines[3:]]) + "\n")
    capsys.readouterr()
    assert main(["audit", "verify-export", str(tmp_path / "edited.jsonl")]) == 3
    assert "line 4 (entry 4) was edited" in capsys.readouterr().err
    assert main(["audit", "verify-export", str(tmp_path / "gap.jsonl")]) == 3
    assert "line 3 (entry 4) does not follow entry 2" in capsys.readouterr().err
    for bad in ("edited.jsonl", "gap.jsonl"):
        run = subprocess.run([*check, str(tmp_path / bad)], capture_output=True, text=True, check=False)
        assert run.returncode == 1, bad


def test_an_export_with_a_bad_time_says_which_option(
    clean_env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["audit", "export", "--out", str(tmp_path / "x.jsonl"), "--since", "last tuesday"]) == 2
    err = capsys.readouterr().err
    assert "--since 'last tuesday' is not a date or time" in err
    assert not (tmp_path / "x.jsonl").exists()
