"""``edgeml up`` / ``down`` / ``status``: the single-node appliance as background processes."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgeml.cli._context import CliState, console
from edgeml.ops.up import DEFAULT_PORTS

_PORT = {"min": 1, "max": 65535}


def up(
    ctx: typer.Context,
    ray_port: Annotated[
        int, typer.Option("--ray-port", help="Ray head (GCS) port.", **_PORT)
    ] = DEFAULT_PORTS["ray"],
    mlflow_port: Annotated[
        int, typer.Option("--mlflow-port", help="MLflow server port.", **_PORT)
    ] = DEFAULT_PORTS["mlflow"],
    central_port: Annotated[
        int, typer.Option("--central-port", help="Central node port.", **_PORT)
    ] = DEFAULT_PORTS["central"],
    prometheus_port: Annotated[
        int, typer.Option("--prometheus-port", help="Prometheus port (when installed).", **_PORT)
    ] = DEFAULT_PORTS["prometheus"],
    minio_port: Annotated[
        int,
        typer.Option("--minio-port", help="MinIO port, console on the next one (when installed).", **_PORT),
    ] = DEFAULT_PORTS["minio"],
) -> None:
    """Start the single-node appliance in the background: Ray head, MLflow, central node, Prometheus, MinIO.

    Everything binds 127.0.0.1; logs and pid files are in $EDGEML_HOME/run/. Services already
    running are left as they are. Stop them with `edgeml down`.
    """
    from edgeml.ops.up import Ports, Started
    from edgeml.ops.up import up as start

    state: CliState = ctx.obj
    settings = state.settings()

    def ready(service: Started) -> None:
        console.print(f"[green]✓[/] {service.name} is up")

    ports = Ports(ray_port, mlflow_port, central_port, prometheus_port, minio_port)
    with console.status("starting the appliance ..."):
        services, notes = start(settings, ports, on_ready=ready)
    for service in services:
        note = " (already running)" if service.already_running else ""
        console.print(f"{service.name:<11} {escape(service.url)}  pid {service.pid}{note}")
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(f"logs: {escape(str(settings.home / 'run'))}/<name>.log   stop: edgeml down")


def down(ctx: typer.Context) -> None:
    """Stop every service `edgeml up` started."""
    from edgeml.ops.up import down as stop

    state: CliState = ctx.obj
    stopped = stop(state.settings())
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def status(ctx: typer.Context) -> None:
    """Show which appliance services run, their pid and URL."""
    from edgeml.ops.up import status as states

    state: CliState = ctx.obj
    table = Table("service", "state", "pid", "url")
    for service in states(state.settings()):
        colour = {"running": "green", "stopped": "dim"}.get(service.state, "yellow")
        table.add_row(
            service.name,
            f"[{colour}]{service.state}[/]",
            str(service.pid or ""),
            escape(service.url or ""),
        )
    console.print(table)
