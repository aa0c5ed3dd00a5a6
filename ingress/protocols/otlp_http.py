"""OTLP over HTTP: ``POST /v1/logs``, ``/v1/metrics`` and ``/v1/traces`` on the HTTP writes.

Bodies are the OTLP ``Export*ServiceRequest`` as binary protobuf (``application/x-protobuf``) or
in OTLP's JSON mapping (``application/json``: trace and span ids in hex, enums as integers,
unknown fields ignored), plain or ``gzip``. They go through the HTTP writes' path (authentication,
body limits, the decoding budget: see :mod:`.http`) and the OTLP conversion and admission of the
gRPC services (:mod:`.otlp_service`), under the same entry points.

Answers follow the OTLP/HTTP specification, in the request's content type: 200 with the
``Export*ServiceResponse``, its ``partial_success`` naming the rejected items; a failure is the
HTTP status of the native error (400 bad data, 401/403 authentication, 413 too large, 415 a
content type that is neither, 429/503 with ``Retry-After``) with a ``google.rpc.Status`` body.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message

from sluice.exceptions import SluiceError
from sluice.ingress.exceptions import grpc_status
from sluice.ingress.protocols.http import HttpWrites, UnsupportedMediaType, error_status
from sluice.ingress.protocols.lines import Malformed
from sluice.ingress.protocols.otlp_service import SIGNALS, Signal, rejected_groups
from sluice.keys import AccessKeyConfig

PROTOBUF, JSON = "application/x-protobuf", "application/json"
PATHS = {"OTLP.Logs": "/v1/logs", "OTLP.Metrics": "/v1/metrics", "OTLP.Traces": "/v1/traces"}
ENCODINGS = ("gzip", "identity")
# The bytes fields OTLP/JSON writes as hex (in Span, Span.Link, LogRecord, Exemplar), by JSON name.
_HEX_IDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _status_class() -> type[Any]:
    """``google.rpc.Status`` (code and message; ``details`` is not sent), declared here because
    googleapis-common-protos is not a dependency; the tests decode it with that package."""
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="sluice_rpc_status.proto", package="google.rpc", syntax="proto3")
    status = proto.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


Status = _status_class()


def _hex_ids_to_base64(document: Any) -> None:
    """Rewrite OTLP/JSON's hex ids in place as the base64 the protobuf JSON parser expects."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in _HEX_IDS and isinstance(value, str):
                    try:
                        node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                    except ValueError:
                        raise Malformed(f"{key} {value[:40]!r} is not hex", reason="malformed") from None
                elif isinstance(value, (dict, list)):
                    stack.append(value)


def parse(signal: Signal, raw: bytes, content_type: str) -> Any:
    """The signal's request decoded from ``raw``; :class:`Malformed` naming what is wrong."""
    name = signal.request.DESCRIPTOR.full_name
    if content_type == PROTOBUF:
        try:
            return signal.request.FromString(raw)
        except DecodeError as exc:
            raise Malformed(f"the body is not a valid {name}: {exc}", reason="malformed") from exc
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"the body is not JSON: {exc}", reason="malformed") from exc
    if not isinstance(document, dict):
        raise Malformed(f"the body is not a JSON {name} object", reason="malformed")
    _hex_ids_to_base64(document)
    try:
        return json_format.ParseDict(document, signal.request(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise Malformed(f"the body is not a valid {name} in OTLP/JSON: {exc}", reason="malformed") from exc


def _body(message: Message, content_type: str) -> web.Response:
    """``message`` serialized in the request's content type (binary protobuf unless JSON)."""
    if content_type == JSON:
        return web.Response(body=json_format.MessageToJson(message, indent=None).encode(), content_type=JSON)
    return web.Response(body=message.SerializeToString(), content_type=PROTOBUF)


def _content_type(request: web.Request) -> str:
    return request.content_type.strip().lower()


class OtlpHttp:
    """The OTLP/HTTP handlers of one :class:`~.http.HttpWrites`; see the module docstring."""

    def __init__(self, writes: HttpWrites) -> None:
        self._writes = writes
        for signal in SIGNALS:
            writes.app.router.add_post(PATHS[signal.entry_point], self._handler(signal))

    def _handler(self, signal: Signal) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def export(request: web.Request) -> web.Response:
            return await self._export(signal, request)

        return export

    async def _export(self, signal: Signal, request: web.Request) -> web.Response:
        content_type = _content_type(request)
        answer_as = JSON if content_type == JSON else PROTOBUF

        def failure(exc: SluiceError) -> web.Response:
            status, _, headers = error_status(exc)
            body = _body(Status(code=grpc_status(exc).value[0], message=str(exc)), answer_as)
            body.set_status(status)
            body.headers.update(headers or {})
            return body

        async def work(config: AccessKeyConfig, raw: bytes) -> web.Response:
            if content_type not in (PROTOBUF, JSON):
                raise UnsupportedMediaType(
                    f"unsupported Content-Type {content_type[:60]!r}; OTLP/HTTP takes {PROTOBUF} or {JSON}"
                )
            metrics = self._writes.ingest.metrics
            try:
                groups = signal.groups(parse(signal, raw, content_type))
            except Malformed as exc:
                metrics.invalid.labels(exc.reason).inc()
                raise
            admitted = await self._writes.ingest.publish(config, [e for g in groups for e in g], signal.entry_point)
            response = signal.response()
            if admitted.rejected:
                partial = response.partial_success  # type: ignore[attr-defined]
                setattr(partial, signal.rejected_field, rejected_groups(groups, admitted.rejected))
                partial.error_message = admitted.error
            return _body(response, content_type)

        encoding = request.headers.get("Content-Encoding", "")
        return await self._writes.handle(request, signal.entry_point, encoding, ENCODINGS, work, failure)
