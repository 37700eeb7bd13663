"""MQTT mode: sensor readings in, predictions out.

Each message on ``topic_in`` is one JSON reading (raw schema columns, the entity and the
timestamp among them). The window features the model takes are computed online per
entity with the data layer's own :class:`~edgeml.features.window.OnlineWindows` (the
same values the batch pipeline computed for training); the reading plus those values is
validated like an HTTP record, predicted, and published to ``topic_out`` with QoS 1.
A reading the model cannot take is counted and logged, never fatal.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edgeml.agent.config import MqttConfig
from edgeml.agent.inputs import InputError, Schema
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.supervise import Supervisor
from edgeml.features.window import OnlineWindows
from edgeml.mqtt import connect_client, parse_broker
from edgeml.observability import track_inference

__all__ = ["StreamServing"]

log = logging.getLogger("edgeml.agent")


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    raise ValueError(f"timestamp {value!r} is neither epoch seconds nor ISO-8601")


def _first(array: Any) -> Any:
    """The one row's value (or row of values) as plain JSON: a string label stays a string."""
    value = np.asarray(array)[0]
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value.tolist()
    return value.item() if isinstance(value, np.generic) else value


class StreamServing:
    """Subscribes, predicts, publishes; ``start``/``stop`` around paho's network thread."""

    def __init__(self, config: MqttConfig, holder: ModelHolder, device_id: str) -> None:
        self.config = config
        self.holder = holder
        self.device_id = device_id
        self._model: LoadedModel | None = None
        self._schema: Schema | None = None
        self._windows: OnlineWindows | None = None
        self._client: Any = None
        self.published = 0
        self.supervisor = Supervisor("mqtt")
        self._stop = threading.Event()

    def _prepare(self, model: LoadedModel) -> tuple[Schema, OnlineWindows | None]:
        if model is not self._model:
            windows = model.manifest.windows
            same = (
                self._windows is not None
                and windows is not None
                and self._windows.features == windows.features
            )
            if not same:  # keep window state across a swap when the definitions did not change
                self._windows = OnlineWindows(windows.features) if windows else None
            self._schema = Schema(model.manifest.inputs, max_rows=1)
            self._model = model
        assert self._schema is not None
        return self._schema, self._windows

    def handle(self, payload: bytes) -> dict[str, Any] | None:
        """One reading to one prediction message (None when the reading is refused)."""
        model = self.holder.current
        if model is None:
            track_inference("", "", "mqtt", "not_ready")
            return None
        schema, windows = self._prepare(model)
        start = time.perf_counter()
        try:
            reading = json.loads(payload)
            if not isinstance(reading, dict):
                raise InputError("message", "a reading must be a JSON object")
            entity, stamp = None, None
            spec = model.manifest.windows
            if spec is not None and windows is not None:
                entity = reading.get(spec.entity) if spec.entity else None
                if spec.timestamp not in reading:
                    raise InputError(spec.timestamp, "the reading has no timestamp")
                stamp = _epoch_seconds(reading[spec.timestamp])
                values = {f.column: reading.get(f.column) for f in windows.features}
                reading = {**reading, **windows.update(entity, stamp, values)}
            names = {f.name for f in model.manifest.inputs}
            batch = schema.parse_records({k: v for k, v in reading.items() if k in names})
        except (InputError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            track_inference(model.name, model.version, "mqtt", "bad_input")
            self.holder.observe_error(model, "bad-input")
            log.warning("reading refused: %s", exc)
            return None
        try:
            outputs = model.runtime.run(batch.feeds)
        except Exception:  # the runtime's error types differ per runtime
            track_inference(model.name, model.version, "mqtt", "error")
            self.holder.observe_error(model, "runtime")
            log.exception("model %s v%s failed on a reading", model.name, model.version)
            return None
        self.holder.observe(model, batch.columns, outputs, time.perf_counter() - start)
        track_inference(model.name, model.version, "mqtt", "ok")
        message: dict[str, Any] = {
            "device_id": self.device_id,
            "model": model.name,
            "version": model.version,
            "entity": entity,
            "ts": stamp,
        }
        labels = model.manifest.outputs.labels
        if "label" in outputs:
            message["label"] = _first(outputs["label"])
        if "probabilities" in outputs and labels:
            row = np.asarray(outputs["probabilities"])[0]
            message["probabilities"] = {lb: float(p) for lb, p in zip(labels, row, strict=True)}
        if "label" not in outputs and outputs:
            # the first output is the answer (value, cluster, anomaly decision); /predict gives them all
            message["prediction"] = _first(next(iter(outputs.values())))
            message["outputs"] = {name: _first(array) for name, array in outputs.items()}
        return message

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        # supervised: an exception escaping a paho callback would end its network loop
        self.supervisor.call(lambda: self._answer(client, msg.payload))

    def _answer(self, client: Any, payload: bytes) -> None:
        message = self.handle(payload)
        if message is not None:
            client.publish(self.config.topic_out, json.dumps(message), qos=1)
            self.published += 1

    def _network(self) -> float:
        """paho's network loop (it reconnects by itself); returns once stop() disconnects."""
        self._client.loop_forever(retry_first_connection=True)
        return 1.0

    def start(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgeml-agent-{self.device_id}")
        client.on_message = self._on_message
        client.on_connect = lambda c, *_: c.subscribe(self.config.topic_in, qos=1)
        connect_client(client, parse_broker(self.config.broker))
        self._client = client
        self._stop.clear()
        self.supervisor.start(self._network, self._stop)  # a failing loop is re-entered after a backoff

    def stop(self) -> None:
        if self._client is not None:
            self._stop.set()
            self._client.disconnect()
            self.supervisor.join(timeout=10)
            self._client = None
