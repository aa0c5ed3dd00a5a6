"""Prometheus remote write 1.0: a ``prometheus.WriteRequest`` (snappy-compressed on the wire) → envelopes.

Only the fields read here are declared (labels, samples, and the native histograms that are
counted and skipped), built at import from a descriptor instead of a copied ``.proto``; protobuf
skips the fields it does not know. The end-to-end test builds its payloads with the messages of a
published package, so this schema is checked against an independent one.

Remote write 1.0 carries no metric types, so every sample is a ``Gauge`` named by ``__name__``
with the other labels as tags: a counter's cumulative total is stored as it is, and rates are
computed at query time, as Prometheus itself does. Staleness markers (a special NaN) are
skipped; other non-finite samples are rejected by the validator like any gauge.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from sluice.ingress.protocols.lines import INT64_MAX, Malformed
from sluice.v1.envelope_pb2 import Envelope, GaugeValue

_F = descriptor_pb2.FieldDescriptorProto
STALE_NAN_BITS = 0x7FF0000000000002


def _schema() -> type[Any]:
    proto = descriptor_pb2.FileDescriptorProto(name="sluice_remote_write.proto", package="prometheus", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, str]) -> None:
        m = proto.message_type.add(name=name)
        for fname, number, ftype, type_name in fields:
            repeated = type_name.startswith("*")
            f = m.field.add(
                name=fname, number=number, type=ftype,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if type_name:
                f.type_name = type_name.lstrip("*")

    message("Label", ("name", 1, _F.TYPE_STRING, ""), ("value", 2, _F.TYPE_STRING, ""))
    message("Sample", ("value", 1, _F.TYPE_DOUBLE, ""), ("timestamp", 2, _F.TYPE_INT64, ""))
    message("Histogram", ("timestamp", 15, _F.TYPE_INT64, ""))
    message(
        "TimeSeries",
        ("labels", 1, _F.TYPE_MESSAGE, "*.prometheus.Label"),
        ("samples", 2, _F.TYPE_MESSAGE, "*.prometheus.Sample"),
        ("histograms", 4, _F.TYPE_MESSAGE, "*.prometheus.Histogram"),
    )
    message("WriteRequest", ("timeseries", 1, _F.TYPE_MESSAGE, "*.prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _schema()


@dataclass(slots=True)
class Parsed:
    """The envelopes of one write request and what was skipped (reason, count)."""

    envelopes: list[Envelope] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def _stale(value: float) -> bool:
    return math.isnan(value) and struct.unpack("<Q", struct.pack("<d", value))[0] == STALE_NAN_BITS


def parse(raw: bytes) -> Parsed:
    """Decode a (decompressed: see :mod:`.compression`) write request; :class:`Malformed` when it is not one."""
    request = WriteRequest()
    try:
        request.ParseFromString(raw)
    except Exception as exc:  # google.protobuf.message.DecodeError
        raise Malformed(f"body is not a prometheus.WriteRequest: {exc}", reason="protobuf") from exc
    out = Parsed()
    for series in request.timeseries:
        labels = {label.name: label.value for label in series.labels}
        name = labels.pop("__name__", "")
        if series.histograms:
            out.skipped["native_histogram"] = out.skipped.get("native_histogram", 0) + len(series.histograms)
        if not name:
            out.skipped["no_name"] = out.skipped.get("no_name", 0) + len(series.samples)
            continue
        for sample in series.samples:
            if _stale(sample.value):
                out.skipped["stale"] = out.skipped.get("stale", 0) + 1
                continue
            if abs(sample.timestamp) > INT64_MAX // 1_000_000:  # milliseconds that do not fit in int64 ns
                out.skipped["timestamp"] = out.skipped.get("timestamp", 0) + 1
                continue
            env = Envelope(timestamp=sample.timestamp * 1_000_000, tags=labels)
            env.gauge.metrics[name].CopyFrom(GaugeValue(value=sample.value))
            out.envelopes.append(env)
    return out
