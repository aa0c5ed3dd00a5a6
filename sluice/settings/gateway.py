"""The gateway: its gRPC ingress and the listeners of other protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class GatewaySettings(BaseModel):
    """The gRPC ingress."""

    listen: str = "127.0.0.1:4317"
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_envelope_bytes: int = Field(256 * 1024, ge=64)
    max_batch_envelopes: int = Field(10_000, ge=1)
    max_tags: int = Field(64, ge=0)
    max_tag_key_bytes: int = Field(256, ge=1)
    max_tag_value_bytes: int = Field(4096, ge=1)
    max_future_seconds: float = Field(
        600.0, ge=0, description="reject envelopes stamped further in the future than this"
    )
    max_duration_seconds: float = Field(
        86400.0, gt=0, description="longest timer (stop - start) or span (end - start) accepted, in seconds"
    )
    stream_batch_envelopes: int = Field(
        5000, ge=1, description="a Sender/BatchSender stream is published in batches this large (each record "
        "stays within kafka.max_record_bytes)"
    )
    stream_linger: float = Field(
        0.2, gt=0, description="a stream's envelopes are published at most this many seconds after arrival"
    )
    buffer_policy: Literal["block", "drop-oldest", "drop-newest", "spool"] = Field(
        "block", description="what happens when Kafka does not keep up (see ingress/buffer.py)"
    )
    buffer_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="room between receiving and Kafka")
    block_timeout: float = Field(
        5.0, gt=0, description="with block: seconds a call waits for room before UNAVAILABLE"
    )
    producers: int = Field(
        1, ge=1, le=16, description="Kafka producers (connections) the gateway publishes through; a call "
        "keeps to one, so its records stay in order (see docs/OPERATIONS.md before raising it)",
    )
    max_in_flight_chunks: int = Field(
        64, ge=1, description="chunks handed to Kafka and not yet acknowledged; the rest wait in the buffer"
    )
    spool_dir: Path | None = Field(None, description="the spool policy's directory; default <data_dir>/spool")
    spool_max_bytes: int = Field(1 << 30, ge=4096, description="the spool's size limit")
    spool_segment_bytes: int = Field(16 << 20, ge=1024, description="size of one spool segment file")
    alert_interval: float = Field(10.0, ge=0, description="at most one drop alert line per this many seconds")
    metrics_listen: str = Field(
        "127.0.0.1:9464", description="host:port of the Prometheus /metrics endpoint; empty = off"
    )
    keys_reload_interval: float = Field(1.0, gt=0)
    # Connection limits (abuse resistance); times in seconds.
    max_concurrent_rpcs: int = Field(
        1000, ge=1, description="calls served at once; one more is answered RESOURCE_EXHAUSTED"
    )
    max_concurrent_streams: int = Field(
        100, ge=1, description="HTTP/2 streams (calls) at once per connection; more wait for a slot"
    )
    keepalive_time: float = Field(60.0, gt=0, description="the server pings a connection this idle")
    keepalive_timeout: float = Field(20.0, gt=0, description="a ping unanswered this long closes it")
    min_client_ping_interval: float = Field(
        10.0, ge=0, description="a client pinging more often than this (or without calls) gets a strike"
    )
    max_ping_strikes: int = Field(
        2, ge=0, description="strikes before the connection is closed (GOAWAY too_many_pings); 0: never"
    )
    max_connection_idle: float = Field(300.0, gt=0, description="a connection without calls this long is closed")
    max_connection_age: float | None = Field(
        None, gt=0, description="connections are asked to reconnect after this long (none: never)"
    )
    max_connection_age_grace: float = Field(
        30.0, gt=0, description="calls still running this long after max_connection_age are cut"
    )
    call_timeout: float = Field(
        60.0, gt=0, description="a unary call running longer ends with DEADLINE_EXCEEDED"
    )
    stream_timeout: float = Field(
        3600.0, gt=0, description="a streaming call (either direction) running longer ends so too"
    )
    # Per-key quotas: one key at its quota leaves the other keys' calls unaffected.
    max_calls_per_key: int = Field(
        100, ge=1, description="calls (unary and streaming) of one access key served at once; one more is "
        "answered RESOURCE_EXHAUSTED with a retry-after"
    )
    max_streams_per_key: int = Field(
        50, ge=1, description="streaming calls (Sender, BatchSender, WatchConfig) of one access key open at once"
    )
    stream_idle_timeout: float = Field(
        300.0, gt=0, description="a stream that sends nothing for this many seconds is ended (DEADLINE_EXCEEDED)"
    )
    max_buffer_bytes_per_key: int = Field(
        16 * 1024 * 1024, ge=1024, description="bytes of one access key held between receiving and Kafka's "
        "acknowledgement (queued or in flight); a call over it waits for room (block, up to block_timeout) "
        "or is answered RESOURCE_EXHAUSTED with a retry-after (then, and at once under the lossy policies); "
        "under spool it is spooled"
    )
    max_decoding_bytes: int = Field(
        128 * 1024 * 1024, ge=1024, description="memory that decoding OTLP exports and HTTP writes may take at "
        "once, across every call and protocol (a request costs its decompressed size times 20 to 70, as "
        "measured per protocol); more wait for room, a request costing more than all of it is refused"
    )
    decoding_timeout: float = Field(
        5.0, gt=0, description="seconds a request waits for room in max_decoding_bytes before it is answered "
        "RESOURCE_EXHAUSTED (HTTP 503) with a retry-after"
    )


class ProtocolsSettings(BaseModel):
    """Listeners for the protocols other clients already speak (OTLP/gRPC is on ``gateway.listen``).

    UDP carries no credentials, so each UDP listener is bound to one access key, whose routes
    and limits apply to everything it receives. An empty address turns a listener off.
    """

    statsd_listen: str = Field("", description="UDP host:port of the statsd listener, e.g. 127.0.0.1:8125")
    statsd_access_key: str = Field("", description="the access key statsd datagrams are stored under")
    influx_udp_listen: str = Field("", description="UDP host:port of the Influx line-protocol listener")
    influx_udp_access_key: str = Field("", description="the access key line-protocol datagrams are stored under")
    http_listen: str = Field(
        "", description="host:port of the HTTP writes (Influx /api/v2/write, /write; Prometheus /api/v1/write; "
        "OTLP/HTTP /v1/logs, /v1/metrics, /v1/traces; Loki /loki/api/v1/push)"
    )
    otlp_http_listen: str = Field(
        "", description="host:port of a second listener of the HTTP writes, for OTLP/HTTP clients' usual port "
        "(4318); the same endpoints as protocols.http_listen"
    )
    max_http_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest (decompressed) HTTP body")
    header_timeout: float = Field(
        10.0, gt=0, description="seconds an HTTP client has to send a request's headers; slower ones are closed"
    )
    body_timeout: float = Field(
        60.0, gt=0, description="seconds an HTTP client has to send a request's body once its headers arrived"
    )
