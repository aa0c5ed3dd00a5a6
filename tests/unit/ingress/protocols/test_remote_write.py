"""Prometheus remote write decoding, against the messages of a published package."""

from __future__ import annotations

import pytest
import snappy
from opentelemetry.exporter.prometheus_remote_write.gen import remote_pb2, types_pb2

from sluice.ingress.protocols.lines import Malformed
from sluice.ingress.protocols.remote_write import parse


def test_samples_become_gauges_and_the_rest_is_counted() -> None:
    request = remote_pb2.WriteRequest()
    series = request.timeseries.add()
    series.labels.extend([types_pb2.Label(name="__name__", value="up"), types_pb2.Label(name="job", value="j")])
    series.samples.extend([types_pb2.Sample(value=1, timestamp=1000), types_pb2.Sample(value=0, timestamp=2000)])
    nameless = request.timeseries.add()
    nameless.samples.add(value=1, timestamp=1)
    parsed = parse(snappy.compress(request.SerializeToString()), max_bytes=1 << 20)
    assert [(e.timestamp, dict(e.tags), e.gauge.metrics["up"].value) for e in parsed.envelopes] == [
        (1_000_000_000, {"job": "j"}, 1.0), (2_000_000_000, {"job": "j"}, 0.0),
    ]
    assert parsed.skipped == {"no_name": 1}


@pytest.mark.parametrize(("body", "reason"), [
    (b"plain protobuf, not snappy", "snappy"),
    (snappy.compress(b"\xff\xff\xff"), "protobuf"),
    (snappy.compress(b"\x00" * 100), "too_large"),
])
def test_refused_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(Malformed) as info:
        parse(body, max_bytes=64)
    assert info.value.reason == reason


def test_a_timestamp_beyond_int64_nanoseconds_is_skipped_and_counted() -> None:
    request = remote_pb2.WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="up")
    series.samples.extend([types_pb2.Sample(value=1, timestamp=2**62), types_pb2.Sample(value=2, timestamp=1000)])
    parsed = parse(snappy.compress(request.SerializeToString()), max_bytes=1 << 20)
    assert [(e.timestamp, e.gauge.metrics["up"].value) for e in parsed.envelopes] == [(1_000_000_000, 2.0)]
    assert parsed.skipped == {"timestamp": 1}
