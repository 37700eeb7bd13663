"""Every Prometheus metric edgeml exports, and tracing set-up.

This module is the single source of truth for metric names: ``edgeml_`` prefix,
units in the name. Call sites use the small ``track_*`` helpers below, never the
metric objects' label plumbing directly. Metrics live on :data:`REGISTRY`, not on
prometheus_client's global registry, so an embedding process keeps its own metrics
apart and tests can read ours without interference.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

if TYPE_CHECKING:
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Tracer

    from edgeml.settings import TracingSettings

__all__ = [
    "AGENT_THREAD_DOWN_SINCE",
    "AGENT_THREAD_FAILURES",
    "ALERTS_SENT",
    "BUILD_INFO",
    "BUNDLE_DOWNLOAD_BYTES",
    "BUNDLE_SWAPS",
    "BUNDLE_VERIFICATIONS",
    "CANARY_ACCURACY",
    "CANARY_ACTIONS",
    "DEVICE_LAST_SEEN",
    "DEVICE_MODEL",
    "DEVICE_SPOOL_DROPPED",
    "DRIFT_BREACH",
    "DRIFT_SCORE",
    "DRIFT_THRESHOLD",
    "ESTIMATED_ACCURACY",
    "FLEET_DEVICES",
    "HTTP_REQUEST_SECONDS",
    "INFERENCE_REQUESTS",
    "INFERENCE_ROWS",
    "INFERENCE_SECONDS",
    "LAST_SYNC",
    "MODEL_INFO",
    "NANNYML_DRIFT_ALERT",
    "NANNYML_ESTIMATED_ACCURACY",
    "NANNYML_PERFORMANCE_ALERT",
    "REALIZED_ACCURACY",
    "REGISTRY",
    "RETRAIN_JOBS",
    "SPEC_CHECKS",
    "SPOOL_BATCHES",
    "SPOOL_BYTES",
    "STORE_BYTES",
    "STORE_OPERATIONS",
    "STORE_OPERATION_SECONDS",
    "TELEMETRY_BATCHES",
    "TELEMETRY_DROPPED",
    "TELEMETRY_LAG",
    "TELEMETRY_ROWS",
    "TELEMETRY_SENT",
    "TRACEPARENT_ENV",
    "TRACING",
    "TraceIdFilter",
    "get_tracer",
    "install_tracer_provider",
    "render_metrics",
    "request_span",
    "set_span_attribute",
    "setup_tracing",
    "span",
    "span_from_env",
    "traced",
    "traceparent_env",
    "tracer_provider",
    "track_bundle_verification",
    "track_inference_answers",
    "track_served_model",
    "track_spec_check",
    "track_store_bytes",
    "track_store_operation",
    "track_swap",
    "track_thread_round",
]

P = ParamSpec("P")
R = TypeVar("R")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

BUILD_INFO = Gauge(
    "edgeml_build_info",
    "edgeml version running in this process (value is always 1)",
    ["version"],
    registry=REGISTRY,
)
STORE_OPERATIONS = Counter(
    "edgeml_store_operations_total",
    "Object-store operations by backend, operation and outcome",
    ["backend", "operation", "outcome"],
    registry=REGISTRY,
)
STORE_OPERATION_SECONDS = Histogram(
    "edgeml_store_operation_seconds",
    "Latency of object-store operations (streams: time to first byte)",
    ["backend", "operation"],
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STORE_BYTES = Counter(
    "edgeml_store_bytes_total",
    "Bytes moved to (up) and from (down) the object store",
    ["backend", "direction"],
    registry=REGISTRY,
)
SPEC_CHECKS = Counter(
    "edgeml_spec_checks_total",
    "Pipeline specs checked, by outcome (valid or invalid)",
    ["outcome"],
    registry=REGISTRY,
)

# --- serving (the agent and `edgeml serve` use the same names) ---------------------------
INFERENCE_REQUESTS = Counter(
    "edgeml_inference_requests_total",
    "Inference requests by model, version, protocol (v2, predict, mqtt) and outcome "
    "(ok, bad_input, too_large, not_ready, error)",
    ["model", "version", "protocol", "outcome"],
    registry=REGISTRY,
)
INFERENCE_SECONDS = Histogram(
    "edgeml_inference_latency_seconds",
    "Time from a parsed request to its answer (validation, model, telemetry), by model and version",
    ["model", "version"],
    registry=REGISTRY,
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
INFERENCE_ROWS = Counter(
    "edgeml_inference_rows_total",
    "Rows predicted, by model and version",
    ["model", "version"],
    registry=REGISTRY,
)
MODEL_INFO = Gauge(
    "edgeml_model_info",
    "The bundle being served (value 1): model, version, profile and runtime",
    ["model", "version", "profile", "runtime"],
    registry=REGISTRY,
)
# --- the agent's bundle sync -----------------------------------------------------------
BUNDLE_VERIFICATIONS = Counter(
    "edgeml_bundle_verifications_total",
    "Bundles and channel pointers checked by a device, by outcome (ok or the rejection reason)",
    ["outcome"],
    registry=REGISTRY,
)
BUNDLE_SWAPS = Counter(
    "edgeml_agent_swaps_total",
    "Model swaps by outcome (ok, smoke_test_failed, rolled_back)",
    ["outcome"],
    registry=REGISTRY,
)
BUNDLE_DOWNLOAD_BYTES = Counter(
    "edgeml_agent_download_bytes_total", "Blob bytes downloaded by the agent", registry=REGISTRY
)
LAST_SYNC = Gauge(
    "edgeml_agent_last_sync_timestamp_seconds",
    "Unix time of the agent's last successful check of its channel",
    registry=REGISTRY,
)
# --- telemetry spool (agent -> central) --------------------------------------------------
SPOOL_BATCHES = Gauge(
    "edgeml_telemetry_spool_batches", "Telemetry batches waiting in the on-disk spool", registry=REGISTRY
)
SPOOL_BYTES = Gauge("edgeml_telemetry_spool_bytes", "Bytes held by the telemetry spool", registry=REGISTRY)
TELEMETRY_DROPPED = Counter(
    "edgeml_telemetry_dropped_batches_total",
    "Telemetry batches dropped because the spool was full (oldest first)",
    registry=REGISTRY,
)
TELEMETRY_SENT = Counter(
    "edgeml_telemetry_sent_batches_total",
    "Telemetry delivery attempts by outcome (ok, retry, rejected)",
    ["outcome"],
    registry=REGISTRY,
)

# --- central node ----------------------------------------------------------------------
HTTP_REQUEST_SECONDS = Histogram(
    "edgeml_http_request_seconds",
    "Central node HTTP requests by route template, method and status",
    ["route", "method", "status"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TELEMETRY_BATCHES = Counter(
    "edgeml_central_telemetry_batches_total",
    "Telemetry batches received, by outcome (accepted, duplicate, conflict, rejected, throttled)",
    ["outcome"],
    registry=REGISTRY,
)
TELEMETRY_ROWS = Counter(
    "edgeml_central_telemetry_rows_total",
    "Rows predicted on devices, as reported in accepted telemetry, by model and group",
    ["model", "group"],
    registry=REGISTRY,
)
FLEET_DEVICES = Gauge(
    "edgeml_fleet_devices",
    "Registered devices by state (online, offline, decommissioned)",
    ["state"],
    registry=REGISTRY,
)
DEVICE_LAST_SEEN = Gauge(
    "edgeml_device_last_seen_timestamp_seconds",
    "Unix time of a device's latest telemetry",
    ["device", "group"],
    registry=REGISTRY,
)
DEVICE_MODEL = Gauge(
    "edgeml_device_model_info",
    "The model version a device reports serving (value 1)",
    ["device", "group", "model", "version"],
    registry=REGISTRY,
)
DEVICE_SPOOL_DROPPED = Counter(
    "edgeml_device_spool_dropped_batches_total",
    "Telemetry batches devices report having dropped from a full spool",
    ["device", "group"],
    registry=REGISTRY,
)
TELEMETRY_LAG = Gauge(
    "edgeml_telemetry_lag_seconds",
    "How old a device's newest telemetry window was when it arrived",
    ["device", "group"],
    registry=REGISTRY,
)
DRIFT_SCORE = Gauge(
    "edgeml_drift_score_ratio",
    "Distance between a feature's recent histogram and its reference (method: js, psi, hellinger, chi2)",
    ["model", "version", "group", "feature", "method"],
    registry=REGISTRY,
)
DRIFT_BREACH = Gauge(
    "edgeml_drift_breach_info",
    "1 while a feature's drift is over its threshold, else 0",
    ["model", "version", "group", "feature"],
    registry=REGISTRY,
)
DRIFT_THRESHOLD = Gauge(
    "edgeml_drift_threshold_ratio",
    "A feature's drift band: its deciding method's bound (lower or upper) in the last round",
    ["model", "version", "group", "feature", "method", "bound"],
    registry=REGISTRY,
)
ESTIMATED_ACCURACY = Gauge(
    "edgeml_estimated_accuracy_ratio",
    "Accuracy estimated without labels (calibrated-probability sums, CBPE)",
    ["model", "version", "group"],
    registry=REGISTRY,
)
REALIZED_ACCURACY = Gauge(
    "edgeml_realized_accuracy_ratio",
    "Accuracy measured on feedback labels",
    ["model", "version", "group"],
    registry=REGISTRY,
)
NANNYML_DRIFT_ALERT = Gauge(
    "edgeml_nannyml_drift_alert_info",
    "1 while NannyML's univariate drift alerts on a feature of the row sample, else 0",
    ["model", "version", "group", "feature"],
    registry=REGISTRY,
)
NANNYML_ESTIMATED_ACCURACY = Gauge(
    "edgeml_nannyml_estimated_accuracy_ratio",
    "Accuracy NannyML's CBPE estimates on the row sample (bound: estimate, lower, upper of its band)",
    ["model", "version", "group", "bound"],
    registry=REGISTRY,
)
NANNYML_PERFORMANCE_ALERT = Gauge(
    "edgeml_nannyml_performance_alert_info",
    "1 while NannyML's estimate (CBPE accuracy, DLE mae) on the row sample is outside its thresholds, else 0",
    ["model", "version", "group", "estimator", "metric"],
    registry=REGISTRY,
)
ALERTS_SENT = Counter(
    "edgeml_alerts_sent_total",
    "Alert webhook deliveries by kind (firing, resolved) and outcome (ok, failed)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
CANARY_ACCURACY = Gauge(
    "edgeml_canary_accuracy_ratio",
    "Accuracy the quality gate compares: side (canary, champion), metric (realized, estimated)",
    ["model", "version", "side", "metric"],
    registry=REGISTRY,
)
CANARY_ACTIONS = Counter(
    "edgeml_canary_actions_total",
    "Quality-gate actions on canaries: promote, rollback",
    ["model", "action"],
    registry=REGISTRY,
)
RETRAIN_JOBS = Counter(
    "edgeml_retrain_jobs_total",
    "Retraining jobs by outcome (submitted, succeeded, failed)",
    ["outcome"],
    registry=REGISTRY,
)


@contextmanager
def track_store_operation(backend: str, operation: str) -> Iterator[None]:
    """Count and time one store operation; an exception counts as ``outcome="error"``."""
    start = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        STORE_OPERATION_SECONDS.labels(backend, operation).observe(time.perf_counter() - start)
        STORE_OPERATIONS.labels(backend, operation, outcome).inc()


def track_store_bytes(backend: str, direction: str, count: int) -> None:
    """Add ``count`` bytes moved ``up`` to or ``down`` from a store."""
    STORE_BYTES.labels(backend, direction).inc(count)


def track_spec_check(valid: bool) -> None:
    SPEC_CHECKS.labels("valid" if valid else "invalid").inc()


def render_metrics() -> bytes:
    """The Prometheus text exposition of :data:`REGISTRY`."""
    from edgeml import __version__

    BUILD_INFO.labels(__version__).set(1)
    return generate_latest(REGISTRY)


class _Tracing:
    """The installed tracer provider; ``None`` while tracing is off (the agent checks this per request)."""

    provider: SdkTracerProvider | None = None
    tracer: Tracer | None = None  # edgeml's tracer from ``provider``, made once: per request it counts


TRACING = _Tracing()

#: W3C Trace Context env var carrying a parent to a child process (OTel's env-carrier convention)
TRACEPARENT_ENV = "TRACEPARENT"


def setup_tracing(settings: TracingSettings, *, sample_ratio: float = 1.0) -> None:
    """Install a tracer provider per settings: none (the API's no-op), console, or OTLP/HTTP.

    Called once by an entry point (CLI, agent, central), never at import; later calls do
    nothing. Root spans are sampled at ``sample_ratio`` (ParentBased(TraceIdRatioBased)): a
    sampled caller's trace is always followed. The root logger's handlers end each line with
    the current trace id (:class:`TraceIdFilter`). OTLP needs
    ``opentelemetry-exporter-otlp-proto-http``.
    """
    if settings.exporter == "none" or TRACING.provider is not None:
        return
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    from edgeml.errors import ConfigError

    if settings.exporter == "console":
        processor: SpanProcessor = SimpleSpanProcessor(ConsoleSpanExporter())
    else:
        if not settings.otlp_endpoint:
            raise ConfigError(
                "tracing.exporter is 'otlp' but no endpoint is set",
                hint="set tracing.otlp_endpoint or EDGEML_OTLP_ENDPOINT (e.g. http://collector:4318)",
            )
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigError(
                "tracing.exporter 'otlp' needs opentelemetry-exporter-otlp-proto-http",
                hint="pip install 'edgeml[cluster]' or that package alone",
            ) from exc
        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
    install_tracer_provider(tracer_provider(processor, settings.service_name, sample_ratio))
    _add_trace_ids_to_logs()


def tracer_provider(
    processor: SpanProcessor, service_name: str, sample_ratio: float = 1.0
) -> SdkTracerProvider:
    """An SDK provider sending every sampled span to ``processor``."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(processor)
    return provider


def install_tracer_provider(provider: SdkTracerProvider | None) -> None:
    """Make ``provider`` the one edgeml's spans go to (``None``: tracing off again).

    The OTel API lets a process set its global provider once, so edgeml keeps its own
    reference; the first provider also becomes the global one, for libraries that trace.
    """
    from opentelemetry import trace

    TRACING.provider = provider
    TRACING.tracer = None if provider is None else provider.get_tracer("edgeml")
    if provider is not None and not isinstance(trace.get_tracer_provider(), type(provider)):
        trace.set_tracer_provider(provider)


def get_tracer(name: str = "edgeml") -> Tracer:
    """A tracer; its spans are no-ops until a provider is installed."""
    from opentelemetry import trace

    if TRACING.provider is not None:
        return TRACING.tracer if name == "edgeml" and TRACING.tracer else TRACING.provider.get_tracer(name)
    return trace.get_tracer(name, tracer_provider=trace.NoOpTracerProvider())


@contextmanager
def span(name: str, **attributes: str | int | float | bool) -> Iterator[None]:
    """A span around a block, attributes as ``edgeml.<key>`` (a no-op while tracing is off).

    An exception leaving the block is recorded on the span and marks it failed.
    """
    if TRACING.provider is None:
        yield
        return
    named = {f"edgeml.{key}": value for key, value in attributes.items()}
    with get_tracer().start_as_current_span(name, attributes=named):
        yield


def traced(name: str, *arguments: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function to run in a span ``name`` noting the named ``arguments``' values."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            if TRACING.provider is None:
                return function(*args, **kwargs)
            call_args = signature.bind(*args, **kwargs)
            call_args.apply_defaults()
            bound = call_args.arguments
            noted = {a: bound[a] for a in arguments if isinstance(bound.get(a), str | int | float | bool)}
            with span(name, **noted):
                return function(*args, **kwargs)

        return call

    return decorate


def set_span_attribute(key: str, value: str | int | float | bool) -> None:
    """Note ``key`` on the current span (nothing while tracing is off)."""
    if TRACING.provider is not None:
        from opentelemetry import trace

        trace.get_current_span().set_attribute(key, value)


@functools.cache
def _w3c() -> TextMapPropagator:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


@contextmanager
def request_span(headers: Mapping[str, str], name: str, route: str) -> Iterator[None]:
    """A server span for one request, the child of its W3C ``traceparent`` header if it has one."""
    from opentelemetry.trace import SpanKind

    parent = _w3c().extract(headers) if "traceparent" in headers else None
    tracer = get_tracer()
    attributes = {"http.route": route}
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes):
        yield


@contextmanager
def linked_span(
    name: str, traceparents: Iterable[str], **attributes: str | int | float | bool
) -> Iterator[None]:
    """A span linked to the spans the W3C ``traceparents`` name (a no-op while tracing is off)."""
    if TRACING.provider is None:
        yield
        return
    from opentelemetry.trace import Link, get_current_span

    links = []
    for traceparent in traceparents:
        context = get_current_span(_w3c().extract({"traceparent": traceparent})).get_span_context()
        if context.is_valid:
            links.append(Link(context))
    named = {f"edgeml.{key}": value for key, value in attributes.items()}
    with get_tracer().start_as_current_span(name, links=links, attributes=named):
        yield


@contextmanager
def span_from_env(name: str, **attributes: str | int | float | bool) -> Iterator[None]:
    """A span continuing the trace a parent process passed in ``$TRACEPARENT`` (or a new one)."""
    import os

    if TRACING.provider is None:
        yield
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": os.environ.get(TRACEPARENT_ENV, "")}
    parent = TraceContextTextMapPropagator().extract(carrier)
    named = {f"edgeml.{key}": value for key, value in attributes.items()}
    with get_tracer().start_as_current_span(name, context=parent, attributes=named):
        yield


def traceparent_env() -> dict[str, str]:
    """``{"TRACEPARENT": ...}`` for a child process to continue the current trace; empty if none."""
    if TRACING.provider is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return {TRACEPARENT_ENV: carrier["traceparent"]} if "traceparent" in carrier else {}


class TraceIdFilter(logging.Filter):
    """Sets ``record.trace``: `` trace_id=… span_id=…`` inside a sampled span, else empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        record.trace = (
            f" trace_id={context.trace_id:032x} span_id={context.span_id:016x}" if context.is_valid else ""
        )
        return True


def _add_trace_ids_to_logs() -> None:
    """Give the root logger's handlers the trace id at the end of each line (once per handler)."""
    for handler in logging.getLogger().handlers:
        if any(isinstance(f, TraceIdFilter) for f in handler.filters):
            continue
        handler.addFilter(TraceIdFilter())
        old = handler.formatter or logging.Formatter()
        handler.setFormatter(logging.Formatter(f"{old._fmt or '%(message)s'}%(trace)s", old.datefmt))


# --- central node and telemetry helpers (appended; call sites never touch labels) --------------


@functools.cache
def _http_timer(route: str, method: str, status: int) -> Histogram:
    return HTTP_REQUEST_SECONDS.labels(route, method, str(status))


def track_http_request(route: str, method: str, status: int, seconds: float) -> None:
    """One central-node request, by route template (never the raw path: ids would explode it)."""
    _http_timer(route, method, status).observe(seconds)


def track_telemetry_batch(outcome: str, count: int = 1) -> None:
    """A batch the central node received: accepted, duplicate, conflict, rejected or throttled."""
    TELEMETRY_BATCHES.labels(outcome).inc(count)


def track_telemetry_rows(model: str, group: str | None, rows: int) -> None:
    """Rows predicted on devices, as an accepted batch reports them."""
    TELEMETRY_ROWS.labels(model, group or "").inc(rows)


def track_fleet_devices(state: str, count: int) -> None:
    """How many registered devices are online, offline or decommissioned."""
    FLEET_DEVICES.labels(state).set(count)


def track_device_seen(device: str, group: str | None, at: float) -> None:
    """A device's latest telemetry arrived at ``at`` (Unix time)."""
    DEVICE_LAST_SEEN.labels(device, group or "").set(at)


def track_device_lag(device: str, group: str | None, seconds: float) -> None:
    """How far behind now a device's newest telemetry window ends."""
    TELEMETRY_LAG.labels(device, group or "").set(seconds)


def track_device_spool_dropped(device: str, group: str | None, count: int) -> None:
    """Batches a device reported dropping (its spool was full)."""
    DEVICE_SPOOL_DROPPED.labels(device, group or "").inc(count)


#: a device's DEVICE_MODEL series: device, group, model, version
DeviceModel = tuple[str, str, str, str]


def track_device_model(serving: DeviceModel, previous: DeviceModel | None) -> None:
    """The model version a device serves; the series of the one it served before goes."""
    if previous is not None:
        DEVICE_MODEL.remove(*previous)
    DEVICE_MODEL.labels(*serving).set(1)


def forget_device(device: str, group: str | None, serving: DeviceModel | None) -> None:
    """A decommissioned device leaves the per-device gauges (a series never set: nothing happens)."""
    for gauge in (DEVICE_LAST_SEEN, TELEMETRY_LAG):
        gauge.remove(device, group or "")
    if serving is not None:
        DEVICE_MODEL.remove(*serving)


def track_drift(
    model: str, version: int, group: str | None, feature: str, scores: Mapping[str, float], breached: bool
) -> None:
    """One feature's drift: every method's score, and whether the deciding one breached."""
    labels = (model, str(version), group or "", feature)
    for method, value in scores.items():
        DRIFT_SCORE.labels(*labels, method).set(value)
    DRIFT_BREACH.labels(*labels).set(1 if breached else 0)


def track_drift_band(
    model: str,
    version: int,
    group: str | None,
    feature: str,
    method: str,
    lower: float | None,
    upper: float | None,
) -> None:
    """One feature's band: the bounds its deciding method's value is judged by (None: no bound)."""
    labels = (model, str(version), group or "", feature, method)
    for bound, value in (("lower", lower), ("upper", upper)):
        if value is not None:
            DRIFT_THRESHOLD.labels(*labels, bound).set(value)
        else:  # a band that lost a side (a new version) must not keep the old one
            with contextlib.suppress(KeyError):
                DRIFT_THRESHOLD.remove(*labels, bound)


def track_accuracy(
    model: str,
    version: int,
    group: str | None,
    *,
    estimated: float | None = None,
    realized: float | None = None,
) -> None:
    """A version's accuracy on a group: the label-free estimate, and what feedback labels showed."""
    labels = (model, str(version), group or "")
    if estimated is not None:
        ESTIMATED_ACCURACY.labels(*labels).set(estimated)
    if realized is not None:
        REALIZED_ACCURACY.labels(*labels).set(realized)


def track_nannyml_drift(model: str, version: int, group: str | None, feature: str, alert: bool) -> None:
    NANNYML_DRIFT_ALERT.labels(model, str(version), group or "", feature).set(1 if alert else 0)


def track_nannyml_performance(
    model: str,
    version: int,
    group: str | None,
    estimator: str,
    metric: str,
    alert: bool,
    bounds: dict[str, float | None],
) -> None:
    """NannyML's estimate: its alert, and (for accuracy) the estimate with its band."""
    labels = (model, str(version), group or "")
    NANNYML_PERFORMANCE_ALERT.labels(*labels, estimator, metric).set(1 if alert else 0)
    for bound, value in bounds.items():
        if value is not None:
            NANNYML_ESTIMATED_ACCURACY.labels(*labels, bound).set(value)


def track_canary_accuracy(model: str, version: int, side: str, metric: str, value: float) -> None:
    """The quality gate's figure for one side (canary or champion)."""
    CANARY_ACCURACY.labels(model, str(version), side, metric).set(value)


def track_canary_action(model: str, action: str) -> None:
    CANARY_ACTIONS.labels(model, action).inc()


def track_retrain_job(outcome: str) -> None:
    """A retraining job submitted, succeeded or failed."""
    RETRAIN_JOBS.labels(outcome).inc()


def track_alert_sent(status: str, outcome: str) -> None:
    """An alert webhook call (firing or resolved): ok or failed."""
    ALERTS_SENT.labels(status, outcome).inc()


def track_telemetry_sent(outcome: str) -> None:
    """A delivery attempt of the agent's telemetry: ok, retry or rejected."""
    TELEMETRY_SENT.labels(outcome).inc()


def track_inference(model: str, version: int | str, protocol: str, outcome: str) -> None:
    """One inference request by protocol and outcome (answered ones: see track_inference_answers)."""
    _inference_requests(model, str(version), protocol, outcome).inc()


# --- the agent's supervised background threads (sync, MQTT, telemetry) ------------------
AGENT_THREAD_FAILURES = Counter(
    "edgeml_agent_thread_failures_total",
    "Unexpected exceptions in an agent background thread's rounds, by thread; the thread goes on",
    ["thread"],
    registry=REGISTRY,
)
AGENT_THREAD_DOWN_SINCE = Gauge(
    "edgeml_agent_thread_down_since_timestamp_seconds",
    "Unix time of the first failure in a row of an agent background thread; 0 while it is up",
    ["thread"],
    registry=REGISTRY,
)


def track_thread_round(thread: str, down_since: float | None) -> None:
    """One round of a supervised thread: a failure (``down_since``: when the failing began) is
    counted; the gauge says since when the thread is down, 0 once a round succeeds."""
    if down_since is not None:
        AGENT_THREAD_FAILURES.labels(thread).inc()
    AGENT_THREAD_DOWN_SINCE.labels(thread).set(down_since or 0)


# --- the agent's serving and bundle sync (appended; call sites never touch labels) ----------


@functools.cache
def _inference_requests(model: str, version: str, protocol: str, outcome: str) -> Counter:
    return INFERENCE_REQUESTS.labels(model, version, protocol, outcome)


@functools.cache
def _inference_series(model: str, version: str) -> tuple[Histogram, Counter]:
    return INFERENCE_SECONDS.labels(model, version), INFERENCE_ROWS.labels(model, version)


def track_inference_answers(
    model: str, version: str, protocol: str, rows: int, latencies: Sequence[float]
) -> None:
    """Answered requests of one protocol, counted in bulk: requests, rows, each one's seconds."""
    seconds, rows_total = _inference_series(model, version)
    _inference_requests(model, version, protocol, "ok").inc(len(latencies))
    rows_total.inc(rows)
    for value in latencies:
        seconds.observe(value)


#: the agent's MODEL_INFO series: model, version, profile, runtime
ServedModel = tuple[str, str, str, str]


def track_served_model(serving: ServedModel, previous: ServedModel | None) -> None:
    """The bundle the agent serves; the series of the one it served before goes."""
    if previous is not None:
        MODEL_INFO.remove(*previous)
    MODEL_INFO.labels(*serving).set(1)


def track_bundle_verification(outcome: str) -> None:
    """A bundle or channel pointer the agent checked: ok, or the rejection's reason."""
    BUNDLE_VERIFICATIONS.labels(outcome).inc()


def track_swap(outcome: str) -> None:
    """A model swap: ok, smoke_test_failed or rolled_back."""
    BUNDLE_SWAPS.labels(outcome).inc()
