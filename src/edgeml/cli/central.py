"""``edgeml central``: run the central node, or write its first config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeml.cli._context import CliState, console

app = typer.Typer(
    help="The central node: fleet, device auth, telemetry, the fleet page, retraining status.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    config: Annotated[
        Path, typer.Option("--config", help="central.yaml (see `edgeml central init`).", dir_okay=False)
    ],
    host: Annotated[
        str | None, typer.Option("--host", help="Address to serve on; overrides the config.")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="Port; overrides the config.")
    ] = None,
) -> None:
    """Serve the central node (uvicorn, one process) until interrupted."""
    from edgeml.central.config import load_central_config
    from edgeml.central.run import serve

    serve(load_central_config(config, host=host, port=port))


@app.command("init")
def init(
    ctx: typer.Context,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for central.yaml and the token files.", file_okay=False)
    ],
    store: Annotated[
        str | None,
        typer.Option("--store", help="Store URL with the channel pointers; default: the appliance's."),
    ] = None,
    keyring: Annotated[
        Path | None,
        typer.Option(
            "--keyring",
            help="Folder of trusted <key id>.pub files; default: this appliance's public keys, "
            "exported to OUT/keyring.",
            file_okay=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to serve on.")] = 8080,
) -> None:
    """Write central.yaml plus admin and bootstrap token files (mode 0600) into OUT."""
    from edgeml.central.run import init_central

    state: CliState = ctx.obj
    settings = state.settings()
    files = init_central(
        out, store_url=store or settings.store_url, keyring=keyring, keys_home=settings.home, port=port
    )
    console.print(f"wrote {files.config}, {files.admin_token} and {files.bootstrap_token} (mode 0600)")
    if files.keyring is None:
        console.print("[yellow]no key ring:[/] targets stay off until central.yaml names one (`keyring:`)")
    console.print(f"start it: edgeml central run --config {files.config}")


@app.command("seal")
def seal(
    ctx: typer.Context,
    config: Annotated[
        Path, typer.Option("--config", help="central.yaml (see `edgeml central init`).", dir_okay=False)
    ],
) -> None:
    """Encrypt the telemetry file at rest (DuckDB, AES-256-GCM; key in the appliance home).

    Only a telemetry file not created yet can be sealed: rows written before would stay in clear.
    """
    from edgeml.central.config import load_central_config
    from edgeml.telemetry.db.sealed import seal_telemetry_file

    state: CliState = ctx.obj
    db_path = load_central_config(config).db_path
    key = seal_telemetry_file(db_path, state.settings().home)
    console.print(
        f"{db_path} is sealed from its creation on; its key is {key} (back it up: lost, the data is lost)"
    )


@app.command("status")
def status(
    config: Annotated[
        Path, typer.Option("--config", help="central.yaml (see `edgeml central init`).", dir_okay=False)
    ],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Also show this model's last champion comparison (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """The retraining policy and its last decision, the last retraining job, and each model's last
    champion comparison."""
    from edgeml.central.config import load_central_config
    from edgeml.central.services.retraining import retraining_status

    found = retraining_status(load_central_config(config), list(model or []))
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    console.print(f"[bold]retraining[/]: {found.retraining}")
    for trigger in found.triggers:
        console.print(f"  trigger: {trigger}")
    for hold in found.holds:
        console.print(f"  hold: {hold}")
    if found.gates:
        console.print(f"  gates: {found.gates}")
    console.print(f"  labelled rows: {found.labelled_weight}")
    decision = found.last_decision
    if decision is not None:
        console.print(f"[bold]last decision[/] ({decision.at:%Y-%m-%d %H:%M:%S} UTC): {decision.reason}")
        for state in decision.triggers:
            console.print(f"  {state}")
    console.print(f"[bold]quality gate[/]: {found.quality_gate}")
    job = found.last_job
    if job is not None:
        why = f" (triggered by {job['reason']})" if job.get("reason") else ""
        console.print(
            f"[bold]last job[/]: {job['job_id']} {job['state']} (submitted {job['submitted_at']}, "
            f"since snapshot {job['since_snapshot'] or 'none'}){why}"
        )
    if not found.comparisons:
        console.print("no champion comparison yet")
    for c in found.comparisons:
        champion = f"champion v{c.champion}" if c.champion else "no champion yet"
        verdict = "[green]passed[/]" if c.passed else "[red]failed[/]"
        console.print(
            f"[bold]{c.model}[/]: challenger v{c.challenger} vs {champion}: {verdict} "
            f"({c.at:%Y-%m-%d %H:%M} UTC)"
        )
        for e in c.evidence:
            mine, theirs = e["challenger"].get(c.metric), e["champion"].get(c.metric)
            console.print(
                f"  {e['name']} ({e['rows']:,} rows): {c.metric} {mine:.4f} vs champion {theirs:.4f}"
                if mine is not None and theirs is not None
                else f"  {e['name']} ({e['rows']:,} rows): {c.metric} not measured on both"
            )
        for g in c.gates:
            console.print(f"  {'✓' if g['passed'] else '✗'} {g['name']}: {g['detail']}")
        if c.labelled:
            used = c.labelled
            console.print(
                f"  field labels: {used['rows']:,} rows (snapshot {used['snapshot']}), "
                f"{used['trained']:,} trained on x{used['weight']}, {used['held_out']:,} held out"
            )
        console.print(f"  → {c.outcome}")
