"""The gRPC server options of the gateway: message size, streams per connection, keepalive and
ping-abuse policy, idle and maximum connection age. Limits a misbehaving client cannot lift."""

from __future__ import annotations

from sluice.settings import GatewaySettings


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def server_options(gateway: GatewaySettings) -> list[tuple[str, int]]:
    """``grpc.aio.server(options=...)`` for these settings."""
    options = [
        ("grpc.max_receive_message_length", gateway.max_message_bytes),
        ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
        ("grpc.max_concurrent_streams", gateway.max_concurrent_streams),
        ("grpc.keepalive_time_ms", _ms(gateway.keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(gateway.keepalive_timeout)),
        # Pings from clients: more often than this, or on a connection without calls, is a
        # strike; after max_ping_strikes the server closes the connection (GOAWAY).
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(gateway.min_client_ping_interval)),
        ("grpc.http2.max_ping_strikes", gateway.max_ping_strikes),
        ("grpc.max_connection_idle_ms", _ms(gateway.max_connection_idle)),
    ]
    if gateway.max_connection_age is not None:
        options += [
            ("grpc.max_connection_age_ms", _ms(gateway.max_connection_age)),
            ("grpc.max_connection_age_grace_ms", _ms(gateway.max_connection_age_grace)),
        ]
    return options
