"""``pipeline run``'s first use: the signing key it creates is on the audit trail from its creation."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.audit import AuditLog
from edgeml.bundle.keys import list_keys
from edgeml.pipeline import ensure_signer
from edgeml.settings import load_settings
from edgeml.store import store_from_settings


def test_the_key_pipeline_run_creates_is_audited_when_created(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEML_AUDIT_ACTOR", "job:retrain")
    settings = load_settings()
    signer = ensure_signer(settings)
    assert [k.key_id for k in list_keys(settings.home)] == [signer.key_id]
    entries = AuditLog(store_from_settings(settings)).entries()
    assert [(e.actor, e.action, e.subject) for e in entries] == [
        ("job:retrain", "keys.create", signer.key_id)
    ]
    assert entries[0].after == {"active": signer.key_id}
    assert "pipeline run" in entries[0].reason
    # the next run finds the key: no second key, no second record
    assert ensure_signer(settings).key_id == signer.key_id
    assert len(AuditLog(store_from_settings(settings)).entries()) == 1
