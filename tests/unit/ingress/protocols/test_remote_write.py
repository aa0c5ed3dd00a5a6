"""Prometheus remote write decoding, against the messages of a published package (snappy: see
``test_compression``)."""

from __future__ import annotations

import pytest
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
    parsed = parse(request.SerializeToString())
    assert [(e.timestamp, dict(e.tags), e.gauge.metrics["up"].value) for e in parsed.envelopes] == [
        (1_000_000_000, {"job": "j"}, 1.0), (2_000_000_000, {"job": "j"}, 0.0),
    ]
    assert parsed.skipped == {"no_name": 1}


def test_a_body_that_is_not_a_write_request_is_malformed() -> None:
    with pytest.raises(Malformed) as info:
        parse(b"\xff\xff\xff")
    assert (info.value.reason, info.value.message) == (
        "protobuf", "body is not a prometheus.WriteRequest: Error parsing message with type 'prometheus.WriteRequest': "
        "Wire format was corrupt"
    )


def test_a_timestamp_beyond_int64_nanoseconds_is_skipped_and_counted() -> None:
    request = remote_pb2.WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="up")
    series.samples.extend([types_pb2.Sample(value=1, timestamp=2**62), types_pb2.Sample(value=2, timestamp=1000)])
    parsed = parse(request.SerializeToString())
    assert [(e.timestamp, e.gauge.metrics["up"].value) for e in parsed.envelopes] == [(1_000_000_000, 2.0)]
    assert parsed.skipped == {"timestamp": 1}
