"""MQTT → lake: the edgeml MqttLander against a bare paho subscriber that only counts.

The benchmark starts its own mosquitto on 127.0.0.1 (stopped at the end) and runs two
phases back to back, with the same publisher: the simulator's ``publish_records`` (paho,
QoS 1, as fast as the broker acknowledges, unique ``msg_id`` per message) in its own
process, publishing for ``--seconds``.

1. **bare**: a paho client (QoS 1, persistent session, like the lander's) that counts;
2. **lander**: edgeml's ``MqttLander`` (write-ahead segment per message, de-duplication,
   micro-batches of 20,000 rows / 10 s landed as Parquet parts in the lake).

Why one after the other and not both subscribed at once: on a 2-core machine the two
consumers would compete for the same cores, so the lander's own CPU cost would slow the
bare counter too and flatter the ratio. Alone, each consumer gets the broker and the
publisher to itself, and what it costs shows up in its own figure. Each phase uses its
own topic prefix, so neither session queues the other's messages.

Reported: messages/s received during the publishing window by each; the ratio
lander/bare (target ≥ 0.8); then, counted in the lake after the lander stopped,
lost = published − landed unique ids and duplicated = landed rows − unique ids (target 0, 0).

    .venv/bin/python -m bench.mqtt_lander [--seconds 60]
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.common import (
    DATA_DIR,
    Report,
    Table,
    check_listener,
    example_spec,
    free_port,
    parser,
    smoke_sizes,
    tool_version,
    trim_profile,
    verdict,
)

NAME = "mqtt_lander"
TARGET_RATIO = 0.8  # lander msg/s / bare msg/s
MACHINES = 10  # pumps in the publisher's fleet
CHUNK = 2_000  # readings per pump generated at a time by the publisher
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def lander_spec(url: str, topic: str, client_id: str = "bench-lander") -> Any:
    """examples/pump-faults.yaml with its live MQTT source on this run's broker and topic."""
    source = {
        "name": "live",
        "kind": "mqtt",
        "broker": url,
        "topics": [topic],
        "qos": 1,
        "client_id": client_id,
        "message_id": "msg_id",
        "batch": {"max_rows": 20000, "max_seconds": 10},
    }
    return example_spec("pump-faults", sources=[source])


# ---------------------------------------------------------------------------- broker


class Broker:
    """A fresh mosquitto on 127.0.0.1 for this run (the test suite's config, larger queues)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            # Deep queues: a consumer that falls behind must be queued for, never dropped from.
            "max_queued_messages 10000000\nmax_queued_bytes 0\nmax_inflight_messages 1000\n"
            # Persistent sessions as in production; mosquitto's default autosave (30 min).
            f"persistence true\npersistence_location {self.workdir}/\n"
            # As root, mosquitto would switch to user 'mosquitto', which cannot write our dir.
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                check_listener(self.port, self.proc.pid, "mosquitto")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"mosquitto exited with {self.proc.returncode}; config {conf}") from None
                time.sleep(0.05)
        raise SystemExit(f"mosquitto does not listen on 127.0.0.1:{self.port}")

    def cpu_seconds(self) -> float:
        """User + system CPU the broker has used so far (from /proc)."""
        assert self.proc is not None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


# ---------------------------------------------------------------------------- publisher


def _records(prefix: str, seconds: float, started: Any) -> Any:
    """Simulated readings with unique msg_ids, until ``seconds`` after the first one."""
    import numpy as np

    from bench.common import SensorSimulation, iter_records, simulate_sensors

    base = datetime(2026, 1, 5, tzinfo=UTC)
    n, chunk, deadline = 0, 0, None
    while True:
        sim = SensorSimulation(
            machines=MACHINES, readings=CHUNK, seed=chunk, start=base + timedelta(seconds=chunk * CHUNK * 10)
        )
        cols = simulate_sensors(sim)
        size = len(cols["msg_id"])
        cols["msg_id"] = np.array([f"{prefix}-{i:09d}" for i in range(n, n + size)])
        for record in iter_records(cols):
            if deadline is None:
                started.value = time.time()
                deadline = time.monotonic() + seconds
            elif time.monotonic() >= deadline:
                return
            yield record
            n += 1
        chunk += 1


def _publisher(url: str, topic: str, prefix: str, seconds: float, started: Any, sent: Any, conn: Any) -> None:
    """Child process: publish for ``seconds``, wait for every acknowledgement, report."""
    from bench.common import publish_records

    def progress(count: int) -> None:
        sent.value = count

    count = publish_records(
        _records(prefix, seconds, started),
        url,
        topic=topic,
        qos=1,
        client_id=f"bench-publisher-{prefix}",
        progress=progress,
    )
    sent.value = count
    conn.send({"published": count, "acked_at": time.time(), "cpu": time.process_time()})
    conn.close()


# ---------------------------------------------------------------------------- consumers


class BareSubscriber:
    """The peer: a paho client at QoS 1 whose on_message only counts."""

    def __init__(self, url: str, topic: str, client_id: str = "bench-bare") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from bench.common import connect_client, parse_broker

        self.received = 0
        self.subscribed = threading.Event()
        # Same client settings as the lander: persistent session, fixed id, QoS 1.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        client.max_inflight_messages_set(1000)
        client.on_connect = lambda c, *_: c.subscribe([(topic, 1)])
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = self._on_message
        connect_client(client, parse_broker(url))
        client.loop_start()
        self.client = client

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.received += 1

    def unique_received(self) -> int:
        return self.received

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Phase:
    name: str
    seconds: float
    published: int = 0
    publish_start: float = 0.0  # wall clock
    acked_at: float = 0.0
    in_window: int = 0
    received_total: int = 0
    drained_after: float | None = None  # s after the window until everything arrived
    stop_seconds: float = 0.0
    consumer_cpu: float = 0.0
    publisher_cpu: float = 0.0
    broker_cpu: float = 0.0
    max_backlog: int = 0
    load: str = ""  # load average (1 min) at the start and at the end of the window
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, sent, received)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def received_rate(self) -> float:
        return self.in_window / self.seconds

    @property
    def published_rate(self) -> float:
        return self.published / max(self.acked_at - self.publish_start, 1e-9)


def run_phase(
    name: str,
    broker: Broker,
    topic: str,
    received: Any,
    unique: Any,
    seconds: float,
    drain_timeout: float,
) -> Phase:
    """Publish for ``seconds`` to ``consumer`` (already subscribed); measure; wait for the drain."""
    ctx = get_context("spawn")
    started, sent = ctx.Value("d", 0.0), ctx.Value("q", 0)
    parent, child = ctx.Pipe(duplex=False)
    phase = Phase(name, seconds)
    cpu0, broker0 = time.process_time(), broker.cpu_seconds()
    load0 = os.getloadavg()[0]
    proc = ctx.Process(
        target=_publisher,
        args=(broker.url, topic.replace("+", "{machine_id}"), name, seconds, started, sent, child),
        daemon=True,
    )
    proc.start()
    while started.value == 0.0:
        if not proc.is_alive():
            raise SystemExit(f"the {name} publisher died before publishing (exit code {proc.exitcode})")
        time.sleep(0.01)
    phase.publish_start = t0 = started.value
    end = t0 + seconds
    while (now := time.time()) < end:
        phase.samples.append((now - t0, sent.value, received()))
        time.sleep(min(0.5, max(0.0, end - now)))
    phase.in_window = received()  # the count when the publisher's window closes
    phase.load = f"{load0:.1f} → {os.getloadavg()[0]:.1f}"
    result = parent.recv()
    proc.join()
    phase.published, phase.acked_at, phase.publisher_cpu = (
        result["published"],
        result["acked_at"],
        result["cpu"],
    )
    deadline = time.monotonic() + drain_timeout
    while unique() < phase.published and time.monotonic() < deadline:
        time.sleep(0.05)
    if unique() >= phase.published:
        phase.drained_after = max(0.0, time.time() - end)
    phase.received_total = received()
    phase.consumer_cpu = time.process_time() - cpu0
    phase.broker_cpu = broker.cpu_seconds() - broker0
    phase.max_backlog = max([s - r for _, s, r in phase.samples] + [phase.published - phase.in_window])
    return phase


def run_bare(broker: Broker, seconds: float, drain_timeout: float) -> Phase:
    topic = "bare/+/telemetry"
    bare = BareSubscriber(broker.url, topic)
    try:
        if not bare.subscribed.wait(10):
            raise SystemExit("the bare subscriber got no SUBACK")
        return run_phase(
            "bare", broker, topic, lambda: bare.received, bare.unique_received, seconds, drain_timeout
        )
    finally:
        bare.stop()


def run_lander(broker: Broker, home: Path, seconds: float, drain_timeout: float) -> Phase:
    from bench.common import lander_for, load_settings

    topic = "lander/+/telemetry"
    spec = lander_spec(broker.url, topic)
    settings = load_settings({"EDGEML_HOME": str(home)})
    lander = lander_for(spec, settings, None)
    lander.start()
    try:
        deadline = time.monotonic() + 10
        while lander.stats.connects < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # the SUBSCRIBE goes out from on_connect; give the SUBACK time
        stats = lander.stats
        phase = run_phase(
            "lander",
            broker,
            topic,
            lambda: stats.received,
            lambda: stats.received - stats.duplicates,
            seconds,
            drain_timeout,
        )
    finally:
        start = time.perf_counter()
        lander.stop()  # lands the last micro-batch
        stop_seconds = time.perf_counter() - start
    phase.stop_seconds = stop_seconds
    phase.extra = {**lake_check(spec, settings, "lander", phase.published), "stats": lander.stats}
    return phase


def lake_check(spec: Any, settings: Any, prefix: str, published: int) -> dict[str, int]:
    """Count in the lake: rows, unique ids, lost, duplicated, ids that were never published."""
    import pyarrow.compute as pc

    from bench.common import read_parts, source_parts, store_from_settings

    store = store_from_settings(settings)
    parts = source_parts(store, spec.name, "live")
    table = read_parts(store, parts, spec.schema_)
    unique = pc.unique(table["msg_id"]).to_pylist()
    expected = {f"{prefix}-{i:09d}" for i in range(published)}
    foreign = sum(1 for v in unique if v not in expected)
    return {
        "landed_rows": table.num_rows,
        "unique_ids": len(unique),
        "foreign_ids": foreign,
        "lost": published - (len(unique) - foreign),
        "duplicated": table.num_rows - len(unique),
        "parts": len(parts),
    }


# ---------------------------------------------------------------------------- capacity


@dataclass
class Capacity:
    """How fast a consumer drains a backlog the broker queued while it was away."""

    name: str
    messages: int
    seconds: float = float("nan")
    cpu: float = float("nan")
    received: int = 0
    lake: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.received / self.seconds


def _publish_backlog(broker: Broker, topic: str, prefix: str, messages: int) -> None:
    from types import SimpleNamespace

    from bench.common import publish_records

    records = _take(_records(prefix, 1e9, SimpleNamespace(value=0.0)), messages)
    publish_records(
        records,
        broker.url,
        topic=topic.replace("+", "{machine_id}"),
        qos=1,
        client_id=f"bench-publisher-{prefix}",
    )


def capacity_bare(broker: Broker, messages: int, timeout: float) -> Capacity:
    topic = "bare-backlog/+/telemetry"
    result = Capacity("bare", messages)
    first = BareSubscriber(broker.url, topic, client_id="bench-bare-backlog")
    ok = first.subscribed.wait(10)
    first.stop()  # the persistent session stays: the broker queues for it from now on
    if not ok:
        raise SystemExit("the bare subscriber got no SUBACK")
    _publish_backlog(broker, topic, "bare-backlog", messages)
    start, cpu0 = time.perf_counter(), time.process_time()
    bare = BareSubscriber(broker.url, topic, client_id="bench-bare-backlog")
    try:
        while bare.received < messages and time.perf_counter() - start < timeout:
            time.sleep(0.005)
        result.seconds, result.cpu = time.perf_counter() - start, time.process_time() - cpu0
        result.received = bare.received
    finally:
        bare.stop()
    return result


def capacity_lander(broker: Broker, home: Path, messages: int, timeout: float) -> Capacity:
    from bench.common import lander_for, load_settings

    topic = "lander-backlog/+/telemetry"
    spec = lander_spec(broker.url, topic, client_id="bench-lander-backlog")
    settings = load_settings({"EDGEML_HOME": str(home)})
    result = Capacity("lander", messages)
    first = lander_for(spec, settings, None)
    first.start()
    deadline = time.monotonic() + 10
    while first.stats.connects < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # SUBACK
    first.stop()  # the persistent session stays: the broker queues for it from now on
    _publish_backlog(broker, topic, "lander-backlog", messages)
    lander = lander_for(spec, settings, None)
    start, cpu0 = time.perf_counter(), time.process_time()
    lander.start()
    try:
        while lander.stats.received < messages and time.perf_counter() - start < timeout:
            time.sleep(0.005)
        result.seconds, result.cpu = time.perf_counter() - start, time.process_time() - cpu0
        result.received = lander.stats.received
    finally:
        lander.stop()
    result.lake = lake_check(spec, settings, "lander-backlog", messages)
    return result


# ---------------------------------------------------------------------------- profile


def profile_lander(home: Path, messages: int = 40_000) -> tuple[list[tuple[str, float]], str]:
    """The lander's two paths without a network, under cProfile: receive N messages, land them."""
    from types import SimpleNamespace

    from bench.common import lander_for, load_settings

    spec = lander_spec("mqtt://127.0.0.1:1", "x/+/y")
    lander = lander_for(spec, load_settings({"EDGEML_HOME": str(home)}), None)
    lander.state_dir.mkdir(parents=True, exist_ok=True)
    lander._open_segment()
    payloads = [
        SimpleNamespace(payload=json.dumps(r, separators=(",", ":")).encode())
        for r in _take(_records("profile", 1e9, SimpleNamespace(value=0.0)), messages)
    ]
    stages = []
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for message in payloads:
        lander._on_message(None, None, message)
    profiler.disable()
    stages.append(
        (f"_on_message x {messages:,} (parse, id, de-dup, append to segment)", time.perf_counter() - start)
    )
    start = time.perf_counter()
    profiler.enable()
    lander.flush()  # land the segment: parse again, coerce, Parquet, catalog
    profiler.disable()
    stages.append(
        (f"flush of {messages:,} rows (read segment, coerce, Parquet, catalog)", time.perf_counter() - start)
    )
    assert lander.stats.landed == messages
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("tottime").print_stats(14)
    return stages, buf.getvalue()


def _take(iterable: Any, n: int) -> list[Any]:
    out = []
    for item in iterable:
        out.append(item)
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__)
    cli.add_argument("--seconds", type=float, default=60.0, help="publishing window per phase")
    cli.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="seconds to wait after the window for a consumer to receive everything (default 3 x --seconds)",
    )
    cli.add_argument(
        "--backlog",
        type=int,
        default=100_000,
        help="afterwards, also measure each consumer's capacity: messages queued while it was away, "
        "then drained as fast as it can (informational, not the target); 0 skips it",
    )
    cli.add_argument(
        "--profile", action="store_true", help="also cProfile the lander's receive and landing paths offline"
    )
    args = smoke_sizes(cli.parse_args(argv), seconds=2.0, backlog=2_000)
    if args.seconds <= 0:
        cli.error("--seconds must be positive")
    drain_timeout = args.drain_timeout if args.drain_timeout is not None else max(30.0, 3 * args.seconds)
    if not Path(MOSQUITTO).exists():
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")

    report = Report(
        NAME,
        "MQTT lander",
        args,
        ("edgeml", "paho-mqtt", "pyarrow", "pandas", "numpy"),
        mosquitto=tool_version([MOSQUITTO, "-h"]),
    )
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="mqtt-", dir=DATA_DIR))
    (scratch / "broker").mkdir()
    broker = Broker(scratch / "broker")
    profile = None
    try:
        broker.start()
        print(f"mosquitto on {broker.url}; phase 1: bare subscriber, {args.seconds:g} s of publishing...")
        bare = run_bare(broker, args.seconds, drain_timeout)
        print(f"  bare: {bare.received_rate:,.0f} msg/s received (published {bare.published:,})")
        print(f"phase 2: edgeml MqttLander, {args.seconds:g} s of publishing...")
        lander = run_lander(broker, scratch / "home", args.seconds, drain_timeout)
        print(f"  lander: {lander.received_rate:,.0f} msg/s received (published {lander.published:,})")
        capacity: list[Capacity] = []
        if args.backlog > 0:
            print(f"capacity: {args.backlog:,} messages queued for each consumer while away, then drained...")
            capacity.append(capacity_bare(broker, args.backlog, drain_timeout))
            capacity.append(capacity_lander(broker, scratch / "home-backlog", args.backlog, drain_timeout))
            for c in capacity:
                print(f"  {c.name}: {c.rate:,.0f} msg/s")
        broker.stop()
        if args.profile:
            print("profiling the lander's receive and landing paths offline...")
            profile = profile_lander(scratch / "profile")
    finally:
        broker.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        if DATA_DIR.is_dir() and not any(DATA_DIR.iterdir()):
            DATA_DIR.rmdir()
    report.measured()

    ratio = lander.received_rate / bare.received_rate
    ex = lander.extra
    lake_ok = ex["lost"] == 0 and ex["duplicated"] == 0 and ex["foreign_ids"] == 0

    def drained(p: Phase) -> str:
        return f"{p.drained_after:.1f}" if p.drained_after is not None else f"> {drain_timeout:.0f} (gave up)"

    headers = [
        "consumer",
        "published",
        "publisher msg/s",
        "received in window",
        "received msg/s",
        "backlog max",
        "all in after s",
        "consumer CPU µs/msg",
        "publisher CPU µs/msg",
        "broker CPU µs/msg",
        "load 1-min",
    ]
    rows = [
        [
            label,
            f"{p.published:,}",
            f"{p.published_rate:,.0f}",
            f"{p.in_window:,}",
            f"{p.received_rate:,.0f}",
            f"{p.max_backlog:,}",
            drained(p),
            f"{p.consumer_cpu / max(p.received_total, 1) * 1e6:.1f}",
            f"{p.publisher_cpu / max(p.published, 1) * 1e6:.1f}",
            f"{p.broker_cpu / max(p.published, 1) * 1e6:.1f}",
            p.load,
        ]
        for label, p in (("bare paho subscriber (peer)", bare), ("edgeml MqttLander", lander))
    ]
    st = ex["stats"]
    checks = [
        [
            "lander / bare, received msg/s",
            f"{ratio:.3f}x",
            f"≥ {TARGET_RATIO:.2f}x",
            verdict(ratio, TARGET_RATIO),
        ],
        [
            "in the lake: lost / duplicated / ids never published",
            f"{ex['lost']:,} / {ex['duplicated']:,} / {ex['foreign_ids']:,} (published "
            f"{lander.published:,}, landed rows {ex['landed_rows']:,}, unique ids {ex['unique_ids']:,})",
            "0 / 0 / 0",
            "PASS" if lake_ok else "FAIL",
        ],
    ]
    lander_line = (
        f"lander stats: received {st.received:,}, duplicates dropped {st.duplicates:,}, "
        f"landed {st.landed:,}, quarantined {st.quarantined:,}, flushes {st.flushes}, parts {ex['parts']}; "
        f"stop() (last flush) took {lander.stop_seconds:.2f} s"
    )
    method = (
        f"Each phase: the simulator publisher (`publish_records`, paho, QoS 1, as fast as the broker "
        f"acknowledges, unique msg_ids) in its own process for {args.seconds:g} s, to a fresh mosquitto "
        "(persistence on, queues unbounded) on 127.0.0.1; the consumer in the benchmark process. Phases run "
        "one after the other, bare first, each on its own topic prefix: run at once on 2 cores, the "
        "consumers would share the CPUs and the lander's cost would slow the bare counter too, flattering "
        "the ratio; alone, each consumer's cost shows in its own figure (and in its publisher's rate, "
        "which shares the same 2 cores). 'received msg/s' = messages delivered to the consumer during the "
        "publishing window / window; 'all in after' = seconds after the window until the consumer had "
        "every message; CPU µs/msg = CPU used over the phase by the consumer's process (resp. the "
        "publisher's process, mosquitto) / messages; load 1-min = the machine's load average at "
        "the start and the end of the window (other jobs included)."
    )

    parts: list[str | Table] = [
        method,
        Table(headers, rows),
        report.checks(checks),
        lander_line + ".",
    ]
    if capacity:
        cap_bare, cap_lander = capacity
        cap_ratio = cap_lander.rate / cap_bare.rate
        cap_headers = ["consumer", "queued", "received", "seconds", "msg/s", "consumer CPU µs/msg"]
        cap_rows = [
            [
                label,
                f"{c.messages:,}",
                f"{c.received:,}",
                f"{c.seconds:.2f}",
                f"{c.rate:,.0f}",
                f"{c.cpu / max(c.received, 1) * 1e6:.1f}",
            ]
            for label, c in (("bare paho subscriber (peer)", cap_bare), ("edgeml MqttLander", cap_lander))
        ]
        lk = cap_lander.lake
        parts += [
            "### Capacity: draining a queued backlog",
            "Capacity (not the target): the consumer subscribes with its persistent session and disconnects; "
            f"{args.backlog:,} messages are published and queued by the broker; the consumer reconnects and "
            "the time until it has received them all is measured. No publisher runs meanwhile, so this is "
            "what the consumer itself can take on this machine.",
            Table(cap_headers, cap_rows),
            f"Capacity lander / bare: {cap_ratio:.3f}x (informational); in the lake: lost {lk['lost']:,}, "
            f"duplicated {lk['duplicated']:,}, ids never published {lk['foreign_ids']:,}.",
        ]
    if profile is not None:
        stages, text = profile
        print("\nthe lander's paths offline (no network), under cProfile:")
        print(trim_profile(text))
        parts += [
            "The lander's two paths offline (no network, `--profile`):",
            Table(["path", "seconds"], [[n, f"{s:.3f}"] for n, s in stages]),
        ]
    report.publish(parts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
