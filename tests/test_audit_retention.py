"""SOX: the audit trail is kept seven years — no edgeml command deletes an entry younger than that."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgeml.audit import RETENTION_DAYS, AuditLog, check_delete
from edgeml.cli import main
from edgeml.errors import UserError
from edgeml.store.local import LocalStore


def test_store_rm_keeps_audit_entries_and_the_head(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert RETENTION_DAYS >= 7 * 365
    assert main(["keys", "init"]) == 0
    assert main(["keys", "rotate"]) == 0
    capsys.readouterr()
    for key in ("audit/000000000001.json", "audit/head.json"):
        assert main(["store", "rm", key]) == 2
        assert "kept" in capsys.readouterr().err
    assert main(["audit", "verify"]) == 0
    assert "intact: 2 entries" in capsys.readouterr().out
    note = clean_env / "note.txt"
    note.write_text("not audit")
    assert main(["store", "put", "notes/x.txt", str(note)]) == 0
    assert main(["store", "rm", "notes/x.txt"]) == 0  # anything else is deleted as before


def test_an_entry_past_the_retention_period_may_go(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    entry = AuditLog(store).append("cli:ana", "keys.init", "k1")
    key = "audit/000000000001.json"
    at = datetime.fromisoformat(entry.at)
    with pytest.raises(UserError, match="kept"):
        check_delete(store, key, now=at + timedelta(days=RETENTION_DAYS - 1))
    check_delete(store, key, now=at + timedelta(days=RETENTION_DAYS))
    with pytest.raises(UserError):
        check_delete(store, "audit/head.json", now=datetime.now(UTC) + timedelta(days=10 * 365))
    check_delete(store, "audit/000000000009.json")  # missing: nothing to keep
