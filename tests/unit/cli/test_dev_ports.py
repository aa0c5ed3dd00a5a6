"""`sluice dev`'s port check: a port a previous run left in TIME-WAIT is bound (as the gateway's,
the metrics' and the worker's servers bind it); a port really taken stops it, named with its
setting; the admin query token it keeps for the worker."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, start_http_server

from sluice.cli.dev import DEV_QUERY_TOKEN_FILE, dev_query_token, dev_secret
from sluice.cli.dev_ports import bind_error, check_listeners
from sluice.exceptions import ConfigurationError
from sluice.settings import Settings
from sluice.tansu import free_port
from tests.fixtures.ports import listening_socket, plain_bind_fails, time_wait_port


def dev_settings(**ports: int) -> Settings:
    """Settings whose gateway, metrics and worker ports are free ones, or the ``ports`` given."""
    gateway, metrics = ports.get("gateway", free_port()), ports.get("metrics", free_port())
    return Settings(
        gateway={"listen": f"127.0.0.1:{gateway}", "metrics_listen": f"127.0.0.1:{metrics}"},
        worker={"web_port": ports.get("worker", free_port())},
    )


def test_a_port_in_time_wait_passes_the_check() -> None:
    port = time_wait_port()
    assert plain_bind_fails(port)  # what made the old check move the port
    assert bind_error("127.0.0.1", port, udp=False) is None
    listeners = check_listeners(dev_settings(worker=port))
    assert [(item.setting, item.port) for item in listeners if item.setting == "SLUICE_WORKER_WEB_PORT"] == [
        ("SLUICE_WORKER_WEB_PORT", port)
    ]


async def test_the_servers_bind_a_port_in_time_wait() -> None:
    """gRPC (the gateway), prometheus_client (its /metrics) and aiohttp (the worker's web server,
    the HTTP protocols) each bind a port left in TIME-WAIT: the check's SO_REUSEADDR matches them."""
    grpc_port = time_wait_port()
    server = grpc.aio.server()
    assert server.add_insecure_port(f"127.0.0.1:{grpc_port}") == grpc_port
    await server.start()
    await server.stop(None)

    metrics_port = time_wait_port()
    httpd, _ = start_http_server(metrics_port, addr="127.0.0.1", registry=CollectorRegistry())
    assert httpd.server_port == metrics_port
    httpd.shutdown()
    httpd.server_close()

    web_port = time_wait_port()
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", web_port)
    await site.start()
    with socket.create_connection(("127.0.0.1", web_port), timeout=1):
        pass
    await runner.cleanup()


@pytest.mark.parametrize(
    "setting", ["SLUICE_GATEWAY_LISTEN", "SLUICE_GATEWAY_METRICS_LISTEN", "SLUICE_WORKER_WEB_PORT"]
)
def test_a_taken_port_is_named_with_its_setting(setting: str) -> None:
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        which = {"SLUICE_GATEWAY_LISTEN": "gateway", "SLUICE_GATEWAY_METRICS_LISTEN": "metrics"}.get(setting, "worker")
        with pytest.raises(ConfigurationError) as caught:
            check_listeners(dev_settings(**{which: port}))
    assert caught.value.message == f"port {port} (127.0.0.1:{port}, {setting}) is taken: Address already in use"
    assert caught.value.hint == f"stop what listens there (another `sluice dev`?) or set {setting} to a free port"


def test_a_taken_udp_protocol_port_is_named() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        settings = dev_settings()
        settings.protocols.statsd_listen = f"127.0.0.1:{port}"
        with pytest.raises(ConfigurationError) as caught:
            check_listeners(settings)
    assert caught.value.message == (
        f"port {port} (127.0.0.1:{port}/udp, SLUICE_PROTOCOLS_STATSD_LISTEN) is taken: Address already in use"
    )


def test_one_port_named_twice_and_port_zero_are_refused() -> None:
    port = free_port()
    with pytest.raises(ConfigurationError) as caught:
        check_listeners(dev_settings(metrics=port, worker=port))
    assert caught.value.message == f"SLUICE_GATEWAY_METRICS_LISTEN and SLUICE_WORKER_WEB_PORT both name port {port}"
    with pytest.raises(ConfigurationError) as caught:
        check_listeners(dev_settings(worker=0))
    assert caught.value.message == "SLUICE_WORKER_WEB_PORT names port 0"


def test_the_dev_credentials_are_random_private_and_kept(tmp_path: Path) -> None:
    token = dev_query_token(tmp_path)
    path = tmp_path / DEV_QUERY_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) == 43  # 32 random bytes, URL-safe base64
    assert dev_query_token(tmp_path) == token  # kept across runs
    assert dev_secret(tmp_path) not in (token, "")
    assert stat.S_IMODE((tmp_path / "dev-secret").stat().st_mode) == 0o600
