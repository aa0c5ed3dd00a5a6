"""The gateway's Prometheus metrics, in a registry of its own (several gateways can share a
process, as in tests), served over HTTP on ``gateway.metrics_listen``.

Unless ``metrics_key_labels`` is on, ``/metrics`` names no access key: whatever metric has an
``access_key`` label is served without it, its series that differed only by the key summed
(:mod:`sluice.key_labels`, as on the worker's), so a counter added with that label complies
without more ado.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from sluice.key_labels import WithoutKeys


class GatewayMetrics:
    """Every metric the gateway exports; all names start with ``sluice_gateway_``.

    Every envelope an authenticated call reads is counted once in ``received`` and, once the
    gateway settled it, once in exactly one of ``acknowledged`` (Kafka took it), ``rejected``
    (the caller was answered with that gRPC code), ``dropped`` (a lossy buffer policy) or, with
    the ``spool`` policy, ``spooled`` until its replay moves it to ``acknowledged``:

        received = acknowledged + rejected + dropped + (spooled - replayed)

    per access key, summed over the other labels (see docs/RELIABILITY.md).
    """

    def __init__(self, *, key_labels: bool = False) -> None:
        self.key_labels = key_labels  # whether /metrics may name access keys (metrics_key_labels)
        r = self.registry = CollectorRegistry()
        self.received = Counter(
            "sluice_gateway_received_envelopes", "Envelopes read from authenticated calls, valid or not",
            ["access_key", "entry_point"], registry=r,
        )
        self.received_bytes = Counter(
            "sluice_gateway_received_bytes", "Bytes of the valid envelopes received (serialized)",
            ["access_key", "entry_point"], registry=r,
        )
        self.acknowledged = Counter(
            "sluice_gateway_acknowledged_envelopes", "Envelopes Kafka acknowledged", ["access_key"], registry=r
        )
        self.rejected = Counter(
            "sluice_gateway_rejected_envelopes",
            "Envelopes received but not stored, by the gRPC code their caller was answered with",
            ["access_key", "entry_point", "code"], registry=r,
        )
        self.rejected_calls = Counter(
            "sluice_gateway_rejected_calls",
            "Calls (HTTP requests) answered with an error, by gRPC code; those refused before any "
            "envelope was read (authentication, undecodable bodies) count only here",
            ["entry_point", "code"], registry=r,
        )
        self.invalid = Counter(
            "sluice_gateway_invalid_requests", "Requests refused as invalid, by reason", ["reason"], registry=r
        )
        self.auth_failures = Counter(
            "sluice_gateway_auth_failures", "Calls refused by authentication or authorization, by reason",
            ["reason"], registry=r,
        )
        self.rate_limited = Counter(
            "sluice_gateway_rate_limited_requests", "Requests refused over the key's byte rate",
            ["access_key"], registry=r,
        )
        self.rate_delayed = Counter(
            "sluice_gateway_rate_delayed_seconds", "Seconds streams were held back to the key's byte rate",
            ["access_key"], registry=r,
        )
        self.quota_refused = Counter(
            "sluice_gateway_quota_refused_calls",
            "Calls refused RESOURCE_EXHAUSTED at a per-key quota (calls, streams, buffer)",
            ["access_key", "quota"], registry=r,
        )
        self.idle_streams = Counter(
            "sluice_gateway_idle_streams_ended", "Streams ended after sending nothing for stream_idle_timeout",
            ["access_key"], registry=r,
        )
        self.dropped = Counter(
            "sluice_gateway_dropped_envelopes", "Envelopes dropped by the buffer policy",
            ["access_key", "policy", "reason"], registry=r,
        )
        self.publish_seconds = Histogram(
            "sluice_gateway_kafka_publish_seconds", "Time from handing a chunk to Kafka to its acknowledgement",
            registry=r, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.record_bytes = Histogram(
            "sluice_gateway_record_bytes", "Size of the Kafka records published", registry=r,
            buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576),
        )
        self.buffer_bytes = Gauge("sluice_gateway_buffer_bytes", "Bytes queued or in flight to Kafka", registry=r)
        self.spooled = Counter("sluice_gateway_spooled_envelopes", "Envelopes written to the disk spool", registry=r)
        self.replayed = Counter(
            "sluice_gateway_replayed_envelopes", "Envelopes replayed from the disk spool to Kafka", registry=r
        )
        self.spool_bytes = Gauge("sluice_gateway_spool_bytes", "Bytes in the disk spool", registry=r)
        self.spool_oldest_age = Gauge(
            "sluice_gateway_spool_oldest_age_seconds", "Age of the oldest spooled record not yet replayed",
            registry=r,
        )
        self.spool_corrupt = Counter(
            "sluice_gateway_spool_corrupt_segments", "Spool segments quarantined as corrupt", registry=r
        )
        self.kafka_up = Gauge("sluice_gateway_kafka_up", "1 when the last publish to Kafka succeeded", registry=r)
        self.malformed = Counter(
            "sluice_gateway_malformed_lines", "statsd / line-protocol lines skipped as malformed, by reason",
            ["protocol", "reason"], registry=r,
        )
        self.udp_dropped = Counter(
            "sluice_gateway_udp_dropped_datagrams",
            "UDP datagrams not stored: queue full, unknown key, over its rate, Kafka failed",
            ["protocol", "reason"], registry=r,
        )
        self.decoding_refused = Counter(
            "sluice_gateway_decoding_refused_requests",
            "OTLP exports and HTTP writes refused before decoding: a body over its size limit once "
            "decompressed (too_large), costing more than the decoding budget (over_budget), no room in it "
            "in time (decoding_busy)",
            ["entry_point", "reason"], registry=r,
        )
        self.http_refused = Counter(
            "sluice_gateway_http_refused_requests",
            "HTTP requests the listener refused before routing them: headers too large (431), malformed "
            "(400), headers or body not sent in time (header_timeout, body_timeout)",
            ["reason"], registry=r,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def reject_envelopes(self, access_key: str, entry_point: str, code: grpc.StatusCode, n: int) -> None:
        """Count ``n`` received envelopes answered with ``code`` (and never stored)."""
        if n:
            self.rejected.labels(access_key, entry_point, code.name).inc(n)

    def reject_call(self, entry_point: str, code: grpc.StatusCode) -> None:
        """Count a call (or HTTP request) answered with ``code``."""
        self.rejected_calls.labels(entry_point, code.name).inc()

    def exposed(self) -> CollectorRegistry:
        """What ``/metrics`` serves: the registry, without key labels unless ``key_labels``."""
        if self.key_labels:
            return self.registry
        served = CollectorRegistry(auto_describe=True)  # names (for ?name[]=) read now: all exist
        served.register(WithoutKeys(self.registry))
        return served

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on host:port in a thread; the bound port."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.exposed())
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
