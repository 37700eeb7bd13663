"""``edgeml ingest | validate | features | data``: the data layer from the command line."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgeml.cli._context import CliState, console, err_console

if TYPE_CHECKING:
    from edgeml.settings import Settings
    from edgeml.spec import Spec

app = typer.Typer(help="Look into the lake: snapshots of each dataset.", no_args_is_help=True)

SpecArg = Annotated[Path, typer.Argument(help="Pipeline spec (YAML).", dir_okay=False)]
SnapshotOpt = Annotated[
    str | None, typer.Option("--snapshot", help="Snapshot id or a unique prefix of it; default: the newest.")
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to run on (host:6379 or ray://host:10001); "
        "default: RAY_ADDRESS, else a local Ray started for the command.",
    ),
]


def _load(ctx: typer.Context, spec_path: Path, ray_address: str | None = None) -> tuple[Spec, Settings]:
    from edgeml.spec import load_spec

    state: CliState = ctx.obj
    settings = state.settings()
    if ray_address:
        settings = settings.model_copy(update={"ray_address": ray_address})
    return load_spec(spec_path), settings


def ingest(
    ctx: typer.Context,
    spec_path: SpecArg,
    source: Annotated[
        list[str] | None, typer.Option("--source", help="Ingest only this source (repeatable).")
    ] = None,
    ray_address: RayOpt = None,
) -> None:
    """Read the spec's bounded sources with Ray Data, enforce the schema, land the lake, snapshot it.

    Rows that cannot be coerced go to quarantine with the reason; the counts are printed.
    """
    from edgeml.ingest.run import ingest as run_ingest

    spec, settings = _load(ctx, spec_path, ray_address)
    with console.status("starting Ray and reading sources") as status:
        report = run_ingest(spec, settings, only=source, progress=status.update)
    table = Table(
        "source",
        "kind",
        "rows read",
        "landed",
        "quarantined",
        "parts",
        "nodes",
        "seconds",
        title=f"ingest of {spec.name}",
    )
    for s in report.sources:
        table.add_row(
            s.name,
            s.kind,
            f"{s.rows_in:,}",
            f"{s.rows_clean:,}",
            f"[red]{s.rows_quarantined:,}[/]" if s.rows_quarantined else "0",
            str(len(s.parts)),
            str(len(s.nodes)),
            f"{s.seconds:.1f}",
        )
    console.print(table)
    for s in report.sources:
        for problem, count in s.problems.most_common():
            console.print(f"  [yellow]quarantined[/] {count:,} rows of {s.name}: {escape(problem)}")
        if s.ignored_columns:
            console.print(
                f"  [dim]{s.name}: columns not in the schema, ignored: "
                f"{', '.join(sorted(s.ignored_columns))}[/]"
            )
    for name in report.skipped:
        console.print(f"  [dim]{name} is a stream: land it with `edgeml stream`[/]")
    snap = report.snapshot
    console.print(f"snapshot [bold cyan]{snap.id}[/]: {snap.rows:,} rows in {len(snap.parts)} parts")


def _stage_session(spec: Spec, settings: Settings) -> AbstractContextManager[None]:
    """Ray for a stage's tasks when the data is not small or a cluster is named; else in-process."""
    from edgeml.ingest.runtime import ray_session

    if spec.pipeline.data_volume == "small" and not settings.ray_address:
        return nullcontext()
    return ray_session(settings.ray_address, progress_bars=False)


def validate(
    ctx: typer.Context, spec_path: SpecArg, snapshot: SnapshotOpt = None, ray_address: RayOpt = None
) -> None:
    """Check a snapshot against the spec's expectations; write the report and quarantine.

    One task per lake part: on Ray when pipeline.data_volume is medium/large or a cluster is
    named, in this process otherwise. Exits 2 when an expectation of severity error fails.
    """
    from edgeml.validate import ValidationFailedError, ValidationReport
    from edgeml.validate import validate as run_validate

    spec, settings = _load(ctx, spec_path, ray_address)
    try:
        with _stage_session(spec, settings):
            report: ValidationReport = run_validate(spec, settings, snapshot)
    except ValidationFailedError as exc:
        _print_validation(exc.report)
        raise
    _print_validation(report)


def _print_validation(report: object) -> None:
    from edgeml.validate import ValidationReport

    assert isinstance(report, ValidationReport)
    table = Table(
        "expectation",
        "severity",
        "result",
        "detail",
        title=f"validation of {report.dataset} snapshot {report.snapshot}",
    )
    for o in report.outcomes:
        mark = (
            "[green]pass[/]" if o.passed else ("[red]FAIL[/]" if o.severity == "error" else "[yellow]warn[/]")
        )
        table.add_row(escape(o.name), o.severity, mark, escape(o.detail))
    console.print(table)
    console.print(
        f"{report.rows_valid:,} of {report.rows:,} rows valid"
        + (f"; {report.rows - report.rows_valid:,} quarantined" if report.rows_valid < report.rows else "")
    )


def features(
    ctx: typer.Context, spec_path: SpecArg, snapshot: SnapshotOpt = None, ray_address: RayOpt = None
) -> None:
    """Compute window and row features for a validated snapshot and store the feature table, in parts."""
    from edgeml.features.build import build_features

    spec, settings = _load(ctx, spec_path, ray_address)
    with console.status("computing features"), _stage_session(spec, settings):
        report = build_features(spec, settings, snapshot)
    table = Table(
        "feature",
        "missing",
        "mean",
        "std",
        "min",
        "max",
        title=f"features of {report.dataset} snapshot {report.snapshot} ({report.rows:,} rows)",
    )
    for name, st in report.stats.items():
        table.add_row(
            name,
            f"{st['missing']:.1%}",
            f"{st['mean']:.4g}",
            f"{st['std']:.4g}",
            f"{st['min']:.4g}",
            f"{st['max']:.4g}",
        )
    console.print(table)
    console.print(f"feature table: {len(report.parts)} part(s) under {report.prefix}")


@app.command()
def snapshots(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="A spec file, or a dataset (pipeline) name.")],
) -> None:
    """List the snapshots of a dataset, oldest first."""
    from edgeml.ingest.lake import list_snapshots
    from edgeml.store import store_from_settings

    state: CliState = ctx.obj
    name = dataset
    if Path(dataset).is_file():
        from edgeml.spec import load_spec

        name = load_spec(dataset).name
    snaps = list_snapshots(store_from_settings(state.settings()), name)
    if not snaps:
        err_console.print(f"dataset {name!r} has no snapshot yet; run `edgeml ingest SPEC`")
        return
    table = Table("snapshot", "created", "rows", "parts", "rows by source", title=f"snapshots of {name}")
    for s in snaps:
        by_source = ", ".join(f"{k} {v:,}" for k, v in s.rows_by_source.items())
        table.add_row(s.id, s.created, f"{s.rows:,}", str(len(s.parts)), by_source)
    console.print(table)


def stream(
    ctx: typer.Context,
    spec_path: SpecArg,
    source: Annotated[
        str | None,
        typer.Option("--source", help="The MQTT source to land (needed when the spec has several)."),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(min=0.1, help="Stop after this many seconds; default: run until Ctrl-C or SIGTERM."),
    ] = None,
) -> None:
    """Land an MQTT source in the lake as micro-batches until stopped; then take a snapshot.

    Messages are spooled on disk before they are acknowledged and de-duplicated by message
    id; on stop everything received is flushed.
    """
    import signal
    import threading

    from edgeml.ingest.lake import take_snapshot
    from edgeml.ingest.mqtt import lander_for
    from edgeml.store import store_from_settings

    spec, settings = _load(ctx, spec_path)
    lander = lander_for(spec, settings, source)
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        with lander, console.status(f"landing {lander.source.name} from {lander.broker}") as status:
            deadline = None if duration is None else time.monotonic() + duration
            while not done.wait(0.5):
                st = lander.stats
                status.update(
                    f"{lander.source.name}: {st.received:,} received, {st.landed:,} landed, "
                    f"{st.duplicates:,} duplicates, {st.quarantined:,} quarantined"
                )
                if deadline is not None and time.monotonic() >= deadline:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    st = lander.stats
    console.print(
        f"{lander.source.name}: {st.received:,} received, {st.landed:,} landed, "
        f"{st.duplicates:,} duplicates dropped, {st.quarantined:,} quarantined, "
        f"{st.flushes} micro-batches"
    )
    for problem, count in st.problems.items():
        console.print(f"  [yellow]quarantined[/] {count:,}: {escape(problem)}")
    snap = take_snapshot(store_from_settings(settings), spec)
    console.print(f"snapshot [bold cyan]{snap.id}[/]: {snap.rows:,} rows in {len(snap.parts)} parts")


@app.command()
def example(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="titanic, housing, maintenance-notes, iris, wine, ...")],
    key: Annotated[
        str | None, typer.Option("--store-key", help="Where in the store; default: landing/NAME/NAME.csv.")
    ] = None,
) -> None:
    """Write an example data set (shipped inside packages, never downloaded) to the store as CSV."""
    from edgeml.datasets import write_dataset
    from edgeml.store import store_from_settings

    state: CliState = ctx.obj
    written, rows = write_dataset(name, store_from_settings(state.settings()), key)
    console.print(f"wrote {rows:,} rows of {escape(name)} to {escape(written)}")


from edgeml.cli import privacy  # noqa: E402  (registered here: `edgeml data erase | retain`)

app.command(name="erase")(privacy.erase)
app.command(name="retain")(privacy.retain)
