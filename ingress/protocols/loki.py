"""The Loki push API: ``POST /loki/api/v1/push`` on the HTTP writes, as Promtail, Grafana Alloy,
Fluent Bit's ``loki`` output and the logging libraries send it.

Bodies are a ``logproto.PushRequest`` (protobuf, snappy block-compressed: the default, as in Loki,
when the ``Content-Type`` is not ``application/json``) or its JSON form
(``{"streams": [{"stream": {labels}, "values": [["<unix ns>", "<line>", {metadata}]]}]}``, plain,
gzip or deflate). Only the fields read here are declared, built at import from a descriptor.

Each entry is a ``Log`` envelope (``OUT``) with its line as payload; its stream's labels and its
structured metadata become tags (the metadata's win), ``service_name`` (else ``job``) is the
source and ``instance`` the instance. Authentication is the HTTP writes' (a bearer JWT, or basic
auth with the access key as user and the JWT as password); ``X-Scope-OrgID``, when sent, must name
the authenticated access key (403 otherwise). A body that is not a push request, or whose labels
do not parse, is refused whole with 400, as Loki does; entries that fail validation are skipped
and counted and the rest stored, answered 400 naming them; success is 204.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from sluice.ingress.exceptions import PermissionDenied
from sluice.ingress.protocols.http import HttpWrites, json_error
from sluice.ingress.protocols.lines import INT64_MAX, Malformed
from sluice.keys import AccessKeyConfig
from sluice.v1.envelope_pb2 import Envelope, Log

ENTRY_POINT = "Loki"
PATH = "/loki/api/v1/push"
JSON = "application/json"
JSON_ENCODINGS = ("gzip", "deflate", "identity")
_F = descriptor_pb2.FieldDescriptorProto
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)', re.S)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _schema() -> type[Any]:
    proto = descriptor_pb2.FileDescriptorProto(name="sluice_loki_push.proto", package="logproto", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, str]) -> None:
        m = proto.message_type.add(name=name)
        for fname, number, ftype, type_name in fields:
            repeated = type_name.startswith("*")
            f = m.field.add(name=fname, number=number, type=ftype,
                            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = type_name.lstrip("*")

    message("Timestamp", ("seconds", 1, _F.TYPE_INT64, ""), ("nanos", 2, _F.TYPE_INT32, ""))
    message("LabelPair", ("name", 1, _F.TYPE_STRING, ""), ("value", 2, _F.TYPE_STRING, ""))
    message("Entry", ("timestamp", 1, _F.TYPE_MESSAGE, ".logproto.Timestamp"), ("line", 2, _F.TYPE_STRING, ""),
            ("structuredMetadata", 3, _F.TYPE_MESSAGE, "*.logproto.LabelPair"))
    message("Stream", ("labels", 1, _F.TYPE_STRING, ""), ("entries", 2, _F.TYPE_MESSAGE, "*.logproto.Entry"))
    message("PushRequest", ("streams", 1, _F.TYPE_MESSAGE, "*.logproto.Stream"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))


PushRequest = _schema()


def parse_labels(text: str) -> dict[str, str]:
    """A stream selector's labels, ``{name="value", ...}``; :class:`Malformed` when it is not one."""
    inner = text.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise Malformed(f"stream labels {text[:80]!r} are not {{name=\"value\", ...}}", reason="labels")
    inner, labels, at = inner[1:-1], {}, 0
    while inner[at:].strip():
        match = _LABEL.match(inner, at)
        if match is None:
            raise Malformed(f"stream labels {text[:80]!r} do not parse at {inner[at:at + 20]!r}", reason="labels")
        labels[match[1]] = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[1]), match[2], flags=re.S)
        at = match.end()
    return labels


def _envelope(labels: Mapping[str, str], timestamp: int, line: str, metadata: Iterable[tuple[str, str]]) -> Envelope:
    tags = dict(labels)
    tags.update(metadata)
    source = labels.get("service_name") or labels.get("job", "")
    env = Envelope(timestamp=timestamp, source_id=source, instance_id=labels.get("instance", ""), tags=tags)
    env.log.CopyFrom(Log(payload=line.encode(), type=Log.OUT))
    return env


def parse_protobuf(raw: bytes) -> list[Envelope]:
    """The envelopes of a (decompressed) ``logproto.PushRequest``; :class:`Malformed` when it is not one."""
    request = PushRequest()
    try:
        request.ParseFromString(raw)
    except Exception as exc:  # google.protobuf.message.DecodeError
        raise Malformed(f"the body is not a logproto.PushRequest: {exc}", reason="protobuf") from exc
    out: list[Envelope] = []
    for stream in request.streams:
        labels = parse_labels(stream.labels)
        for entry in stream.entries:
            ns = entry.timestamp.seconds * 1_000_000_000 + entry.timestamp.nanos
            if not 0 <= ns <= INT64_MAX:
                raise Malformed(f"entry timestamp {entry.timestamp.seconds}s is out of range", reason="timestamp")
            out.append(_envelope(labels, ns, entry.line, ((p.name, p.value) for p in entry.structuredMetadata)))
    return out


def _strings(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise Malformed(f"{what} must be an object of strings", reason="json")
    return value


def parse_json(raw: bytes) -> list[Envelope]:
    """The envelopes of a push request in Loki's JSON form; :class:`Malformed` naming what is wrong."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"the body is not JSON: {exc}", reason="json") from exc
    streams = document.get("streams") if isinstance(document, dict) else None
    if not isinstance(streams, list):
        raise Malformed('the body is not a Loki push request: expected {"streams": [...]}', reason="json")
    out: list[Envelope] = []
    for stream in streams:
        if not isinstance(stream, dict) or not isinstance(stream.get("values"), list):
            raise Malformed('each stream must be {"stream": {labels}, "values": [[ts, line], ...]}', reason="json")
        labels = _strings(stream.get("stream", {}), "a stream's labels")
        for value in stream["values"]:
            if not (isinstance(value, list) and len(value) in (2, 3) and isinstance(value[0], str)
                    and isinstance(value[1], str) and value[0].isascii() and value[0].isdigit()):
                raise Malformed(f"a value {str(value)[:80]} is not [\"<unix ns>\", \"<line>\"(, {{metadata}})]",
                                reason="json")
            if len(value[0]) > 19 or int(value[0]) > INT64_MAX:
                raise Malformed(f"timestamp {value[0][:30]} is out of range", reason="timestamp")
            metadata = _strings(value[2], "structured metadata") if len(value) == 3 else {}
            out.append(_envelope(labels, int(value[0]), value[1], metadata.items()))
    return out


class LokiPush:
    """The Loki push handler of one :class:`~.http.HttpWrites`; see the module docstring."""

    def __init__(self, writes: HttpWrites) -> None:
        self._writes = writes
        writes.app.router.add_post(PATH, self._push)

    async def _push(self, request: web.Request) -> web.Response:
        is_json = request.content_type.strip().lower() == JSON
        tenant = request.headers.get("X-Scope-OrgID", "").strip()

        async def work(config: AccessKeyConfig, raw: bytes) -> web.Response:
            metrics = self._writes.ingest.metrics
            if tenant and tenant != config.access_key:
                denied = PermissionDenied(f"X-Scope-OrgID {tenant[:80]!r} is not the token's access key")
                metrics.auth_failures.labels(denied.reason).inc()
                raise denied
            try:
                envelopes = parse_json(raw) if is_json else parse_protobuf(raw)
            except Malformed as exc:
                metrics.invalid.labels(exc.reason).inc()
                raise
            admitted = await self._writes.ingest.publish(config, envelopes, ENTRY_POINT)
            if admitted.rejected:
                return json_error(400, f"{len(admitted.rejected)} entries rejected, {admitted.accepted} stored; "
                                   f"first: {admitted.error}")
            return web.Response(status=204)

        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if is_json:
            return await self._writes.handle(request, ENTRY_POINT, encoding, JSON_ENCODINGS, work)
        if encoding in ("", "identity"):  # protobuf bodies are snappy whatever the header says
            encoding = "snappy"
        return await self._writes.handle(request, ENTRY_POINT, encoding, ("snappy",), work)
