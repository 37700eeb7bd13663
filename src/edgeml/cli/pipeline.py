"""``edgeml pipeline run``: every stage from sources to a channel, in one command."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from edgeml.cli._context import CliState, console

app = typer.Typer(
    help="The whole pipeline: ingest, validate, features, train, bundles, rollout.", no_args_is_help=True
)


@app.command("run")
def run(
    ctx: typer.Context,
    spec_path: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).", exists=True, dir_okay=False)],
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help="Only these sources (repeat; default: every bounded one)."),
    ] = None,
    since_snapshot: Annotated[
        str | None,
        typer.Option("--since-snapshot", help="Stop, training nothing, if the data is still this snapshot."),
    ] = None,
    channel: Annotated[
        str, typer.Option("--channel", help="Channel a model that passes its gates goes to.")
    ] = "stable",
    percent: Annotated[
        float | None,
        typer.Option("--percent", help="Share of matching devices (default: canary 10, stable 100)."),
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="Device group to target (repeat).")
    ] = None,
    no_publish: Annotated[
        bool, typer.Option("--no-publish", help="Build and sign bundles, publish nothing.")
    ] = False,
) -> None:
    """Ingest, validate, build features, tune and train, gate, export and sign a bundle per profile, publish.

    Stops without publishing when there is no new data (--since-snapshot) or the model fails a gate;
    exits 1 then, so a scheduler or the central node's retraining sees it.
    """
    from edgeml.ingest.runtime import ray_session
    from edgeml.pipeline import Publication, run_pipeline
    from edgeml.spec import load_spec

    state: CliState = ctx.obj
    settings = state.settings()
    spec = load_spec(spec_path)

    @contextmanager
    def stage(description: str) -> Iterator[Callable[[str], None]]:
        with console.status(description) as status:
            last = [description]

            def say(text: str) -> None:
                last[0] = text
                status.update(text)

            yield say
        console.print(f"  • {last[0]}")

    publication = None if no_publish else Publication(channel, percent, tuple(group or ()))
    with ray_session(settings.ray_address, progress_bars=False):
        result = run_pipeline(
            spec,
            settings,
            sources=source,
            since_snapshot=since_snapshot,
            publication=publication,
            stage=stage,
        )
    for profile, why in result.refused.items():
        console.print(f"  • {profile}: refused: {why}")
    if result.stopped:
        console.print(f"stopped: {result.stopped}")
        raise typer.Exit(1)
