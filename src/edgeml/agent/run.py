"""``edgeml agent run``: one device's agent, wired together.

Threads: uvicorn serves HTTP (the main thread), behind a guard against stalled uploads
(:mod:`edgeml.agent.httpguard`); the syncer checks the channel and swaps bundles; a
collector moves closed telemetry windows into the on-disk spool every second; the pusher
drains the spool to the central node; paho's network loop runs MQTT mode when configured.
Each background thread is supervised (:mod:`edgeml.agent.supervise`): its failures show in
``/agent/status`` and readiness. The agent serves the installed bundle from the first
second, before any network call.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

from starlette.routing import Route

from edgeml.agent.config import AgentConfig
from edgeml.agent.httpguard import BodyGuard
from edgeml.agent.model import ModelHolder
from edgeml.agent.predlog import PredictionLog, PredictionShipper
from edgeml.agent.push import TelemetryPusher
from edgeml.agent.server import create_app
from edgeml.agent.spool import Spool
from edgeml.agent.stream import StreamServing
from edgeml.agent.supervise import Supervisor
from edgeml.agent.sync import HealthWatch, Syncer
from edgeml.agent.telemetry import TelemetryWindow
from edgeml.bundle.keys import KeyRing
from edgeml.errors import ConfigError
from edgeml.profiles import get_profile
from edgeml.store import open_store

if TYPE_CHECKING:
    import uvicorn

__all__ = ["Agent"]

log = logging.getLogger("edgeml.agent")


class Agent:
    """Everything one device runs; ``start`` the background parts, ``serve`` HTTP, ``stop``."""

    def __init__(self, config: AgentConfig) -> None:
        _setup_tracing()
        self.config = config
        self.profile = get_profile(config.profile, config.state_dir)
        self.holder = ModelHolder()
        self.health = HealthWatch()
        self.telemetry = TelemetryWindow(
            config.device_id,
            group=config.group,
            window_s=config.telemetry.window_s,
            window_rows=config.telemetry.window_rows,
            sample_rows=config.telemetry.sample_rows,
        )
        self.holder.watch(self.health, self.telemetry)
        self.syncer = Syncer(
            config,
            self.profile,
            open_store(config.store_url, config.store.s3),
            KeyRing.from_dir(config.keyring),
            self.holder,
            self.health,
        )
        self.spool = Spool(
            config.state_dir / "telemetry.sqlite", max_bytes=int(config.telemetry.spool_max_bytes)
        )
        self.pusher = (
            TelemetryPusher(self.spool, config.central.url, config.central.read_token())
            if config.central
            else None
        )
        self.stream = StreamServing(config.mqtt, self.holder, config.device_id) if config.mqtt else None
        capacity = config.telemetry.prediction_log
        self.predlog = PredictionLog(capacity) if capacity and config.central else None
        self.shipper = (
            PredictionShipper(self.predlog, config.device_id, config.central.url, config.central.read_token())
            if self.predlog is not None and config.central
            else None
        )
        self.app = create_app(
            self.holder,
            max_body_bytes=int(config.http.max_body_bytes),
            max_rows=config.http.max_rows,
            prediction_log=self.predlog,
        )
        self.app.add_route("/agent/status", self._status, methods=["GET"])
        self.grpc: Any = None
        if config.grpc is not None:  # grpcio is imported only when gRPC is on
            try:
                from edgeml.agent.grpc import GrpcServer
            except ImportError as exc:
                hint = "pip install 'edgeml[edge-grpc]'"
                raise ConfigError(f"agent.yaml sets grpc, but {exc}: {hint}") from exc

            g = config.grpc
            self.grpc = GrpcServer(
                self.app.state.serving,
                host=g.host,
                port=g.port,
                max_message_bytes=int(g.max_message_bytes),
                workers=g.workers,
            )
        # readiness also says whether every background thread is up; this route is tried first
        self.app.router.routes.insert(0, Route("/v2/health/ready", self._ready, methods=["GET"]))
        self._stop = threading.Event()
        self.collector = Supervisor("telemetry-collect")

    def supervisors(self) -> list[Supervisor]:
        """The supervised background threads this agent runs."""
        found = [self.syncer.supervisor, self.collector]
        found += [p.supervisor for p in (self.pusher, self.stream) if p is not None]
        return found

    def _threads(self) -> dict[str, Any]:
        return {s.name: s.status() for s in self.supervisors()}

    async def _ready(self, request: Any) -> Any:
        """Ready once a model is loaded and while no background thread is down (503 naming it)."""
        from starlette.responses import JSONResponse

        down = {s.name: s.last_error for s in self.supervisors() if not s.up}
        if self.holder.current is None:
            return JSONResponse({"ready": False, "reason": "no model is loaded yet"}, 503)
        if down:
            return JSONResponse({"ready": False, "reason": "background threads are down", "down": down}, 503)
        return JSONResponse({"ready": True})

    async def _status(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        status = dict(self.syncer.status())
        status |= {
            "device_id": self.config.device_id,
            "group": self.config.group,
            "profile": self.profile.name,
        }
        status |= {"spool_batches": len(self.spool), "spool_dropped": self.spool.dropped_total}
        status["threads"] = self._threads()
        return JSONResponse(status)

    def start(self) -> None:
        model = self.syncer.load_installed()
        log.info("installed bundle: %s", f"{model.name} v{model.version}" if model else "none yet")
        self.syncer.start()
        self.collector.start(self._collect, self._stop)
        if self.pusher is not None:
            self.pusher.start()
        if self.stream is not None:
            self.stream.start()
        if self.grpc is not None:
            self.grpc.start()
            log.info("OIP v2 gRPC serving on %s", self.grpc.address)

    def _collect(self) -> float:
        """Move closed telemetry windows into the spool; again in a second."""
        self._spool(self.telemetry.collect())
        if self.shipper is not None:
            self.shipper.ship()
        return 1.0

    def _spool(self, batches: list[Any]) -> None:
        for batch in batches:
            self.spool.put(batch)
        if batches and self.pusher is not None:
            self.pusher.wake()

    def stop(self) -> None:
        """Stop background work; keep every closed and open telemetry window in the spool."""
        self._stop.set()
        if self.grpc is not None:
            self.grpc.stop()
        if self.stream is not None:
            self.stream.stop()
        self.syncer.stop()
        self.collector.join(timeout=5)
        self._spool(self.telemetry.flush())
        if self.pusher is not None:
            self.pusher.stop()
        if self.shipper is not None:
            self.shipper.ship()
            self.shipper.close()
        self.spool.close()

    def bind(self) -> socket.socket:
        """The listening socket (port 0 picks a free one; the URL is printed once bound)."""
        http = self.config.http
        family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((http.host, http.port))
        sock.listen(2048)  # connections queue from here on, before uvicorn starts accepting
        return sock

    def server(self) -> uvicorn.Server:
        """The HTTP server: the app behind the body guard (stalled uploads are closed)."""
        import uvicorn

        http = self.config.http
        self.server_guard = BodyGuard(
            self.app, body_timeout_s=http.body_timeout_s, max_slow_bodies=http.max_slow_uploads
        )
        config = uvicorn.Config(
            self.server_guard, log_level="warning", access_log=False, http="httptools", lifespan="off"
        )
        return uvicorn.Server(config)

    def serve(self, sock: socket.socket) -> None:
        """Serve HTTP until SIGINT/SIGTERM (uvicorn handles both)."""
        # uvicorn re-raises a captured SIGTERM once it has shut down; let it unwind the stack
        # (so the caller's clean-up runs) instead of ending the process on the spot.
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self.server().run(sockets=[sock])
        finally:
            signal.signal(signal.SIGTERM, previous)


def _setup_tracing() -> None:
    """Tracing per the appliance settings (``EDGEML_TRACING``...); requests sampled at their own ratio."""
    from edgeml.observability import setup_tracing
    from edgeml.settings import load_settings

    tracing = load_settings().tracing
    setup_tracing(tracing, sample_ratio=tracing.agent_sample_ratio)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)
