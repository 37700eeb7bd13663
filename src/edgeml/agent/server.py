"""The agent's HTTP API: Open Inference Protocol v2 REST and ``POST /predict``, on plain Starlette.

Routes::

    GET  /v2/health/live                      200 while the process runs
    GET  /v2/health/ready                     200 once a model is loaded, 503 before
    GET  /v2                                  server metadata
    GET  /v2/models/{name}[/versions/{v}]     model metadata (inputs, outputs)
    GET  /v2/models/{name}[/versions/{v}]/ready   200 when that model (and version) is served
    POST /v2/models/{name}[/versions/{v}]/infer   OIP v2 inference, JSON or binary tensor data
    POST /predict                             JSON records -> {"model", "version", "id", "predictions"}
    GET  /metrics                             Prometheus text

Answers to bad requests are JSON ``{"error": message, "field": name}`` (for OIP v2 the message
names the field itself, as OIP clients show only ``error``): 400 for a body that is not JSON or
whose binary tensor data does not add up, 404 for a model or version not served here, 413 for
a body over the limit, 422 for input the schema refuses. A model that fails at run time is a
500, counted. Each request reads ``holder.current`` once and is answered wholly by that model,
so a swap never mixes two versions.

:class:`Serving` holds the protocol logic with no web framework in it (bytes in, status and
bytes out), so Ray Serve and the gRPC service (:mod:`edgeml.agent.grpc`) answer exactly as the
agent's REST does: one decode per wire form (:mod:`edgeml.agent.oip`), then the same validation,
model run, metrics and telemetry; :func:`create_app` is the
thin Starlette layer over it that adds body limits. ``edgeml serve`` runs the same app in
each Ray Serve replica, its inference requests going through :meth:`Serving.answer_batch`.

Answered requests are tallied and counted into the Prometheus metrics in bulk
(:func:`flush_metrics`: every 256 answers of a version and protocol, and before ``/metrics``
renders, so a scrape sees every answer given before it); refusals and failures are counted as
they happen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgeml.agent import oip
from edgeml.agent.inputs import Batch, InputError, Schema
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.predlog import PredictionLog, new_prediction_id
from edgeml.errors import TooLarge
from edgeml.observability import (
    TRACING,
    render_metrics,
    request_span,
    track_inference,
    track_inference_answers,
)

__all__ = ["Answer", "Call", "Serving", "create_app", "flush_metrics"]

log = logging.getLogger("edgeml.agent")

JSON = "application/json"
#: bodies above this are parsed and run on a worker thread, so a big batch does not stall the
#: event loop; single rows stay on the loop, where they are fastest
_INLINE_BYTES = 16 << 10
#: answered requests held before they are counted into Prometheus in one go (see flush_metrics)
_TALLY_EVERY = 256
_clock = time.perf_counter  # a global: one lookup less on every request
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
#: outputs of a REST answer that go as binary data: none (see oip.binary_outputs)
_ALL_JSON: tuple[bool, dict[str, bool]] = (False, {})
_INPUT_DATATYPES = {"float64": "FP64", "float32": "FP32", "string": "BYTES"}


class Answer(NamedTuple):
    """An HTTP status and its body: JSON, or for gRPC inference a serialized ``ModelInferResponse``.

    ``header_length`` is the length of the body's JSON when binary tensor data follows it (the
    ``Inference-Header-Content-Length`` header).
    """

    status: int
    body: bytes
    header_length: int | None = None


class Call(NamedTuple):
    """One inference request, its body unread by the protocol logic yet (for batching)."""

    protocol: str  # "predict" or "v2"
    body: bytes
    name: str | None = None  # v2: the model and version the route names
    version: str | None = None
    header_length: str | None = None  # v2: the Inference-Header-Content-Length header


def _error(status: int, message: str, field: str | None = None) -> Answer:
    return Answer(status, orjson.dumps({"error": message, "field": field} if field else {"error": message}))


class _Metrics:
    """One model version's answered requests not counted into Prometheus yet.

    A tally holds one protocol's answered requests as ``(rows, seconds)``: answering appends to
    it (a list append, atomic, instead of four Prometheus updates each with its own lock) and
    :func:`flush_metrics` counts it in bulk.
    """

    __slots__ = ("model", "tallies", "version")

    def __init__(self, model: str, version: str) -> None:
        self.model, self.version = model, version
        self.tallies: dict[str, list[tuple[int, float]]] = {"predict": [], "v2": [], "grpc": []}

    def flush(self) -> None:
        """Count the tallied requests: requests by protocol, rows, latencies (under _tally_lock)."""
        for protocol, tally in self.tallies.items():
            taken = len(tally)
            if not taken:
                continue
            rows, seconds = zip(*tally[:taken], strict=True)
            del tally[:taken]  # answers appended meanwhile stay for the next flush
            track_inference_answers(self.model, self.version, protocol, sum(rows), seconds)


#: one per model and version answered in this process, as Prometheus keeps their series
_metrics: dict[tuple[str, str], _Metrics] = {}
_tally_lock = threading.Lock()


def _metrics_of(model: str, version: str) -> _Metrics:
    with _tally_lock:
        metrics = _metrics.get((model, version))
        if metrics is None:
            metrics = _metrics[model, version] = _Metrics(model, version)
        return metrics


def flush_metrics() -> None:
    """Count the answered requests not counted yet into the Prometheus metrics.

    Answers are tallied (see :class:`_Metrics`) and counted in bulk every ``_TALLY_EVERY``
    answers of a version and protocol, and before ``/metrics`` renders, so a scrape always
    sees every request answered before it. Refusals and failures are counted at once, as
    they happen.
    """
    with _tally_lock:
        for metrics in _metrics.values():
            metrics.flush()


class _Served:
    """What a request needs of one model, built on its first request and kept while it is served."""

    def __init__(self, model: LoadedModel, max_rows: int, predlog: PredictionLog | None = None) -> None:
        self.model = model
        self.record = None if predlog is None else predlog.record
        manifest = model.manifest
        self.schema = Schema(manifest.inputs, max_rows=max_rows)
        self.parse = self.schema.parse_records  # the hot path's steps, bound once
        self.run = model.runtime.run
        self.release = self.schema.release
        self.version = str(model.version)
        labels = manifest.outputs.labels
        self.labels = labels if labels else None
        self._n_labels = len(labels) if labels else -1
        #: the JSON of a ``/predict`` answer
        write = _predict_writer(model.name, model.version, labels, self._predict_answer)
        self.predict_answer: Writer = lambda batch, outputs: write(
            batch, outputs, self.identify(batch, outputs)
        )
        self.tallies = _metrics_of(model.name, self.version).tallies
        self.predict_tally = self.tallies["predict"]
        self._metadata: bytes | None = None
        #: an OIP v2 REST answer's JSON up to its id's value
        self._v2_head = (
            orjson.dumps({"model_name": model.name, "model_version": self.version})[:-1] + b',"id":'
        )
        #: a classifier's one-row OIP v2 REST answers, when its outputs are a label and probabilities
        self._classifier_answers = (
            oip.ClassifierAnswers(self._v2_head, labels)
            if labels
            and len(set(labels)) == len(labels)
            and model.runtime.output_names == ["label", "probabilities"]
            else None
        )

    def count(self, protocol: str, outcome: str) -> None:
        track_inference(self.model.name, self.version, protocol, outcome)

    def metadata(self) -> bytes:
        """OIP v2 model metadata; output types come from running one golden sample."""
        if self._metadata is None:
            model, manifest = self.model, self.model.manifest
            outputs: list[dict[str, Any]] = [{"name": n} for n in model.runtime.output_names]
            if manifest.golden.inputs:
                sample = model.runtime.predict_records(manifest.golden.inputs[:1])
                outputs = [
                    {"name": n, "datatype": oip.datatype(a), "shape": [-1, *a.shape[1:]]}
                    for n, a in sample.items()
                ]
            self._metadata = orjson.dumps(
                {
                    "name": model.name,
                    "versions": [self.version],
                    "platform": "onnxruntime_onnx" if manifest.runtime == "onnxruntime" else "openvino_ir",
                    "inputs": [
                        {"name": f.name, "datatype": _INPUT_DATATYPES[f.dtype], "shape": [-1, 1]}
                        for f in manifest.inputs
                    ],
                    "outputs": outputs,
                }
            )
        return self._metadata

    def identify(self, batch: Batch, outputs: Mapping[str, np.ndarray]) -> str:
        """The answer's id (the client's, else a new one), its rows logged for labels to join."""
        answer_id = batch.request_id or new_prediction_id()
        if self.record is not None:
            self.record(answer_id, self.model, batch.columns, outputs, batch.rows)
        return answer_id

    def _predict_answer(self, batch: Batch, outputs: Mapping[str, np.ndarray], answer_id: str) -> bytes:
        """The JSON of a ``/predict`` answer, any rows and outputs."""
        answer: dict[str, Any] = {"model": self.model.name, "version": self.model.version, "id": answer_id}
        answer["predictions"] = self.predictions(batch, outputs)
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)

    def predictions(self, batch: Batch, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        """One entry per row: label and probabilities per label for a classifier, else each output."""
        labels = self.labels
        proba = outputs.get("probabilities")
        predicted = outputs.get("label")
        if (
            labels is not None
            and proba is not None
            and predicted is not None
            and proba.shape[-1] == self._n_labels
        ):
            # Probabilities stay numpy scalars: orjson writes float32 at its own precision. The
            # zips are not strict: the shapes are checked, and a strict zip asks a numpy row for
            # one item past its end, an IndexError per row that costs more than the rest.
            return [
                {"label": str(label), "probabilities": dict(zip(labels, row, strict=False))}
                for label, row in zip(predicted.ravel().tolist(), proba.reshape(batch.rows, -1), strict=True)
            ]
        columns = {name: _per_row(array) for name, array in outputs.items()}
        return [{name: values[i] for name, values in columns.items()} for i in range(batch.rows)]

    def v2_answer(
        self, batch: Batch, outputs: Mapping[str, np.ndarray], binary: tuple[bool, Mapping[str, bool]]
    ) -> tuple[bytes, int | None]:
        """An OIP v2 REST inference answer: its body, and its JSON's length if binary data follows."""
        answer_id = self.identify(batch, outputs)
        if batch.outputs is None and self._classifier_answers is not None:
            written = self._classifier_answers(answer_id, outputs, binary)
            if written is not None:
                return written
        head = self._v2_head + orjson.dumps(answer_id)
        names = batch.outputs if batch.outputs is not None else outputs.keys()
        return oip.rest_answer(head, ((name, outputs[name]) for name in names), binary)

    def grpc_answer(self, batch: Batch, outputs: Mapping[str, np.ndarray]) -> bytes:
        """An OIP v2 gRPC inference answer: a serialized ``ModelInferResponse``."""
        names = batch.outputs if batch.outputs is not None else outputs.keys()
        return oip.grpc_answer(
            self.model.name,
            self.version,
            self.identify(batch, outputs),
            ((name, outputs[name]) for name in names),
        )


Writer = Callable[[Batch, Mapping[str, np.ndarray]], bytes]
#: a ``/predict`` writer: also given the answer's id
IdWriter = Callable[[Batch, Mapping[str, np.ndarray], str], bytes]


def _predict_writer(name: str, version: int, labels: Sequence[str] | None, general: IdWriter) -> IdWriter:
    """``general``, with a shortcut for a classifier's one-row answers giving the same bytes.

    The shortcut fills a template made once with the label's JSON and the probabilities as
    orjson writes their array (it writes numpy scalars and arrays alike), so no dict is built
    per request. Outputs it does not fit (not one row: one label, and one float per label in a
    contiguous array) go to ``general``. No shortcut for a model without labels, or with a
    label twice (the general answer's dict keeps one).
    """
    if not labels or len(set(labels)) != len(labels):
        return general
    shape = (1, len(labels))
    head = orjson.dumps({"model": name, "version": version})[:-1].replace(b"%", b"%%")
    keys = [orjson.dumps(label).replace(b"%", b"%%") + b":%b" for label in labels]
    # "%" in the model's name or a label is escaped: the only placeholders are the %b put here
    template = head + b',"id":%b,"predictions":[{"label":%b,"probabilities":{' + b",".join(keys) + b"}}]}"
    label_json = {label: orjson.dumps(label) for label in labels}
    dumps, numpy = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY

    def write(batch: Batch, outputs: Mapping[str, np.ndarray], answer_id: str) -> bytes:
        try:
            proba = outputs["probabilities"]
            predicted = outputs["label"]
        except KeyError:
            return general(batch, outputs, answer_id)
        if batch.rows != 1 or proba.shape != shape or predicted.size != 1:
            return general(batch, outputs, answer_id)
        dtype = proba.dtype
        if dtype is not _F32 and dtype is not _F64:  # identity: builtin dtypes are singletons
            return general(batch, outputs, answer_id)
        label = str(predicted.item(0))
        try:
            values = dumps(proba, option=numpy)[2:-2].split(b",")  # [[p0,p1,...]]
        except orjson.JSONEncodeError:  # orjson takes C-contiguous arrays only
            return general(batch, outputs, answer_id)
        return template % (dumps(answer_id), label_json.get(label) or dumps(label), *values)

    return write


def _run_joint(model: LoadedModel, batches: Sequence[Batch]) -> dict[str, list[np.ndarray]] | None:
    """Each output split back per batch, after one run over all their rows; None if that run fails."""
    feeds = {name: np.concatenate([b.feeds[name] for b in batches]) for name in batches[0].feeds}
    rows = sum(b.rows for b in batches)
    try:
        outputs = model.runtime.run(feeds)
    except Exception:  # the caller runs the batches alone, to answer each with its own outcome
        return None
    if any(array.shape[:1] != (rows,) for array in outputs.values()):
        return None  # an output that is not one row per input row cannot be split back
    cuts = np.cumsum([b.rows for b in batches[:-1]])
    return {name: np.split(array, cuts) for name, array in outputs.items()}


def _per_row(array: np.ndarray) -> list[Any]:
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    rows: list[Any] = array.tolist()
    return rows


class Serving:
    """The protocol logic over a :class:`ModelHolder`, framework-independent: bodies in, answers out."""

    def __init__(
        self, holder: ModelHolder, *, max_rows: int = 1024, prediction_log: PredictionLog | None = None
    ) -> None:
        self.holder = holder
        self.prediction_log = prediction_log
        self.max_rows = max_rows
        self._served: _Served | None = None

    def _state(self, model: LoadedModel) -> _Served:
        """The state of the model a request reads from the holder.

        Only the latest model's is kept: a swapped-out model must not stay in memory because of
        it (a request still running on it when it is swapped out gets a state of its own).
        """
        served = self._served
        if served is None or served.model is not model:
            served = _Served(model, self.max_rows, self.prediction_log)
            if model is self.holder.current:
                self._served = served
        return served

    # --- inference -------------------------------------------------------------------------

    def predict(self, body: bytes | None = None, *, data: Any = None) -> Answer:
        """``POST /predict``: JSON records in, one prediction per row out.

        ``body`` is the raw JSON; a caller that holds it decoded already passes ``data`` instead.
        """
        model = self.holder.current
        if model is None:
            return self._not_ready("predict")
        served = self._served
        if served is None or served.model is not model:
            served = self._state(model)
        try:
            if body is not None:
                data = oip.decode_json(body)
            start = _clock()
            batch = served.parse(data)
        except InputError as exc:
            return self._refuse(served, "predict", exc)
        try:
            outputs = served.run(batch.feeds)
        except Exception as exc:  # the runtime's own error types differ per runtime and version
            return self._failed(served, "predict", batch, exc)
        finally:
            served.release(batch)  # the feeds' buffers serve the next request
        payload = served.predict_answer(batch, outputs)
        # what _reply does, inline: one call less on the path a single row takes
        seconds = _clock() - start  # validation, the model and the answer's JSON
        self.holder.observe(model, batch.columns, outputs, seconds)
        tally = served.predict_tally
        tally.append((batch.rows, seconds))
        if len(tally) >= _TALLY_EVERY:
            flush_metrics()
        return Answer(200, payload, None)

    def infer(
        self,
        name: str,
        version: str | None,
        body: bytes | None = None,
        *,
        data: Any = None,
        header_length: str | None = None,
    ) -> Answer:
        """OIP v2 REST ``infer`` on model ``name`` (and ``version``, when the route names one).

        ``body`` is the raw body (JSON, then binary tensor data when ``header_length``, the
        ``Inference-Header-Content-Length`` header, is given); a caller that holds the request
        decoded already passes ``data`` instead.
        """
        model = self.holder.current
        if model is None:
            return self._not_ready("v2")
        served = self._served
        if served is None or served.model is not model:
            served = self._state(model)
        if name != model.name or (version is not None and version != served.version):
            missing = self._not_served_here(served, "v2", name, version)
            if missing is not None:
                return missing
        try:
            if body is not None:
                data = oip.decode_rest(body, header_length)
            start = _clock()
            batch, binary = self._parse_v2(served, data)
        except InputError as exc:
            return self._refuse(served, "v2", exc)
        # what _run does, inline: one call less on the path a single row takes
        try:
            outputs = served.run(batch.feeds)
        except Exception as exc:  # the runtime's own error types differ per runtime and version
            return self._failed(served, "v2", batch, exc)
        finally:
            served.release(batch)
        payload, head = served.v2_answer(batch, outputs, binary)
        return self._reply(served, "v2", batch, outputs, payload, start, head)

    def infer_grpc(self, request: Any) -> Answer:
        """OIP v2 gRPC ``ModelInfer`` of a ``ModelInferRequest``: the REST path's checks and answers.

        A 200 answer's body is the serialized ``ModelInferResponse``; any other, the JSON error
        the REST path would give (:mod:`edgeml.agent.grpc` maps its status to a gRPC code).
        """
        model = self.holder.current
        if model is None:
            return self._not_ready("grpc")
        served = self._state(model)
        missing = self._not_served_here(served, "grpc", request.model_name, request.model_version or None)
        if missing is not None:
            return missing
        try:
            data = oip.grpc_request(request)
            start = _clock()
            batch = self._parse(served, "v2", data)
        except InputError as exc:
            return self._refuse(served, "grpc", exc)
        outputs = self._run(served, "grpc", batch)
        if isinstance(outputs, Answer):
            return outputs
        return self._reply(served, "grpc", batch, outputs, served.grpc_answer(batch, outputs), start)

    def answer(self, call: Call) -> Answer:
        """One request, as :meth:`predict` or :meth:`infer` answers it."""
        if call.protocol == "v2":
            return self.infer(call.name or "", call.version, call.body, header_length=call.header_length)
        return self.predict(call.body)

    def answer_batch(self, calls: Sequence[Call]) -> list[Answer]:
        """Answers to several requests whose rows go through the model in one run (dynamic batching).

        The current model is read once, so every answer of a batch comes from the same version.
        Each request is validated on its own (a bad one gets its own 4xx); if the joint run
        fails, the requests are run one by one, so that only those the model fails on get a 500.
        """
        model = self.holder.current
        if model is None:
            return [self._not_ready(call.protocol) for call in calls]
        served = self._state(model)
        answers: list[Answer | None] = [None] * len(calls)
        parsed: list[tuple[int, Batch, float, tuple[bool, dict[str, bool]]]] = []
        for i, call in enumerate(calls):
            if call.protocol == "v2":
                answers[i] = self._not_served_here(served, "v2", call.name or "", call.version)
                if answers[i] is not None:
                    continue
            try:
                if call.protocol == "v2":
                    data = oip.decode_rest(call.body, call.header_length)
                    start = _clock()
                    batch, binary = self._parse_v2(served, data)
                else:
                    data = oip.decode_json(call.body)
                    start = _clock()
                    batch, binary = served.parse(data), _ALL_JSON
                parsed.append((i, batch, start, binary))
            except InputError as exc:
                answers[i] = self._refuse(served, call.protocol, exc)
        joint = _run_joint(model, [batch for _, batch, _, _ in parsed]) if len(parsed) > 1 else None
        for n, (i, batch, start, binary) in enumerate(parsed):
            protocol = calls[i].protocol
            if joint is not None:
                outputs = {name: parts[n] for name, parts in joint.items()}
            else:
                try:
                    outputs = served.run(batch.feeds)
                except Exception as exc:  # the runtime's own error types differ per runtime and version
                    answers[i] = self._failed(served, protocol, batch, exc)
                    continue
            if protocol == "v2":
                payload, head = served.v2_answer(batch, outputs, binary)
            else:
                payload, head = served.predict_answer(batch, outputs), None
            answers[i] = self._reply(served, protocol, batch, outputs, payload, start, head)
        for _, batch, _, _ in parsed:
            served.release(batch)
        assert all(answer is not None for answer in answers)
        return answers  # type: ignore[return-value]

    def too_large(self, protocol: str, limit: int) -> Answer:
        """A body over ``limit`` bytes: counted, and answered 413 without reading the rest."""
        model = self.holder.current
        if model is not None:
            self._state(model).count(protocol, "too_large")
        else:
            track_inference("", "", protocol, "too_large")
        self.holder.observe_error(model, "too-large")
        return _error(413, f"the body is larger than this server takes ({limit:,} bytes)", "body")

    def bad_request(self, protocol: str, error: InputError) -> Answer:
        """A request refused before its body was read (e.g. a malformed Content-Length)."""
        model = self.holder.current
        if model is not None:
            self._state(model).count(protocol, "bad_input")
        self.holder.observe_error(model, "bad-input")
        return _error(error.status, error.detail, error.field)

    def _not_ready(self, protocol: str) -> Answer:
        track_inference("", "", protocol, "not_ready")
        self.holder.observe_error(None, "not-ready")
        return _error(503, "no model is loaded yet")

    def _not_served_here(
        self, served: _Served, protocol: str, name: str, version: str | None
    ) -> Answer | None:
        """A 404 (counted) when the request names another model or version, else None."""
        missing = self._wrong_model(served, name, version)
        if missing is not None:
            served.count(protocol, "bad_input")
            self.holder.observe_error(served.model, "bad-input")
        return missing

    def _parse(self, served: _Served, protocol: str, data: Any) -> Batch:
        """The request's rows, validated; raises :class:`InputError`."""
        if protocol != "v2":
            return served.schema.parse_records(data)
        batch = served.schema.parse_v2(data)
        if batch.outputs is not None:
            names = served.model.runtime.output_names
            unknown = [n for n in batch.outputs if n not in names]
            if unknown:
                raise InputError("outputs", f"unknown output {unknown[0]!r} (the model gives {names})")
        return batch

    def _parse_v2(self, served: _Served, data: Any) -> tuple[Batch, tuple[bool, dict[str, bool]]]:
        """A REST request's rows, validated, and which outputs it wants as binary data."""
        batch = self._parse(served, "v2", data)
        try:
            return batch, oip.binary_outputs(data)
        except InputError:
            served.release(batch)
            raise

    def _run(self, served: _Served, protocol: str, batch: Batch) -> Mapping[str, np.ndarray] | Answer:
        """The model's outputs on a batch, or the 500 answer when it fails; the batch is released."""
        try:
            return served.run(batch.feeds)
        except Exception as exc:  # the runtime's own error types differ per runtime and version
            return self._failed(served, protocol, batch, exc)
        finally:
            served.release(batch)

    def _refuse(self, served: _Served, protocol: str, exc: InputError) -> Answer:
        served.count(protocol, "bad_input")
        self.holder.observe_error(served.model, "bad-input")
        # OIP clients show only "error": it names the field itself there
        return _error(exc.status, exc.detail if protocol == "predict" else str(exc), exc.field)

    def _failed(self, served: _Served, protocol: str, batch: Batch, exc: Exception) -> Answer:
        model = served.model
        log.error("model %s v%s failed on %d rows", model.name, model.version, batch.rows, exc_info=exc)
        served.count(protocol, "error")
        self.holder.observe_error(model, "runtime")
        return _error(500, f"the model failed: {exc}")

    def _reply(
        self,
        served: _Served,
        protocol: str,
        batch: Batch,
        outputs: Mapping[str, np.ndarray],
        payload: bytes,
        start: float,
        header_length: int | None = None,
    ) -> Answer:
        """The answer to a request the model ran on, once its observers and metrics are told."""
        seconds = _clock() - start  # validation, the model and the answer's body
        self.holder.observe(served.model, batch.columns, outputs, seconds)
        tally = served.tallies[protocol]
        tally.append((batch.rows, seconds))
        if len(tally) >= _TALLY_EVERY:
            flush_metrics()
        return Answer(200, payload, header_length)

    # --- metadata and health ------------------------------------------------------------

    def _wrong_model(self, served: _Served, name: str, version: str | None) -> Answer | None:
        if name != served.model.name:
            return _error(
                404, f"model {name[:100]!r} is not served here (this device serves {served.model.name!r})"
            )
        if version is not None and version != served.version:
            return _error(
                404, f"version {version[:20]!r} of {name!r} is not served (serving {served.version})"
            )
        return None

    def model_metadata(self, name: str, version: str | None = None) -> Answer:
        model = self.holder.current
        if model is None:
            return _error(503, "no model is loaded yet")
        served = self._state(model)
        return self._wrong_model(served, name, version) or Answer(200, served.metadata())

    def model_ready(self, name: str, version: str | None = None) -> Answer:
        model = self.holder.current
        if model is None:
            return _error(503, "no model is loaded yet")
        return self._wrong_model(self._state(model), name, version) or Answer(
            200, orjson.dumps({"name": name, "ready": True})
        )

    def ready(self) -> Answer:
        if self.holder.current is None:
            return Answer(503, b'{"ready":false}')
        return Answer(200, b'{"ready":true}')

    @staticmethod
    def server_metadata() -> Answer:
        from edgeml import __version__

        return Answer(
            200, orjson.dumps({"name": "edgeml", "version": __version__, "extensions": list(oip.EXTENSIONS)})
        )


# --- Starlette ------------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``limit`` (by header, or while streaming)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InputError("Content-Length", f"{length[:40]!r} is not a byte count", 400)
        if int(length) > limit:
            raise TooLarge(f"body over {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():  # chunked bodies have no length up front
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _response(answer: Answer) -> Response:
    if answer.header_length is None:
        return Response(answer.body, answer.status, media_type=JSON)
    # JSON, then binary tensor data (Triton answers binary outputs with this media type)
    headers = {"Inference-Header-Content-Length": str(answer.header_length)}
    return Response(answer.body, answer.status, headers=headers, media_type="application/octet-stream")


#: the route template a traced request names, by protocol
_ROUTES = {"predict": "/predict", "v2": "/v2/models/{name}/infer"}


def create_app(
    holder: ModelHolder,
    *,
    max_body_bytes: int = 1 << 20,
    max_rows: int = 1024,
    batch: Callable[[Call], Awaitable[Answer]] | None = None,
    metrics_text: Callable[[], bytes] = render_metrics,
    prediction_log: PredictionLog | None = None,
) -> Starlette:
    """The agent's Starlette app over ``holder`` (see the module docstring for the routes).

    ``batch``, when given, answers the inference requests instead of :class:`Serving` alone
    (Ray Serve passes its dynamic batcher); ``metrics_text`` renders ``/metrics``.
    """
    serving = Serving(holder, max_rows=max_rows, prediction_log=prediction_log)

    async def run(
        request: Request, protocol: str, name: str | None = None, version: str | None = None
    ) -> Response:
        if TRACING.provider is None:  # the one check tracing costs a request while it is off
            return await answer(request, protocol, name, version)
        with request_span(request.headers, "agent.request", _ROUTES[protocol]):
            return await answer(request, protocol, name, version)

    async def answer(
        request: Request, protocol: str, name: str | None = None, version: str | None = None
    ) -> Response:
        try:
            body = await _read_body(request, max_body_bytes)
        except TooLarge:
            return _response(serving.too_large(protocol, max_body_bytes))
        except InputError as exc:
            return _response(serving.bad_request(protocol, exc))
        call = Call(protocol, body, name, version, request.headers.get(oip.HEADER_LENGTH))
        if batch is not None:
            return _response(await batch(call))
        if len(body) > _INLINE_BYTES:
            return _response(await run_in_threadpool(serving.answer, call))
        return _response(serving.answer(call))

    async def predict(request: Request) -> Response:
        return await run(request, "predict")

    async def infer(request: Request) -> Response:
        params = request.path_params
        return await run(request, "v2", params["name"], params.get("version"))

    async def live(_: Request) -> Response:
        return Response(b'{"live":true}', media_type=JSON)

    async def ready(_: Request) -> Response:
        return _response(serving.ready())

    async def server_metadata(_: Request) -> Response:
        return _response(serving.server_metadata())

    async def model_metadata(request: Request) -> Response:
        params = request.path_params
        return _response(serving.model_metadata(params["name"], params.get("version")))

    async def model_ready(request: Request) -> Response:
        params = request.path_params
        return _response(serving.model_ready(params["name"], params.get("version")))

    async def metrics(_: Request) -> Response:
        flush_metrics()
        return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return Response(
            orjson.dumps({"error": exc.detail}), exc.status_code, headers=exc.headers, media_type=JSON
        )

    routes = [  # the inference routes first: Starlette tries routes in order
        Route("/predict", predict, methods=["POST"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.serving = serving
    return app
