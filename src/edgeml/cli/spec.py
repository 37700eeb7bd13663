"""``edgeml spec``: check specs, print their JSON Schema and reference."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgeml.cli._context import console, err_console
from edgeml.errors import SpecError, UserError
from edgeml.observability import track_spec_check


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


app = typer.Typer(help="Check pipeline specs; print their JSON Schema and reference.", no_args_is_help=True)


@app.command()
def check(
    files: Annotated[list[Path], typer.Argument(help="Spec files (YAML) to check.", dir_okay=False)],
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            help="text: a summary or the problems, for people; json: one object per file, for tools and CI.",
        ),
    ] = OutputFormat.text,
) -> None:
    """Validate specs: list every problem with its YAML path and line, or summarise a valid one.

    Exits 0 when every file is valid, 2 otherwise.
    """
    from edgeml.spec import load_spec
    from edgeml.spec.mission import pipeline_warnings
    from edgeml.spec.summary import render_summary

    fmt = output.value
    failed = False
    reports = []
    for path in files:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            failed = True
            track_spec_check(valid=False)
            reports.append(
                {
                    "file": str(path),
                    "valid": False,
                    "issues": [{"path": i.path, "line": i.line, "message": i.message} for i in exc.issues],
                }
            )
            if fmt == "text":
                err_console.print(f"[bold red]✗ {escape(str(path))}[/]: {len(exc.issues)} problem(s)")
                for issue in exc.issues:
                    line = f"line {issue.line}: " if issue.line else ""
                    err_console.print(
                        f"  [dim]{line}[/][bold]{issue.path or '(top level)'}[/]: {issue.message}"
                    )
            continue
        except UserError as exc:
            failed = True
            track_spec_check(valid=False)
            reports.append(
                {
                    "file": str(path),
                    "valid": False,
                    "issues": [{"path": "", "line": None, "message": exc.message}],
                }
            )
            if fmt == "text":
                err_console.print(f"[bold red]✗ {escape(str(path))}[/]: {escape(exc.message)}")
            continue
        track_spec_check(valid=True)
        warnings = pipeline_warnings(spec)
        reports.append(
            {
                "file": str(path),
                "valid": True,
                "name": spec.name,
                "fingerprint": spec.fingerprint(),
                "warnings": warnings,
            }
        )
        if fmt == "text":
            console.print(f"[bold]{path}[/]")
            console.print(render_summary(spec))
            for warning in warnings:
                console.print(f"  [yellow]warning[/] {escape(warning)}")
    if fmt == "json":
        console.print_json(json.dumps(reports))
    if failed:
        raise typer.Exit(2)


@app.command()
def schema(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.", dir_okay=False)
    ] = None,
) -> None:
    """Print the JSON Schema of pipeline specs (for editor completion and validation)."""
    from edgeml.spec.models import Spec

    doc = Spec.model_json_schema(by_alias=True)
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "edgeml pipeline spec", **doc}
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {out}")


@app.command()
def docs(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.", dir_okay=False)
    ] = None,
) -> None:
    """Print the spec reference in Markdown (the source of docs/spec.md)."""
    from edgeml.spec.docs import render_reference

    text = render_reference()
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {out}")


@app.command()
def matrix(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.", dir_okay=False)
    ] = None,
) -> None:
    """Print the support matrix in Markdown (the source of docs/support-matrix.md)."""
    from edgeml.profiles import load_profiles
    from edgeml.support import render_markdown

    text = render_markdown((p.name, p.runtime) for p in load_profiles().values())
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {out}")
