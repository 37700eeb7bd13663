"""Publish simulated readings to an MQTT broker, one JSON message per reading."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from edgeml.mqtt import connect_client, parse_broker

__all__ = ["publish_records"]


def publish_records(
    records: Iterable[dict[str, Any]],
    broker_url: str,
    *,
    topic: str = "plant/{machine_id}/telemetry",
    qos: int = 1,
    rate: float = 0.0,
    client_id: str = "edgeml-simulator",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Publish each record to ``topic`` (formatted with the record's fields); return the count.

    ``rate`` caps messages per second (0: as fast as the broker takes them). With QoS 1
    this returns only after the broker acknowledged every message.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    broker = parse_broker(broker_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)  # unbounded: the simulator must not drop readings
    client.reconnect_delay_set(min_delay=1, max_delay=5)
    connect_client(client, broker)
    client.loop_start()
    pending = []
    count = 0
    start = time.monotonic()
    try:
        for record in records:
            if rate > 0:
                delay = start + count / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            info = client.publish(topic.format(**record), json.dumps(record, separators=(",", ":")), qos=qos)
            if qos > 0:
                pending.append(info)
                if len(pending) >= 5000:  # bound memory: wait for the oldest acknowledgements
                    for item in pending[:4000]:
                        item.wait_for_publish()
                    del pending[:4000]
            count += 1
            if progress is not None and count % 1000 == 0:
                progress(count)
        for item in pending:
            item.wait_for_publish()
    finally:
        client.disconnect()
        client.loop_stop()
    return count
