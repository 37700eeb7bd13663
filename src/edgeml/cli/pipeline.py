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


@app.command("schedule")
def schedule(
    ctx: typer.Context,
    spec_path: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).", exists=True, dir_okay=False)],
    every: Annotated[
        str | None,
        typer.Option("--every", help="Interval between runs (e.g. 30m, 6h); default: pipeline.schedule."),
    ] = None,
    runs: Annotated[
        int | None, typer.Option("--runs", min=1, help="Stop after this many runs (default: until stopped).")
    ] = None,
    channel: Annotated[
        str, typer.Option("--channel", help="Channel a model that passes its gates goes to.")
    ] = "stable",
) -> None:
    """Run the pipeline now and then every interval, for batch-training and hybrid pipelines.

    A run trains only when the data changed since the previous run's snapshot. A failed run is
    reported and the schedule goes on (source reads are retried per pipeline.retries first).
    Stops on Ctrl-C or SIGTERM; exits 1 when the last run failed.
    """
    import signal
    import threading

    from edgeml.errors import UserError
    from edgeml.ingest.runtime import ray_session
    from edgeml.pipeline import Publication, run_pipeline
    from edgeml.spec import load_spec
    from edgeml.spec.mission import schedulable
    from edgeml.spec.types import parse_duration

    state: CliState = ctx.obj
    settings = state.settings()
    spec = load_spec(spec_path)
    if not schedulable(spec.pipeline):
        raise UserError(
            f"{spec.name} is a {spec.pipeline.type} pipeline: only batch-training and hybrid pipelines "
            "run on a schedule",
            hint="set pipeline.type in the spec, or run it once with `edgeml pipeline run`",
        )
    if every is not None:
        try:
            interval = parse_duration(every).total_seconds()
        except ValueError as exc:
            raise UserError(f"--every {every!r}: {exc}") from exc
    elif spec.pipeline.schedule is not None:
        interval = spec.pipeline.schedule.total_seconds()
    else:
        raise UserError(
            "no interval: pass --every or set pipeline.schedule in the spec", hint="e.g. --every 6h"
        )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    last_snapshot: str | None = None
    failed = False
    done = 0
    try:
        with ray_session(settings.ray_address, progress_bars=False):
            while not stop.is_set():
                done += 1
                console.print(f"run {done}")
                try:
                    result = run_pipeline(
                        spec, settings, since_snapshot=last_snapshot, publication=Publication(channel)
                    )
                except UserError as exc:
                    failed = True
                    console.print(f"  run {done} failed: {exc.message}", markup=False)
                else:
                    # no new data is not a failure: the run stopped before validating anything
                    failed = bool(result.stopped) and result.validation is not None
                    if result.ingest is not None:
                        last_snapshot = result.ingest.snapshot.id
                    console.print(f"  run {done}: {result.stopped or 'published'}", markup=False)
                if runs is not None and done >= runs:
                    break
                stop.wait(interval)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failed:
        raise typer.Exit(1)
