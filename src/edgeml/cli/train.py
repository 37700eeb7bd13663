"""``edgeml train`` and ``edgeml models``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgeml.cli._context import CliState, console, err_console
from edgeml.cli.data import RayOpt, SnapshotOpt, SpecArg, _load

TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri", help="MLflow tracking server or DB; default: a SQLite file in the appliance home."
    ),
]

app = typer.Typer(help="Registered models: versions, aliases, promotion.", no_args_is_help=True)


def train(
    ctx: typer.Context,
    spec_path: SpecArg,
    snapshot: SnapshotOpt = None,
    tracking_uri: TrackingOpt = None,
    ray_address: RayOpt = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Override search.trials (e.g. a quick run).")
    ] = None,
) -> None:
    """Tune and train on a snapshot (Ray Tune + Optuna), log to MLflow, register, and apply the gates.

    A model that passes every gate gets the alias `challenger`; one that fails is kept but not
    aliased, and the failing gates are printed with the shortfall.
    """
    from edgeml.train.run import train as run_train

    spec, settings = _load(ctx, spec_path, ray_address)
    if trials is not None:
        spec = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": trials})})
    with console.status("training") as status:
        report = run_train(spec, settings, snapshot, tracking=tracking_uri, progress=status.update)
    table = Table(
        "metric",
        "holdout",
        "champion" if report.champion_version else "",
        title=f"{report.model} v{report.version}: {report.family} "
        f"(best of {report.trials} trials, {report.split} split)",
    )
    for name, value in report.holdout.items():
        theirs = report.champion_holdout.get(name)
        table.add_row(name, f"{value:.4f}", f"{theirs:.4f}" if theirs is not None else "")
    console.print(table)
    console.print(f"parameters: {', '.join(f'{k}={v}' for k, v in report.params.items()) or 'defaults'}")
    for gate in report.verdict.results:
        mark = "[green]pass[/]" if gate.passed else "[red]FAIL[/]"
        console.print(f"  gate {escape(gate.name)}: {mark} — {escape(gate.detail)}")
    if report.verdict.passed:
        console.print(f"[bold green]✓[/] {report.model} v{report.version} is now the challenger")
    else:
        console.print(
            f"[bold yellow]✗[/] {report.model} v{report.version} is registered but not aliased: "
            "it failed a gate"
        )
    console.print(
        f"MLflow run {report.run_id}; plots: {', '.join(a for a in report.artifacts if a.endswith('.png'))}"
    )


@app.command("list")
def list_versions(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name (the spec's name).")],
    tracking_uri: TrackingOpt = None,
) -> None:
    """List a model's versions with their aliases, snapshot, family and holdout metrics."""
    import mlflow

    from edgeml.train.tracking import tracking_uri as default_uri

    state: CliState = ctx.obj
    mlflow.set_tracking_uri(default_uri(state.settings(), tracking_uri))
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        err_console.print(f"no registered model named {name!r}")
        raise typer.Exit(2)
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    table = Table("version", "aliases", "family", "snapshot", "gates", "metrics", title=f"model {name}")
    for v in sorted(versions, key=lambda v: int(v.version)):
        metrics = ", ".join(
            f"{k.removeprefix('holdout_')} {val}" for k, val in v.tags.items() if k.startswith("holdout_")
        )
        table.add_row(
            str(v.version),
            ", ".join(aliases.get(str(v.version), [])),
            v.tags.get("family", ""),
            v.tags.get("snapshot", ""),
            v.tags.get("gates", ""),
            metrics,
        )
    console.print(table)


@app.command("promote")
def promote(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[
        str | None, typer.Argument(help="Version to promote; default: the challenger.")
    ] = None,
    alias: Annotated[str, typer.Option(help="Alias to set.")] = "champion",
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")] = "",
    tracking_uri: TrackingOpt = None,
) -> None:
    """Point an alias (default `champion`) at a version (default: the current challenger); audited."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from edgeml.audit import cli_actor
    from edgeml.errors import UserError
    from edgeml.store import store_from_settings
    from edgeml.train.registry import move_alias
    from edgeml.train.tracking import tracking_uri as default_uri

    state: CliState = ctx.obj
    mlflow.set_tracking_uri(default_uri(state.settings(), tracking_uri))
    client = mlflow.MlflowClient()
    try:
        target = version or str(client.get_model_version_by_alias(name, "challenger").version)
        client.get_model_version(name, target)
        store = store_from_settings(state.settings())
        move_alias(client, store, name, alias, target, actor=cli_actor(), reason=reason)
    except MlflowException as exc:
        raise UserError(f"cannot promote {name} {version or '@challenger'}: {exc.message}") from exc
    console.print(f"{name}@{alias} → v{target}")
