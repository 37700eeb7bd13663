"""``edgeml drift``: backtest on files with the live monitor's code; show the central node's verdicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
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


def _since(text: str | None) -> datetime | None:
    """An ISO 8601 time (UTC when it names no zone), or a time ago: 30m, 2h, 1d."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"--since {text!r} is neither an ISO 8601 time nor a time ago like 30m, 2h or 1d"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _fetch_drift(central: str, token: str | None) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.get(central.rstrip("/") + "/v1/drift", headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise UserError(f"the central node at {central} is not reachable: {exc}") from exc
    if answer.status_code == 401:
        raise UserError(f"the central node at {central} refused the token: {answer.json().get('detail', '')}")
    if answer.status_code != 200:
        raise UserError(f"the central node at {central} answered {answer.status_code}: {answer.text[:200]}")
    body: dict[str, Any] = answer.json()
    return body


@app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="The model whose drift to show.")],
    central: Annotated[
        str, typer.Option("--central", envvar="EDGEML_CENTRAL_URL", help="The central node's URL.")
    ] = "http://127.0.0.1:8080",
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="EDGEML_CENTRAL_TOKEN", help="Token for the fleet views (admin token)."
        ),
    ] = None,
    group: Annotated[str | None, typer.Option("--group", help="Only this device group.")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Every round kept since this time (ISO 8601, or 30m, 2h, 1d ago); default: the last.",
        ),
    ] = None,
) -> None:
    """The central node's drift verdicts for MODEL: per round, version, group and feature, value and band."""
    start = _since(since)
    view = _fetch_drift(central, token)
    if not view.get("enabled", False):
        raise UserError(f"the central node at {central} does not watch drift (monitor.enabled is false)")
    statuses = view["history"] if start is not None else view["latest"]
    shown = [
        s
        for s in statuses
        if s["model"] == model
        and (group is None or s["group"] == group)
        and (start is None or datetime.fromisoformat(s["at"]) >= start)
    ]
    if not shown:
        console.print(f"no drift verdicts for {model}" + (f" in group {group}" if group else ""))
        return
    table = Table(title=f"drift of {model} on {central}")
    for header in (
        "round",
        "version",
        "group",
        "rows",
        "feature",
        "method",
        "value",
        "lower",
        "upper",
        "alert",
    ):
        table.add_column(
            header, justify="right" if header in ("version", "rows", "value", "lower", "upper") else "left"
        )
    for s in shown:
        for f in s["features"]:
            table.add_row(
                s["at"][:19].replace("T", " "),
                str(s["version"]),
                s["group"] or "-",
                f"{f['rows']:,}",
                f["feature"],
                f["method"],
                _number(f["value"]),
                _number(f["lower"]),
                _number(f["upper"]),
                "[bold red]ALERT[/]" if f["alert"] else "",
            )
        table.add_section()
    console.print(table)
    for failure in view.get("failures", []):
        if failure["model"] == model and (group is None or failure["group"] == group):
            where = f"v{failure['version']} in {failure['group'] or '-'}"
            console.print(f"[yellow]not judged:[/] {where}: {escape(failure['error'])}")
