"""Access records (hipaa): every read of lake data by a command is on the audit trail.

Reads are recorded where a command turns a snapshot into rows — validation reading the lake parts,
feature building reading the validated parts, training, export and bundle building reading the
feature table, training reading the field's labelled rows, bundle building reading the parts landed
since the last bundle (device groups), the MQTT lander re-reading its recent parts — as one
``data.read`` entry each: who (the command's actor), what (dataset, stage, snapshot, parts, the
command), and when (the entry's time). Ray tasks read the parts the driver handed them, so the
driver's record covers them. ``tests/privacy/test_readers.py`` holds every function that reads lake
parts to this. Only specs under ``compliance: hipaa`` are recorded: the other modes' trails keep to
changes.
"""

from __future__ import annotations

import sys

from edgeml.audit import AuditLog, cli_actor
from edgeml.spec.models import Spec
from edgeml.store.base import ObjectStore

__all__ = ["DATA_PREFIXES", "record_object_read", "record_read"]

#: where rows of a dataset are kept, one folder per dataset under each
DATA_PREFIXES = ("lake/", "quarantine/", "validated/", "features/")


def _command() -> str:
    """The edgeml command running (``edgeml data validate``), or the program when it is not the CLI."""
    try:  # typer 0.2x runs its commands on a click of its own
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context  # type: ignore[no-redef]

    ctx = get_current_context(silent=True)
    if ctx is not None:
        return ctx.command_path
    return sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "python"


def record_read(
    store: ObjectStore,
    spec: Spec,
    stage: str,
    snapshot: str | None,
    parts: int,
    *,
    dataset: str | None = None,
    source: str | None = None,
) -> None:
    """Record that this command read ``parts`` parts of ``stage`` data of ``snapshot`` (None: parts
    of no snapshot yet, as a lander's own) of the spec's dataset, or of ``dataset`` (its labels);
    hipaa only."""
    if spec.compliance != "hipaa":
        return
    what: dict[str, object] = {"stage": stage, "snapshot": snapshot, "parts": parts, "command": _command()}
    if source is not None:
        what["source"] = source
    AuditLog(store).append(cli_actor(), "data.read", dataset or spec.name, after=what)


def record_object_read(store: ObjectStore, key: str) -> None:
    """Record a raw read of one object of a dataset's rows (``edgeml store cat|get``).

    The object says nothing of its spec's mode, so such a read is recorded in every mode.
    """
    stage = next((p for p in DATA_PREFIXES if key.startswith(p)), None)
    if stage is None:
        return
    dataset = key[len(stage) :].split("/", 1)[0]
    what = {"stage": stage.rstrip("/"), "key": key, "command": _command()}
    AuditLog(store).append(cli_actor(), "data.read", dataset, after=what)
