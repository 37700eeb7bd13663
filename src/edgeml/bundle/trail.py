"""What building a bundle writes to the audit trail (SOX: every change that can reach production).

A signed bundle is what a device can run, so each build is recorded with who built it, from which
spec (its fingerprint), snapshot and MLflow run, and with which key. Two more entries are written
when the build is the first sign of a change: ``spec.change`` when the model's spec fingerprint
differs from the one its last bundle was built from, and ``keys.create`` when the signing key has
no record of its creation (``pipeline run`` creates a key on first use, outside ``edgeml keys``).
"""

from __future__ import annotations

import hashlib

from edgeml.audit import AuditEntry, AuditLog
from edgeml.bundle.keys import canonical_json
from edgeml.bundle.manifest import Manifest

__all__ = ["KEY_ACTIONS", "audit_build", "audit_key_created"]

#: actions that record a signing key coming into being
KEY_ACTIONS = ("keys.init", "keys.rotate", "keys.create")


def audit_key_created(log: AuditLog, key_id: str, actor: str, reason: str) -> AuditEntry:
    """Record a key created outside ``edgeml keys`` (the hook ``pipeline run``'s first key takes)."""
    return log.append(actor, "keys.create", key_id, after={"active": key_id}, reason=reason)


def audit_build(log: AuditLog, manifest: Manifest, spec_fingerprint: str, actor: str) -> list[AuditEntry]:
    """Record a published bundle, and the key or spec change it is the first sign of."""
    entries = log.entries()
    written = []
    if not any(e.action in KEY_ACTIONS and e.subject == manifest.key_id for e in entries):
        written.append(
            audit_key_created(
                log, manifest.key_id, actor, "first signature by a key with no record of its creation"
            )
        )
    builds = [e for e in entries if e.action == "bundle.build" and e.subject.startswith(f"{manifest.model}/")]
    last = builds[-1].after.get("spec_fingerprint") if builds and isinstance(builds[-1].after, dict) else None
    if last != spec_fingerprint:
        written.append(
            log.append(
                actor,
                "spec.change",
                manifest.model,
                before=last,
                after=spec_fingerprint,
                reason=f"version {manifest.version} is the first built from this spec",
            )
        )
    digest = hashlib.sha256(canonical_json(manifest.model_dump(mode="json"))).hexdigest()
    written.append(
        log.append(
            actor,
            "bundle.build",
            f"{manifest.model}/{manifest.version}/{manifest.profile}",
            after={
                "manifest_sha256": digest,
                "key_id": manifest.key_id,
                "spec_fingerprint": spec_fingerprint,
                "snapshot": manifest.snapshot,
                "mlflow_run_id": manifest.mlflow_run_id,
                "compliance": manifest.compliance,
            },
        )
    )
    return written
