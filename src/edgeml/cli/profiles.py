"""``edgeml profiles``: the device classes models are exported for."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml
from rich.table import Table

from edgeml.cli._context import CliState, console

app = typer.Typer(
    help="Firmware profiles: runtime, precision and limits per device class.", no_args_is_help=True
)


@app.command("list")
def list_profiles(ctx: typer.Context) -> None:
    """List every firmware profile (shipped and the operator's own)."""
    from edgeml.profiles import load_profiles

    state: CliState = ctx.obj
    table = Table("profile", "runtime", "on", "precision", "threads", "bundle ≤", "verified")
    table.columns[0].no_wrap = True
    for p in load_profiles(state.settings().home).values():
        table.add_row(
            p.name,
            p.runtime,
            p.execution_provider.removesuffix("ExecutionProvider"),
            p.precision,
            str(p.threads),
            p.max_bundle_size.human_readable(decimal=True),
            "yes" if p.verified else "[yellow]no[/]",
        )
    console.print(table)


@app.command("show")
def show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Profile name.")]) -> None:
    """Print one profile in full, with its parity tolerances."""
    from edgeml.profiles import get_profile

    state: CliState = ctx.obj
    profile = get_profile(name, state.settings().home)
    doc = profile.model_dump(mode="json")
    doc["parity"] = profile.tolerance.model_dump()
    console.print(yaml.safe_dump(doc, sort_keys=False), end="", markup=False)
