"""MQTT plumbing shared by the stream lander, the simulator and (later) the edge agent."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgeml.errors import UserError

__all__ = ["BrokerAddress", "connect_client", "parse_broker"]


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker(url: str) -> BrokerAddress:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise UserError(f"broker {url!r} must look like mqtt://host:1883 or mqtts://host:8883")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, parts.port or (8883 if tls else 1883), tls)


def connect_client(client: object, broker: BrokerAddress, *, keepalive: int = 30) -> None:
    """Connect a paho client, turning socket errors into a user error naming the broker."""
    import paho.mqtt.client as mqtt

    assert isinstance(client, mqtt.Client)
    if broker.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    try:
        client.connect(broker.host, broker.port, keepalive=keepalive)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot reach MQTT broker {broker}: {exc.strerror if isinstance(exc, OSError) else exc}",
            hint="check the broker URL in the spec and that the broker is running",
        ) from exc
