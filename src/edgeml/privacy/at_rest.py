"""hipaa: a dataset's rows land only in a store that keeps them encrypted at rest.

Checked before a ``compliance: hipaa`` spec's rows first land (``edgeml ingest``, ``pipeline run``,
the MQTT lander), so a misconfigured appliance stops before writing anything in clear:

- a local folder store that is sealed (:mod:`edgeml.store.sealed`) passes; an empty one is sealed
  there and then, as ``edgeml store seal`` does (the key's path is logged: back it up; audited as
  ``store.seal``); one that already holds objects in clear is refused — they would stay in clear
  beside the sealed ones — naming ``edgeml store seal``, which seals them in place;
- S3/MinIO passes only with ``store.s3.server_side_encryption`` set (``AES256``, or ``aws:kms``):
  whether the server can encrypt (a MinIO needs a KMS) is the server's to say, on the first write;
- ``memory://`` keeps nothing at rest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from edgeml.audit import AuditLog, cli_actor
from edgeml.errors import UserError
from edgeml.settings import Settings
from edgeml.spec.models import Spec
from edgeml.store import store_from_settings
from edgeml.store.local import LocalStore
from edgeml.store.sealed import enable_sealing, sealing_key

__all__ = ["require_encryption_at_rest"]

log = logging.getLogger(__name__)


def require_encryption_at_rest(spec: Spec, settings: Settings) -> Path | None:
    """Make sure ``spec``'s rows will be encrypted at rest (hipaa only): the key file when this call
    sealed the local store, else None; a UserError naming the fix when they cannot be."""
    if spec.compliance != "hipaa":
        return None
    if urlsplit(settings.store_url).scheme == "s3":
        if settings.store.s3.server_side_encryption == "none":
            raise UserError(
                f"{spec.name} is under compliance hipaa, which keeps data encrypted at rest, and "
                f"{settings.store_url} asks no server-side encryption "
                "(store.s3.server_side_encryption is none)",
                hint="set store.s3.server_side_encryption: AES256 (or aws:kms with kms_key_id); "
                "a MinIO needs its KMS configured to accept it",
            )
        return None
    store = store_from_settings(settings)
    if not isinstance(store, LocalStore) or sealing_key(store.root, "store") is not None:
        return None
    if store.keys():
        raise UserError(
            f"{spec.name} is under compliance hipaa, which keeps data encrypted at rest, and the store "
            f"{store.url} holds objects in clear: nothing was written",
            hint="seal them in place with `edgeml store seal` (stop the appliance's writers first), "
            "or point store.url at a new folder, then ingest again",
        )
    key = enable_sealing(store.root, settings.home)
    log.warning("compliance hipaa: sealed the store %s (AES-256-GCM); key %s: back it up", store.url, key)
    AuditLog(LocalStore(store.root)).append(
        cli_actor(),
        "store.seal",
        store.url,
        after={"key_file": str(key)},
        reason=f"compliance hipaa: {spec.name}",
    )
    return key
