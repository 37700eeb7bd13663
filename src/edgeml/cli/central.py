"""``edgeml central``: run the central node, or write its first config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeml.cli._context import CliState, console

app = typer.Typer(
    help="The central node: fleet, device auth, telemetry, the fleet page.", no_args_is_help=True
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
