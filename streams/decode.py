"""Decoders: a Kafka record's value → typed rows and metric points, chosen by content type.

A record carries one ``EnvelopeBatch`` of one access key. Decoders are registered by the
record's ``content-type`` header, so new wire formats (OTLP, line protocols) plug in here.

The gateway refuses envelopes whose times are out of bounds (:mod:`sluice.time_bounds`); a
decoder drops and counts those that got in anyway (an older gateway, another producer), judged
against the window around the record's time: a timer stopping in 2262 would keep a window
open for ever, a log older than the table's TTL would never be seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf.message import DecodeError as ProtobufDecodeError

from sluice.streams._decode import decode
from sluice.streams.exceptions import DecodeError
from sluice.time_bounds import UNBOUNDED, Window
from sluice.v1 import envelope_pb2

LOG_TYPES = {envelope_pb2.Log.OUT: "OUT", envelope_pb2.Log.ERR: "ERR"}

# Metric kinds as stored in ClickHouse.
COUNTER, GAUGE, TIMER = "counter", "gauge", "timer"

LOG_COLUMNS = (
    "access_key", "timestamp", "source_id", "instance_id", "type", "payload", "tags",
    "kafka_partition", "kafka_offset", "batch_index",
)
SPAN_COLUMNS = (
    "access_key", "timestamp", "source_id", "instance_id", "trace_id", "span_id", "parent_span_id",
    "name", "kind", "end_time", "duration_ns", "status", "status_message", "tags",
    "kafka_partition", "kafka_offset", "batch_index",
)
SPAN_KINDS = {v.number: v.name for v in envelope_pb2.Span.Kind.DESCRIPTOR.values}
SPAN_STATUSES = {v.number: v.name for v in envelope_pb2.Span.Status.DESCRIPTOR.values}
EVENT_COLUMNS = (
    "access_key", "timestamp", "source_id", "instance_id", "title", "body", "tags",
    "kafka_partition", "kafka_offset", "batch_index",
)


# One measurement of one series: a counter delta, a gauge reading or a timer duration, as
# (name, kind, unit, tags, timestamp in ns since the epoch, value, last), where ``last`` is a
# counter's running total and the value otherwise. A plain tuple: a record holds hundreds.
MetricPoint = tuple[str, str, str, dict[str, str], int, float, float]
POINT_TIMESTAMP: Final = 4


@dataclass(slots=True)
class Decoded:
    """What one record holds, split by stream. Rows are in LOG_COLUMNS / EVENT_COLUMNS / SPAN_COLUMNS order.

    Rows and points with the same tags may share one tags dict (``_decode.c``): never change one."""

    logs: list[list[Any]] = field(default_factory=list)
    events: list[list[Any]] = field(default_factory=list)
    points: list[MetricPoint] = field(default_factory=list)
    spans: list[list[Any]] = field(default_factory=list)
    out_of_bounds: int = 0  # envelopes dropped: a time outside the record's window


def decode_batch(value: bytes, access_key: str, partition: int, offset: int, window: Window = UNBOUNDED) -> Decoded:
    """Decode an ``EnvelopeBatch`` record: from its wire bytes (``_decode.c``) when it holds only
    logs, events and metrics, each field once, every time within ``window``; else with protobuf
    (:func:`decode_with_protobuf`), which words the errors and drops what is out of bounds. Both
    give the same rows and points."""
    fast = decode(value, access_key, partition, offset, window)
    if fast is None:
        return decode_with_protobuf(value, access_key, partition, offset, window)
    logs, events, points = fast
    return Decoded(logs, events, points)


def _within(window: Window, env: envelope_pb2.Envelope, kind: str) -> bool:
    """Whether every time of an envelope of this kind is within ``window`` (``_decode.c`` agrees)."""
    raw_from, metric_from, until, max_duration = window
    ts = env.timestamp
    if kind == "timer":
        t = env.timer
        took = t.stop - t.start
        return 0 <= took <= max_duration and metric_from <= (t.stop or ts) <= until
    if kind == "span":
        sp = env.span
        took = sp.end - sp.start
        return 0 <= took <= max_duration and raw_from <= (sp.start or ts) <= until and sp.end <= until
    return (raw_from if kind in ("log", "event") else metric_from) <= ts <= until


def decode_with_protobuf(value: bytes, access_key: str, partition: int, offset: int, window: Window = UNBOUNDED) -> Decoded:
    """Decode an ``EnvelopeBatch`` record with protobuf: every record, spans included;
    :class:`DecodeError` for one that is not a batch or has an envelope with no message.
    Envelopes with a time outside ``window`` are dropped and counted in ``out_of_bounds``."""
    batch = envelope_pb2.EnvelopeBatch()
    try:
        batch.ParseFromString(value)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"not an EnvelopeBatch: {exc}") from exc
    out = Decoded()
    logs, events, points = out.logs, out.events, out.points
    for i, env in enumerate(batch.batch):
        kind = env.WhichOneof("message")
        if kind is None:
            raise DecodeError(f"envelope[{i}] has no message")
        if not _within(window, env, kind):
            out.out_of_bounds += 1
            continue
        ts = env.timestamp
        m = env.tags
        tags = {k: m[k] for k in m} if m else {}  # dict(m) walks a Python KeysView: twice as slow
        if kind == "log":
            log = env.log
            logs.append([
                access_key, ts, env.source_id, env.instance_id, LOG_TYPES.get(log.type, "OUT"),
                log.payload.decode("utf-8", errors="replace"), tags, partition, offset, i,
            ])
        elif kind == "counter":
            c = env.counter
            points.append((c.name, COUNTER, "", tags, ts, float(c.delta), float(c.total)))
        elif kind == "gauge":
            metrics = env.gauge.metrics
            for name in metrics:  # .items() on a protobuf map is a Python-level ItemsView
                g = metrics[name]
                v = g.value
                points.append((name, GAUGE, g.unit, tags, ts, v, v))
        elif kind == "timer":
            t = env.timer
            ms = (t.stop - t.start) / 1e6
            points.append((t.name, TIMER, "ms", tags, t.stop or ts, ms, ms))
        elif kind == "event":
            ev = env.event
            events.append([
                access_key, ts, env.source_id, env.instance_id, ev.title, ev.body, tags,
                partition, offset, i,
            ])
        else:
            sp = env.span
            out.spans.append([
                access_key, sp.start or ts, env.source_id, env.instance_id, sp.trace_id.hex(), sp.span_id.hex(),
                sp.parent_span_id.hex(), sp.name, SPAN_KINDS.get(sp.kind, "UNSPECIFIED"), sp.end,
                max(0, sp.end - sp.start), SPAN_STATUSES.get(sp.status, "UNSET"), sp.status_message, tags,
                partition, offset, i,
            ])
    return out

