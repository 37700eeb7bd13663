"""Land an MQTT stream in the lake as micro-batches, with no loss and no duplicates.

- **No loss.** Each message is appended to a local write-ahead segment before paho
  acknowledges it (paho acks QoS 1 after the callback returns). Segments are landed in
  the lake as Parquet and deleted only after the catalog records the parts. A crash
  leaves segments on disk; the next start lands them first. A persistent session
  (fixed client id, ``clean_session=False``) makes the broker queue messages while
  the lander is away, and paho reconnects by itself after a broker restart.
- **No duplicates.** Messages are de-duplicated by the payload's ``message_id`` field
  (a hash of the payload when there is none). The ids already landed are re-read from
  the source's most recent lake parts at start, so redeliveries after a restart are
  dropped too.
- **Micro-batches** flush when ``batch.max_rows`` or ``batch.max_seconds`` is reached,
  and on shutdown.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

from edgeml.errors import UserError
from edgeml.ingest.coerce import coerce_batch
from edgeml.ingest.lake import (
    read_parts,
    record_source_parts,
    source_parts,
    write_clean_parts,
    write_quarantine_part,
)
from edgeml.mqtt import connect_client, parse_broker
from edgeml.privacy.access import record_read
from edgeml.privacy.at_rest import require_encryption_at_rest
from edgeml.settings import Settings, read_secret
from edgeml.spec.models import MqttSource, Spec
from edgeml.store import ObjectStore, store_from_settings

__all__ = ["LandingStats", "MqttLander", "lander_for"]

logger = logging.getLogger(__name__)

#: seconds start() waits for the broker to acknowledge the subscription
SUBSCRIBE_WAIT_S = 10.0
_SEEN_CAPACITY = 2_000_000
_RECENT_ROWS = 500_000


@dataclass
class LandingStats:
    received: int = 0
    duplicates: int = 0
    landed: int = 0
    quarantined: int = 0
    flushes: int = 0
    connects: int = 0
    problems: dict[str, int] = field(default_factory=dict)


class MqttLander:
    """Subscribe to a spec's MQTT source and land what arrives. Use as a context manager."""

    def __init__(
        self,
        spec: Spec,
        source: MqttSource,
        settings: Settings,
        *,
        state_dir: Path | None = None,
        on_flush: Callable[[LandingStats], None] | None = None,
    ) -> None:
        self.spec, self.source, self.settings = spec, source, settings
        self.broker = parse_broker(source.broker)
        require_encryption_at_rest(spec, settings)  # before the store is opened: it may seal it
        self.store: ObjectStore = store_from_settings(settings)
        self.state_dir = state_dir or settings.home / "state" / "mqtt" / f"{spec.name}--{source.name}"
        self.stats = LandingStats()
        self._on_flush = on_flush
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._segment: IO[str] | None = None
        self._segment_rows = 0
        self._segment_started = 0.0
        self._current: Path | None = None
        self._stop = threading.Event()
        self._subscribed = threading.Event()  # the broker acknowledged the topics (SUBACK)
        self._flusher: threading.Thread | None = None
        self._client: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> MqttLander:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Land leftovers of a previous run, remember landed ids, connect and subscribe."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._land_segments(self._closed_segments())  # a previous run's crash leftovers
        self._remember_landed_ids()
        client_id = self.source.client_id or f"edgeml-{self.spec.name}-{self.source.name}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if self.source.username:
            password = (
                read_secret(self.source.password_env, purpose=f"source {self.source.name!r}")
                if self.source.password_env
                else None
            )
            client.username_pw_set(self.source.username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        connect_client(client, self.broker)  # fails fast, before anything is opened
        self._open_segment()  # messages flow only once the loop starts
        client.loop_start()
        # messages published before the first subscription reach nobody (the broker keeps the
        # session's messages only from then on): start returns once the topics are subscribed
        if not self._subscribed.wait(SUBSCRIBE_WAIT_S):
            logger.warning(
                "%s: the broker has not acknowledged the subscription after %.0f s; landing starts "
                "when it does",
                self.source.name,
                SUBSCRIBE_WAIT_S,
            )
        self._flusher = threading.Thread(target=self._flush_loop, name="edgeml-mqtt-flush", daemon=True)
        self._flusher.start()

    def stop(self) -> LandingStats:
        """Disconnect and land everything received (flush on shutdown)."""
        self._stop.set()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()
        with self._lock:
            if self._segment is not None:
                self._segment.close()
                self._segment = None
        return self.stats

    # -- receiving ------------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            return
        self.stats.connects += 1
        client.subscribe([(topic, self.source.qos) for topic in self.source.topics])

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
        if any(reason.is_failure for reason in reasons):
            logger.error("%s: the broker refused a subscription: %s", self.source.name, reasons)
            return
        self._subscribed.set()

    def _message_id(self, payload: bytes, record: Any) -> str:
        field_name = self.source.message_id
        if field_name and isinstance(record, dict) and record.get(field_name) is not None:
            return str(record[field_name])
        return hashlib.sha256(payload).hexdigest()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        payload: bytes = message.payload
        try:
            record = json.loads(payload)
        except ValueError:
            record = None
        msg_id = self._message_id(payload, record)
        line = (
            json.dumps(record)
            if isinstance(record, dict)
            else json.dumps({"__unparsable__": payload.decode("utf-8", "replace")})
        )
        with self._lock:
            self.stats.received += 1
            if msg_id in self._seen:
                self.stats.duplicates += 1
                return
            self._seen[msg_id] = None
            if len(self._seen) > _SEEN_CAPACITY:
                self._seen.popitem(last=False)
            assert self._segment is not None
            self._segment.write(line + "\n")  # before paho acks: the message is ours now
            if self._segment_rows == 0:
                self._segment_started = time.monotonic()
            self._segment_rows += 1
            if self._segment_rows >= self.source.batch.max_rows:
                self._rotate()  # a micro-batch never outgrows max_rows

    # -- landing --------------------------------------------------------------------------

    def _segment_path(self, number: int) -> Path:
        return self.state_dir / f"segment-{number:012d}.jsonl"

    def _closed_segments(self) -> list[Path]:
        return sorted(self.state_dir.glob("segment-*.jsonl"))

    def _open_segment(self) -> None:
        existing = self._closed_segments()
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        self._current = self._segment_path(number)
        # Line-buffered: every message reaches the OS before paho acknowledges it.
        self._segment = self._current.open("a", encoding="utf-8", buffering=1)
        self._segment_rows = 0

    def _rotate(self) -> None:
        """Close the open segment and start the next (the caller holds the lock)."""
        assert self._segment is not None
        self._segment.close()
        self._open_segment()

    def _pending(self) -> list[Path]:
        """Closed segments, oldest first: every segment file but the open one."""
        return [p for p in self._closed_segments() if self._segment is None or p != self._current]

    def _due(self) -> bool:
        with self._lock:
            rows = self._segment_rows
            age = time.monotonic() - self._segment_started if rows else 0.0
            closed = bool(self._pending())
        return closed or (rows > 0 and age >= self.source.batch.max_seconds)

    def _flush_loop(self) -> None:
        failures = 0
        while not self._stop.wait(0.05 if not failures else min(30.0, 2.0**failures)):
            if not self._due() and not failures:
                continue
            try:
                self.flush()
                failures = 0
            except Exception:  # the store is down: segments stay on disk, retry with backoff
                failures += 1
                logger.exception("landing a micro-batch failed (attempt %d); will retry", failures)

    def flush(self) -> None:
        """Close the current segment and land every closed segment in the lake."""
        with self._flush_lock:
            with self._lock:
                if self._segment is not None and self._segment_rows > 0:
                    self._rotate()
                pending = self._pending()
            self._land_segments(pending)

    def _land_segments(self, segments: list[Path]) -> None:
        for path in segments:
            lines = path.read_text(encoding="utf-8").splitlines()
            if lines:
                self._land(lines)
            path.unlink()  # only after the catalog recorded the parts

    def _land(self, lines: list[str]) -> None:
        records = [json.loads(line) for line in lines]
        good = [r for r in records if "__unparsable__" not in r]
        bad = [r["__unparsable__"] for r in records if "__unparsable__" in r]
        result = coerce_batch(pd.DataFrame.from_records(good), self.spec.schema_, source=self.source.name)
        quarantine = result.quarantine
        if bad:
            import pyarrow as pa

            extra = pa.table(
                {
                    "source": [self.source.name] * len(bad),
                    "reason": ["payload is not a JSON object"] * len(bad),
                    "row": bad,
                },
                schema=quarantine.schema,
            )
            quarantine = pa.concat_tables([quarantine, extra])
            result.problems["(payload): not a JSON object"] += len(bad)
        parts = write_clean_parts(
            self.store, self.spec.name, self.source.name, result.clean, self.spec.schema_.timestamp
        )
        write_quarantine_part(self.store, self.spec.name, self.source.name, quarantine)
        record_source_parts(self.store, self.spec.name, self.source.name, parts, append=True)
        self.stats.landed += result.clean.num_rows
        self.stats.quarantined += quarantine.num_rows
        self.stats.flushes += 1
        for problem, count in result.problems.items():
            self.stats.problems[problem] = self.stats.problems.get(problem, 0) + count
        if self._on_flush is not None:
            self._on_flush(self.stats)

    def _remember_landed_ids(self) -> None:
        """Load message ids of the most recent parts, so redeliveries after a restart are dropped."""
        field_name = self.source.message_id
        if not field_name or field_name not in self.spec.schema_.columns:
            return
        recent, rows = [], 0
        for part in reversed(source_parts(self.store, self.spec.name, self.source.name)):
            recent.append(part)
            rows += part.rows
            if rows >= _RECENT_ROWS:
                break
        if recent:
            record_read(self.store, self.spec, "lake", None, len(recent), source=self.source.name)
            table = read_parts(self.store, recent[::-1], self.spec.schema_)
            for value in table[field_name].to_pylist():
                if value is not None:
                    self._seen[str(value)] = None


def lander_for(spec: Spec, settings: Settings, source_name: str | None) -> MqttLander:
    """The lander of the spec's MQTT source (the only one, or the one named)."""
    streams = [s for s in spec.sources if isinstance(s, MqttSource)]
    if source_name is not None:
        streams = [s for s in streams if s.name == source_name]
    if len(streams) != 1:
        names = ", ".join(s.name for s in spec.sources if isinstance(s, MqttSource)) or "none"
        raise UserError(f"name one MQTT source of spec {spec.name!r} with --source (MQTT sources: {names})")
    return MqttLander(spec, streams[0], settings)
