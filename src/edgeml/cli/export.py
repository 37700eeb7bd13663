"""``edgeml export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeml.cli._context import CliState, console
from edgeml.cli.train import TrackingOpt


def export(
    ctx: typer.Context,
    model_uri: Annotated[
        str,
        typer.Argument(
            help="Registered model, e.g. models:/pump-faults@challenger or models:/pump-faults/3."
        ),
    ],
    profile: Annotated[
        str, typer.Option("--profile", help="Firmware profile to export for (`edgeml profiles list`).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder to write; default: $EDGEML_HOME/exports/NAME/VERSION/PROFILE.",
            file_okay=False,
        ),
    ] = None,
    quantization_tolerance: Annotated[
        float | None,
        typer.Option(
            "--quantization-tolerance",
            min=0,
            max=1,
            help="Largest holdout-metric drop accepted for fp16/int8; default: the spec's "
            "gates.quantization_tolerance.",
        ),
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Export a registered model for a firmware profile, prove parity on its holdout rows, measure latency.

    Nothing is written unless the export matches the native model within the profile's tolerances
    and fits its size limit.
    """
    from edgeml.export.run import default_export_dir, export_model

    state: CliState = ctx.obj
    settings = state.settings()
    target = out or default_export_dir(settings, model_uri, profile)
    with console.status(f"exporting {model_uri} for {profile}"):
        report = export_model(model_uri, profile, target, settings, tracking_uri, quantization_tolerance)
    table = Table("", "", title=f"{report.model} v{report.version} ({report.family}) for {report.profile}")
    table.add_row("runtime", f"{report.runtime}, {report.precision}, opset {report.opset}")
    if report.quantization:
        q = report.quantization
        table.add_row(
            "accuracy gate",
            f"holdout {q['metric']} native {q['native']:.4f}, {report.precision} {q['exported']:.4f} "
            f"(drop {q['drop']:.4f}, allowed {q['tolerance']:g})",
        )
    table.add_row("size", f"{report.size_bytes:,} bytes ({', '.join(f['path'] for f in report.files)})")
    table.add_row(
        "parity",
        f"max abs diff {report.parity['max_abs_diff']:.2e}, labels agree "
        f"{report.parity['label_agreement']:.2%} on {int(report.parity['rows']):,} holdout rows",
    )
    table.add_row(
        "latency",
        f"single row p50 {report.latency['p50_ms']:.3f} ms, p99 "
        f"{report.latency['p99_ms']:.3f} ms; batch of 256: "
        f"{report.latency['batch256_rows_per_s']:,.0f} rows/s",
    )
    for note in report.notes:
        table.add_row("note", note)
    console.print(table)
    console.print(f"written to {target}")
