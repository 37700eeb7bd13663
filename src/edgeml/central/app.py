"""The central node's FastAPI application: :func:`create_app`.

Routers (``edgeml.central.routes``): devices, targets, telemetry, feedback, fleet (JSON and
the page at ``/``), drift, rollouts (the quality gate), health (``/healthz``, ``/readyz``,
``/metrics``). Three ASGI middlewares wrap them: the telemetry intake, which answers every
telemetry post with the function the route calls (:mod:`edgeml.central.intake`), request
timing (by route template) and the body limit (413 before more than the limit is read).
Every :class:`~edgeml.errors.EdgemlError` a route raises is answered by one handler
(:func:`~edgeml.central.routes.deps.error_response`). The telemetry store is opened here and
closed when the server shuts down; run one process per database file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeml import __version__
from edgeml.central.alerts import Alerter
from edgeml.central.config import CentralConfig
from edgeml.central.drift import DriftConfig
from edgeml.central.gate import QualityGate
from edgeml.central.intake import BodyLimitMiddleware, TelemetryIntake
from edgeml.central.monitor import Monitor
from edgeml.central.performance import StoredReferenceRows
from edgeml.central.routes import devices, drift, erase, feedback, fleet, health, rollouts, targets, telemetry
from edgeml.central.routes.deps import error_response
from edgeml.central.routes.telemetry import openapi_with_batch
from edgeml.central.services.fleet import restore_gauges, write_prometheus_sd
from edgeml.central.services.retraining import retrainer
from edgeml.central.services.state import CentralState
from edgeml.central.services.targets import TargetResolver
from edgeml.errors import EdgemlError
from edgeml.observability import track_http_request
from edgeml.store.base import ObjectStore
from edgeml.telemetry.process import StoreProcess
from edgeml.telemetry.store import TelemetryStore

__all__ = ["create_app"]

log = logging.getLogger("edgeml.central")


class TimingMiddleware:
    """Observe every request's duration by route template (never the raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            track_http_request(template, scope["method"], status, time.perf_counter() - start)


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field; the offending input is not echoed (a batch can be megabytes)."""
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def _error(config: CentralConfig) -> Any:
    def handler(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EdgemlError)
        return error_response(exc, config.limits.retry_after_s)

    return handler


async def _compact_forever(store: TelemetryStore, every_s: float, resolver: TargetResolver) -> None:
    while True:
        try:  # models whose spec keeps data fewer days than the node are compacted sooner
            await run_in_threadpool(store.compact, None, resolver.retention())
        except Exception:  # a failed round must not end the schedule
            log.exception("telemetry compaction failed")
        await asyncio.sleep(every_s)


def create_app(config: CentralConfig) -> FastAPI:
    """The central node; the telemetry store opens now and closes at server shutdown."""
    from edgeml.store import open_store

    object_store = open_store(config.store.url, config.store.s3_settings()) if config.store else None
    resolver = TargetResolver(object_store, config.keyring, config.targets_cache_s)
    admin, bootstrap = config.admin_token(), config.bootstrap_token()
    store = StoreProcess(
        config.db_path,
        max_queued_batches=config.limits.max_queued_batches,
        retention_days=config.retention_days,
        memory_limit=f"{int(config.db_memory)}B",
    )
    state = CentralState(
        config=config, store=store, admin_token=admin, bootstrap_token=bootstrap, targets=resolver
    )
    restore_gauges(state)
    write_prometheus_sd(state)
    alerter = (
        Alerter(config.alerts.webhook_url, repeat_after_s=config.alerts.repeat_after_s)
        if config.alerts.webhook_url
        else None
    )
    retrain_settings = None
    if config.retrain.spec is not None:
        from edgeml.settings import load_settings

        home = config.retrain.home
        retrain_settings = load_settings({"EDGEML_HOME": str(home)} if home else None)
    policy = retrainer(config, retrain_settings, resolver, store)
    if config.monitor.enabled:
        state.monitor = Monitor(
            store,
            resolver.manifest,
            window=timedelta(seconds=config.monitor.window_s),
            interval_s=config.monitor.interval_s,
            min_rows=config.monitor.min_rows,
            alerter=alerter,
            on_round=None if policy is None else policy.round,
            drift=DriftConfig(min_js=config.monitor.min_js),
            gate=_gate(config, store, object_store, resolver, alerter),
            nannyml=config.monitor.nannyml,
            references=StoredReferenceRows(object_store, config.keyring),
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_compact_forever(store, config.compact_every_s, resolver))
        if state.monitor is not None:
            state.monitor.start()
        try:
            yield
        finally:
            if state.monitor is not None:
                await run_in_threadpool(state.monitor.stop)
            if retrain_settings is not None:
                from edgeml.central.retrain import stop_local_jobs

                await run_in_threadpool(stop_local_jobs, retrain_settings)
            if alerter is not None:
                alerter.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await run_in_threadpool(store.close)

    app = FastAPI(
        title="edgeml central",
        version=__version__,
        summary="Fleet registry, device auth, telemetry intake, targets, feedback and the fleet page.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry instrumentation: the node's metrics are Prometheus ones and
        # it installs no tracer provider, and the check for one on every request cost ~3% of the
        # event loop under telemetry load
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.central = state
    for module in (devices, targets, telemetry, feedback, erase, fleet, drift, rollouts, health):
        app.include_router(module.router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(EdgemlError, _error(config))
    app.openapi = partial(openapi_with_batch, app)  # type: ignore[method-assign]
    limit = int(config.limits.max_body_bytes)
    app.add_middleware(BodyLimitMiddleware, limit=limit, retry_after_s=config.limits.retry_after_s)
    app.add_middleware(TimingMiddleware)  # 413s are timed too
    app.add_middleware(TelemetryIntake, state=state, limit=limit)
    return app


def _gate(
    config: CentralConfig,
    db: TelemetryStore,
    object_store: ObjectStore | None,
    resolver: TargetResolver,
    alerter: Alerter | None,
) -> QualityGate | None:
    if not config.gate_on:
        return None
    from edgeml.bundle.keys import KeyRing, load_signer

    assert object_store is not None
    assert config.gate.keys_home is not None
    assert config.keyring is not None
    return QualityGate(
        db,
        object_store,
        resolver,
        load_signer(config.gate.keys_home),
        alerter=alerter,
        lookback=timedelta(seconds=config.gate.lookback_s),
        approvers=KeyRing.from_dir(config.keyring),  # the devices' ring: approvers' keys are in it
    )
