"""The ``edgeml`` command line: thin commands over the library.

Each command parses its options, loads settings, calls one library function and
prints. Errors the user can fix exit 2 with one clear message; ``--debug`` adds the
traceback.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.exceptions import TyperException

from edgeml import __version__
from edgeml._thirdparty import no_usage_reporting
from edgeml.cli._context import CliState, console, err_console
from edgeml.errors import EdgemlError

__all__ = ["app", "main", "run"]

app = typer.Typer(
    name="edgeml",
    help="edgeml: an on-prem / edge ML appliance — ingest, train, export, sign, ship, monitor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
_STATE = CliState()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs on errors.")] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Settings file (YAML). Default: $EDGEML_HOME/config.yaml if present.",
            envvar="EDGEML_CONFIG",
            show_envvar=True,
            dir_okay=False,
        ),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Appliance home: store, tracking DB, keys. Default: ~/.edgeml.",
            envvar="EDGEML_HOME",
            show_envvar=True,
            file_okay=False,
        ),
    ] = None,
) -> None:
    global _STATE
    _STATE = CliState(debug=debug, config=config, home=home)
    ctx.obj = _STATE


@app.command()
def version() -> None:
    """Print the edgeml version."""
    console.print(f"edgeml {__version__}")


def _register() -> None:
    from edgeml.cli import (
        agent,
        bundle,
        central,
        data,
        demo,
        export,
        ops,
        pipeline,
        profiles,
        serve,
        simulate,
        spec,
        store,
        train,
    )

    app.add_typer(spec.app, name="spec")
    app.command(name="ingest")(data.ingest)
    app.command(name="validate")(data.validate)
    app.command(name="features")(data.features)
    app.command(name="stream")(data.stream)
    app.add_typer(data.app, name="data")
    app.command(name="train")(train.train)
    app.add_typer(train.app, name="models")
    app.add_typer(profiles.app, name="profiles")
    app.command(name="export")(export.export)
    app.add_typer(bundle.keys_app, name="keys")
    app.add_typer(bundle.bundle_app, name="bundle")
    app.add_typer(bundle.rollout_app, name="rollout")
    app.add_typer(bundle.audit_app, name="audit")
    app.add_typer(agent.app, name="agent")
    app.add_typer(pipeline.app, name="pipeline")
    app.add_typer(store.app, name="store")
    app.add_typer(simulate.app, name="simulate")
    app.command(name="demo")(demo.demo)
    app.command(name="serve")(serve.serve)
    app.add_typer(central.app, name="central")
    app.command(name="up")(ops.up)
    app.command(name="down")(ops.down)
    app.command(name="status")(ops.status)

    from edgeml.cli import drift

    app.add_typer(drift.app, name="drift")


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script exits with it)."""
    no_usage_reporting()  # before Ray, MLflow or OpenVINO loads (edgeml._thirdparty)
    try:
        # Outside standalone mode click *returns* the code of a typer.Exit.
        result = app(args=argv, prog_name="edgeml", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except TyperException as exc:  # usage errors: bad option, missing argument, ...
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(escape(exc.format_message()))
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except EdgemlError as exc:
        if _STATE.debug:
            err_console.print(traceback.format_exc(), markup=False, highlight=False)
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}")
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:  # a bug in edgeml: say so, keep the traceback one flag away
        if _STATE.debug:
            raise
        err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}")
        err_console.print("rerun with --debug for the traceback, and please report it")
        return 1
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
