"""``edgeml data erase`` and ``edgeml data retain``: rows out of a dataset, everywhere it keeps them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeml.cli._context import CliState, console

if TYPE_CHECKING:
    from edgeml.privacy.rewrite import RewriteResult
    from edgeml.spec import Spec

SpecOrDatasetArg = Annotated[
    str,
    typer.Argument(
        help="Pipeline spec (YAML), or the name of a dataset in the lake.", metavar="SPEC_OR_DATASET"
    ),
]


def _target(text: str) -> tuple[str, Spec | None]:
    from edgeml.spec import load_spec

    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        spec = load_spec(path)
        return spec.name, spec
    return text, None


def _report(verb: str, result: RewriteResult) -> None:
    rows = ", ".join(f"{n:,} {stage}" for stage, n in result.rows.items() if n) or "none"
    console.print(f"{result.dataset}: rows {verb}: {rows}")
    for old, new in result.snapshots.items():
        console.print(f"  snapshot {old} → {new}")
    if result.record:
        console.print(f"recorded in {result.record} and on the audit trail")


def erase(
    ctx: typer.Context,
    target: SpecOrDatasetArg,
    where: Annotated[str, typer.Option("--where", help='Rows to erase: "<column> = <value>".')],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (e.g. the request's ticket), for the audit trail.")
    ] = "",
) -> None:
    """Erase a data subject's rows from the lake, quarantine, validated parts and feature tables.

    Snapshots that held them are replaced by new ones (ids printed); the erasure is audited with the
    column and the value's sha256, never the value.
    """
    from edgeml.audit import cli_actor
    from edgeml.privacy.erase import erase as run_erase
    from edgeml.privacy.erase import parse_where
    from edgeml.store import store_from_settings

    state: CliState = ctx.obj
    clause = parse_where(where)
    dataset, spec = _target(target)
    columns = set(spec.schema_.columns) if spec is not None else None
    store = store_from_settings(state.settings())
    result = run_erase(store, dataset, clause, actor=cli_actor(), reason=reason, columns=columns)
    _report("erased", result)


def retain(
    ctx: typer.Context,
    spec_path: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).", dir_okay=False)],
    days: Annotated[
        int | None,
        typer.Option("--days", min=1, help="Keep this many days; default: the spec's retention_days."),
    ] = None,
) -> None:
    """Remove rows older than the retention period from every stage of the spec's dataset.

    Idempotent: run it daily from a timer (docs/compliance.md).
    """
    from edgeml.audit import cli_actor
    from edgeml.errors import UserError
    from edgeml.privacy.retain import retain as run_retain
    from edgeml.spec import load_spec
    from edgeml.store import store_from_settings

    state: CliState = ctx.obj
    spec = load_spec(spec_path)
    keep = days if days is not None else spec.retention_days
    if keep is None:
        raise UserError(
            f"{spec_path} sets no retention_days", hint="set `retention_days: N` in the spec or pass --days N"
        )
    store = store_from_settings(state.settings())
    result = run_retain(store, spec.name, spec.schema_.timestamp, keep, actor=cli_actor())
    _report(f"older than {keep} days removed", result)
