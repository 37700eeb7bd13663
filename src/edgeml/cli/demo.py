"""``edgeml demo``."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeml.cli._context import CliState, console


def demo(
    ctx: typer.Context,
    machines: Annotated[int, typer.Option(min=1, help="Pumps in the simulated fleet.")] = 6,
    readings: Annotated[int, typer.Option(min=10, help="Readings per pump.")] = 1500,
    seed: Annotated[int, typer.Option(help="Random seed of the simulation.")] = 0,
    trials: Annotated[int, typer.Option(min=1, help="Trials of the hyper-parameter search.")] = 8,
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet/--no-fleet",
            help="Run the field half: central node, three agents, drift, retraining, canary, promotion.",
        ),
    ] = True,
    fleet_readings: Annotated[
        int, typer.Option(min=50, help="Readings per simulated pump and phase in the field.")
    ] = 1200,
    keep_running: Annotated[
        bool,
        typer.Option("--keep-running", help="Leave the central node, agents and fleet page up until Ctrl-C."),
    ] = False,
) -> None:
    """Run the appliance's loop end to end on the embedded default, showing each stage."""
    from edgeml.demo import DemoOptions, run_demo

    state: CliState = ctx.obj
    run_demo(
        state.settings(),
        console,
        DemoOptions(
            machines=machines,
            readings=readings,
            seed=seed,
            trials=trials,
            fleet=fleet,
            fleet_readings=fleet_readings,
            keep_running=keep_running,
        ),
    )
