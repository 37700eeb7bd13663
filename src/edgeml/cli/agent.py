"""``edgeml agent``: run the edge agent on a device, or look at its state."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from edgeml.cli._context import console, err_console

app = typer.Typer(
    help="The edge agent: pull signed bundles, serve them, report telemetry.", no_args_is_help=True
)

ConfigArg = Annotated[
    Path,
    typer.Option(
        "--config",
        help="Agent config (YAML): device id, group, profile, store, key ring, ports.",
        dir_okay=False,
    ),
]


@app.command("run")
def run(
    config: ConfigArg,
    port: Annotated[int | None, typer.Option("--port", help="Override http.port (0: any free port).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the installed bundle at once, then follow the channel: verify, smoke-test, swap, watch.

    Prints the URL it serves on when the socket is bound; stops on Ctrl-C or SIGTERM, keeping
    every telemetry window in the on-disk spool.
    """
    from edgeml.agent.config import load_agent_config
    from edgeml.agent.run import Agent

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_agent_config(config)
    if port is not None:
        cfg = cfg.model_copy(update={"http": cfg.http.model_copy(update={"port": port})})
    agent = Agent(cfg)
    sock = agent.bind()
    host, bound = sock.getsockname()[:2]
    agent.start()
    console.print(f"edgeml agent {cfg.device_id} serving on http://{host}:{bound}", markup=False)
    try:
        agent.serve(sock)
    finally:
        agent.stop()
        err_console.print("agent stopped; telemetry kept in the spool")


@app.command("status")
def status(config: ConfigArg) -> None:
    """What the device has installed and accepted (reads its state folder; the agent may be running)."""
    from edgeml.agent.config import load_agent_config
    from edgeml.agent.install import Installation

    cfg = load_agent_config(config)
    install = Installation(cfg.state_dir)
    state = install.load_state()
    current, previous = install.folder("current"), install.folder("previous")
    console.print_json(
        json.dumps(
            {
                "device_id": cfg.device_id,
                "current": current.name if current else None,
                "previous": previous.name if previous else None,
                "last_version": state.last_version,
                "pointer_serials": state.serials,
                "refused_versions": sorted(set(state.refused)),
                "on_probation": state.probation,
            }
        )
    )
