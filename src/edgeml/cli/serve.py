"""``edgeml serve``: a channel's model on Ray Serve, answering as the edge agent does."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from edgeml.cli._context import CliState, console, err_console
from edgeml.errors import UserError


def serve(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model to serve (the channel pointer's model).")],
    channel: Annotated[
        str, typer.Option("--channel", help="Channel to follow; replicas move with its pointer.")
    ] = "stable",
    profile: Annotated[
        str, typer.Option("--profile", help="Firmware profile whose bundle to run (runtime, threads).")
    ] = "x86-64-generic",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster to deploy on (host:6379); default: settings' ray_address, else a local Ray "
            "started for as long as this command runs.",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option("--host", help="Address Ray Serve's proxy and the replicas listen on (0.0.0.0: all)."),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Port of Ray Serve's proxy (balances over replicas); each replica also serves on a port "
            "of its own, printed at start.",
        ),
    ] = 8000,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            "--grpc-port",
            min=0,
            max=65535,
            help="Also serve OIP v2 gRPC (inference.GRPCInferenceService, as tritonclient.grpc calls it) "
            "on this port of --host, from this process, each call passed to a replica (0: any free "
            "port); each replica also serves it on a port of its own (faster), printed at start. Off "
            "by default. Messages over 1 MiB are refused.",
        ),
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            dir_okay=False,
            help="Pipeline spec whose `serving` section sets batching and autoscaling (else its defaults).",
        ),
    ] = None,
    keyring: Annotated[
        Path | None,
        typer.Option(
            "--keyring",
            file_okay=False,
            help="Folder of trusted <key id>.pub files; default: this appliance's own keys.",
        ),
    ] = None,
    device_id: Annotated[
        str,
        typer.Option(
            "--device-id",
            help="The deployment's name in the fleet: decides its canary cohort, as a device's.",
        ),
    ] = "ray-serve",
    group: Annotated[
        str | None, typer.Option("--group", help="Device group, for rollouts that target groups.")
    ] = None,
    poll_interval: Annotated[
        float,
        typer.Option("--poll-interval", min=0.1, help="Seconds between channel checks in each replica."),
    ] = 10.0,
    health_window: Annotated[
        float,
        typer.Option(
            "--health-window",
            min=0,
            help="Seconds a new bundle is watched (errors, p99) and rolled back from if it misbehaves.",
        ),
    ] = 60.0,
    num_cpus: Annotated[
        float, typer.Option("--num-cpus", min=0.1, help="CPUs Ray reserves for each replica.")
    ] = 1.0,
) -> None:
    """Serve MODEL's bundle from CHANNEL on Ray Serve: OIP v2 REST (and gRPC) and POST /predict, as the agent.

    Verifies the channel first as a device does (key ring, pointer signature and serial, bundle
    signature and digests, smoke test); every replica does the same, then follows the channel and
    swaps to a new version without failing a request. Requests are batched and replicas autoscale
    per the spec's `serving` section. Runs until Ctrl-C or SIGTERM, then removes the deployment.
    """
    import ray

    from edgeml.bundle.keys import KeyRing
    from edgeml.profiles import get_profile
    from edgeml.serve import ServeConfig, check_channel, deploy, public_keys
    from edgeml.spec import load_spec
    from edgeml.spec.models import Serving

    state: CliState = ctx.obj
    settings = state.settings()
    serving = Serving()
    if spec is not None:
        loaded = load_spec(spec)
        if loaded.name != model:
            raise UserError(f"{spec} is the spec of {loaded.name!r}, not of {model!r}")
        serving = loaded.serving
    ring = KeyRing.from_dir(keyring) if keyring else KeyRing.from_home(settings.home)
    config = ServeConfig(
        model=model,
        channel=channel,
        profile=get_profile(profile, settings.home),
        device_id=device_id,
        group=group,
        store=settings.store.model_copy(update={"url": settings.store_url}),
        keys=public_keys(ring),
        state_dir=settings.home / "serve" / model,
        poll_interval_s=poll_interval,
        health_window_s=health_window,
        serving=serving,
        grpc_host=host if grpc_port is not None else None,
    )
    with console.status(f"checking {model} on channel {channel} ({profile})"):
        manifest = check_channel(config)
    console.print(f"channel {channel}: {manifest.model} v{manifest.version} verified and smoke-tested")
    front = None
    if grpc_port is not None:  # bound before deploying, so a taken port fails at once
        from edgeml.serve.grpcfront import grpc_front

        try:
            front = grpc_front(model, host=host, port=grpc_port, max_message_bytes=config.max_body_bytes)
        except OSError as exc:
            raise UserError(f"--grpc-port: {exc}") from exc
    address = ray_address or settings.ray_address
    started = not ray.is_initialized()
    if started:
        from edgeml.ingest.runtime import init_ray

        init_ray(address, configure_logging=True)  # a local Ray listens on 127.0.0.1 only
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with console.status(f"deploying {model} on Ray Serve"):
            deployed = deploy(config, host=host, port=port, num_cpus=num_cpus)
        console.print(f"serving {model} through Ray Serve's proxy at {deployed.proxy_url}", markup=False)
        for url in deployed.replica_urls:
            console.print(f"  replica (direct) {url}", markup=False)
        if front is not None:
            front.start()
            console.print(f"serving {model} over OIP v2 gRPC at {front.address}", markup=False)
            for address in deployed.replica_grpc:
                console.print(f"  replica gRPC (direct) {address}", markup=False)
        _wait(stop)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if front is not None:
            front.stop()
        _undeploy(model, local=started)
        if started:
            ray.shutdown()
        err_console.print(f"{model} is no longer served")


def _wait(stop: threading.Event) -> None:
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        return


def _undeploy(model: str, *, local: bool) -> None:
    """Remove the deployment: all of Serve on the Ray this command started, else only this app."""
    from ray import serve

    if local:
        serve.shutdown()  # type: ignore[no-untyped-call]
    else:
        serve.delete(model, _blocking=False)  # the cluster drains the replicas; no need to wait here
