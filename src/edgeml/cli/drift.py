"""``edgeml drift``: backtest drift on files with the live monitor's code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeml.cli._context import console
from edgeml.errors import UserError

app = typer.Typer(
    help="Drift: backtest on files, as the central node judges telemetry.", no_args_is_help=True
)


def _names(values: list[str] | None) -> list[str]:
    """Repeated or comma-separated names, in order."""
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


@app.command("run")
def run(
    reference: Annotated[
        Path, typer.Option("--reference", help="Reference rows (CSV or Parquet): what 'no drift' looks like.")
    ],
    analysis: Annotated[
        Path, typer.Option("--analysis", help="Rows to judge (CSV or Parquet), in time order.")
    ],
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Rows per chunk, reference and analysis.")],
    columns: Annotated[
        list[str] | None,
        typer.Option("--columns", help="Columns to judge (repeat or comma-separate); default: all shared."),
    ] = None,
    categorical: Annotated[
        list[str] | None,
        typer.Option("--categorical", help="Treat these columns as categories even if they hold numbers."),
    ] = None,
    continuous_method: Annotated[
        str, typer.Option("--continuous-method", help="js, hellinger or wasserstein (NannyML's default: js).")
    ] = "js",
    categorical_method: Annotated[
        str, typer.Option("--categorical-method", help="js, hellinger or chi2 (NannyML's default: js).")
    ] = "js",
    min_js: Annotated[
        float,
        typer.Option(
            "--min-js", min=0.0, max=1.0, help="Effect-size floor: an alert also needs this JS distance."
        ),
    ] = 0.0,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write every verdict and threshold as JSON here.", dir_okay=False),
    ] = None,
) -> None:
    """Judge ANALYSIS in chunks against REFERENCE: per chunk and feature, value, band, alert, method."""
    from edgeml.drift.methods import CATEGORICAL_METHODS, CONTINUOUS_METHODS
    from edgeml.drift.reference import chunk_bounds
    from edgeml.drift.run import drift_run, read_table

    if continuous_method not in CONTINUOUS_METHODS:
        raise UserError(
            f"--continuous-method must be one of {', '.join(CONTINUOUS_METHODS)}, not {continuous_method!r}"
        )
    if categorical_method not in CATEGORICAL_METHODS:
        known = ", ".join(CATEGORICAL_METHODS)
        raise UserError(f"--categorical-method must be one of {known}, not {categorical_method!r}")
    ref = read_table(reference, "reference")
    cur = read_table(analysis, "analysis")
    names = _names(columns)
    forced = _names(categorical)
    result = drift_run(
        ref,
        cur,
        chunk_size,
        columns=names or None,
        categorical=forced,
        continuous_method=continuous_method,
        categorical_method=categorical_method,
        min_js=min_js,
    )
    table = Table(title=f"drift of {analysis.name} against {reference.name}, chunks of {chunk_size:,} rows")
    for header in ("chunk", "rows", "feature", "method", "value", "lower", "upper", "alert"):
        table.add_column(header, justify="right" if header in ("rows", "value", "lower", "upper") else "left")
    alerts = cells = 0
    for chunk in result.chunks:
        for v in chunk.features:
            cells += 1
            alerts += v.alert
            table.add_row(
                f"[{chunk.start}:{chunk.stop - 1}]",
                f"{v.rows:,}",
                v.feature,
                v.method,
                _number(v.value),
                _number(v.lower),
                _number(v.upper),
                "[bold red]ALERT[/]" if v.alert else "",
            )
        table.add_section()
    console.print(table)
    reference_chunks = len(chunk_bounds(result.reference_rows, chunk_size))
    console.print(
        f"{alerts} alerts in {cells} (feature, chunk) cells; "
        f"bands from {reference_chunks} chunks of {result.reference_rows:,} reference rows"
    )
    if json_out is not None:
        json_out.write_text(result.model_dump_json(indent=2) + "\n")
        console.print(f"wrote {json_out}")
