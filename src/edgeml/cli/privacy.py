"""``edgeml data erase`` and ``edgeml data retain``: rows out of a dataset, everywhere it keeps them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeml.cli._context import CliState, console

if TYPE_CHECKING:
    from edgeml.privacy.erase import Erasure
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
    central: Annotated[
        str | None,
        typer.Option(
            "--central",
            envvar="EDGEML_CENTRAL_URL",
            help="Also erase the central node's logged predictions and labels matching --where.",
        ),
    ] = None,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(
            "--admin-token-file", dir_okay=False, help="The central node's admin token (with --central)."
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow tracking whose runs' kept holdout rows to erase too; default: the SQLite file "
            "in the appliance home, when there is one.",
        ),
    ] = None,
) -> None:
    """Erase a data subject's rows from the lake, quarantine, validated parts and feature tables,
    validation reports' failing examples and the holdout rows MLflow keeps for each run.

    Snapshots that held them are replaced by new ones (ids printed); the erasure is audited with the
    column and the value's sha256, never the value. With --central, the central node then deletes
    the logged predictions whose input matches, their labels and telemetry row samples (audited there too).
    """
    from edgeml.audit import cli_actor
    from edgeml.privacy.erase import erase as run_erase
    from edgeml.privacy.sealed_rows import kept_rows_key
    from edgeml.privacy.where import parse_where
    from edgeml.store import store_from_settings
    from edgeml.train.tracking import tracking_uri as default_uri

    state: CliState = ctx.obj
    clause = parse_where(where)
    token = _admin_token(central, admin_token_file)
    dataset, spec = _target(target)
    columns = set(spec.schema_.columns) if spec is not None else None
    settings = state.settings()
    store = store_from_settings(settings)
    # the home's tracking DB only when training made it: opening one would create it
    tracking = tracking_uri or (default_uri(settings) if (settings.home / "mlflow.db").exists() else None)
    from edgeml.train.pipeline import input_layout

    layout = input_layout(spec) if spec is not None else None
    done = run_erase(
        store,
        dataset,
        clause,
        actor=cli_actor(),
        reason=reason,
        columns=columns,
        tracking=tracking,
        layout=layout,
        kept_key=kept_rows_key(settings),
    )
    _report("erased", done.lake)
    _report_kept(done)
    if central is not None and token is not None:
        _erase_on_central(central, token, where, reason)


def _report_kept(done: Erasure) -> None:
    console.print(f"validation reports: {done.examples:,} failing examples erased")
    if done.bundles:  # signed: not rewritten here (docs/compliance.md, "Erasure and published bundles")
        console.print(
            f"published bundles: {len(done.bundles):,} signed manifests hold erased rows in their golden "
            "samples and were left as signed: publish a version trained since, then delete these"
        )
        for key, n in done.bundles.items():
            console.print(f"  {key}: {n:,} golden rows")
    else:
        console.print("published bundles: no golden sample holds an erased row")
    if done.tracking is None:
        console.print("MLflow: no tracking database in the appliance home (--tracking-uri names one)")
        return
    rows = sum(done.holdouts.values())
    console.print(f"MLflow: {rows:,} kept holdout rows erased in {len(done.holdouts):,} runs")
    for run_id, n in done.holdouts.items():
        console.print(f"  run {run_id}: {n:,} rows")
    examples = done.model_examples
    console.print(f"MLflow: input examples of {len(examples):,} models replaced by a synthesised row")
    for model_id, n in examples.items():
        console.print(f"  model {model_id}: {n:,} rows")


def _admin_token(central: str | None, path: Path | None) -> str | None:
    """The admin token, read before anything is erased: a missing one must not leave half the work."""
    from edgeml.errors import UserError

    if central is None:
        if path is not None:
            raise UserError("--admin-token-file is for --central: name the central node too")
        return None
    if path is None:
        raise UserError("--central needs --admin-token-file (the central node's admin token)")
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UserError(f"cannot read --admin-token-file {path}: {exc.strerror}") from exc
    if not token:
        raise UserError(f"--admin-token-file {path} is empty")
    return token


def _erase_on_central(central: str, token: str, where: str, reason: str) -> None:
    import httpx

    from edgeml.errors import UserError

    url = central.rstrip("/") + "/v1/erase"
    body = {"where": where, "reason": reason}
    done = "the lake's rows are erased; run this again to finish (erasing twice is harmless)"
    try:
        answer = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    except httpx.HTTPError as exc:
        raise UserError(f"the central node at {central} is not reachable: {exc}", hint=done) from exc
    if answer.status_code != 200:
        detail = (
            answer.json().get("detail", "")
            if answer.headers.get("content-type") == "application/json"
            else ""
        )
        raise UserError(
            f"the central node at {central} answered {answer.status_code}: {detail or answer.text[:200]}",
            hint=done,
        )
    erased = answer.json()
    console.print(
        f"central node {central}: {erased['predictions']:,} logged predictions, "
        f"{erased['labels']:,} labels and {erased['samples']:,} telemetry row samples erased"
        + ("" if erased["audited"] else " (no audit trail there: it has no store)")
    )
    if not erased["column_logged"]:
        console.print(
            f"  no logged prediction holds column {erased['column']!r}"
            " (a pii column never leaves a device under gdpr/hipaa)"
        )


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
