"""The ports `sluice dev` listens on, checked before anything starts: a configured port that
cannot be bound stops it with the port and the setting to change, never a silent move."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from sluice.exceptions import ConfigurationError
from sluice.ingress.listen import parse_listen
from sluice.settings import Settings

# The protocol listeners: (setting in ProtocolsSettings, UDP?).
PROTOCOL_LISTENERS = (
    ("statsd_listen", True), ("influx_udp_listen", True), ("http_listen", False), ("otlp_http_listen", False),
)


@dataclass(frozen=True)
class Listener:
    """One address a process of the stack binds, and the variable that names it."""

    setting: str
    host: str
    port: int
    udp: bool = False


def bind_error(host: str, port: int, *, udp: bool) -> str | None:
    """Why a server could not bind host:port now (the OS's reason), or None when it could.

    A TCP port a previous run left in TIME-WAIT is free: the servers bind with SO_REUSEADDR
    (gRPC by default, aiohttp through asyncio's create_server, the metrics server through
    http.server), and so does this check. UDP has no TIME-WAIT, and SO_REUSEADDR would let a
    UDP socket share a port already bound.
    """
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        if not udp:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def configured_listeners(settings: Settings) -> list[Listener]:
    """The addresses the gateway and the worker of ``settings`` will bind."""
    gateway = settings.gateway
    found = [Listener("SLUICE_GATEWAY_LISTEN", *parse_listen(gateway.listen))]
    if gateway.metrics_listen:
        host, port = parse_listen(gateway.metrics_listen, "gateway.metrics_listen")
        found.append(Listener("SLUICE_GATEWAY_METRICS_LISTEN", host, port))
    found.append(Listener("SLUICE_WORKER_WEB_PORT", settings.worker.web_host, settings.worker.web_port))
    for name, udp in PROTOCOL_LISTENERS:
        address = getattr(settings.protocols, name)
        if address:
            host, port = parse_listen(address, f"protocols.{name}")
            found.append(Listener(f"SLUICE_PROTOCOLS_{name.upper()}", host, port, udp))
    return found


def check_listeners(settings: Settings) -> list[Listener]:
    """The configured listeners, each bindable now; else ConfigurationError naming the port
    and the setting to change."""
    listeners = configured_listeners(settings)
    named: dict[tuple[int, bool], str] = {}
    for listener in listeners:
        port, setting = listener.port, listener.setting
        if port == 0:
            raise ConfigurationError(
                f"{setting} names port 0", hint=f"set {setting} to a fixed port: the other commands find it there"
            )
        other = named.setdefault((port, listener.udp), setting)
        if other != setting:
            raise ConfigurationError(f"{other} and {setting} both name port {port}", hint=f"change {setting}")
        error = bind_error(listener.host, port, udp=listener.udp)
        if error is not None:
            where = f"{listener.host}:{port}{'/udp' if listener.udp else ''}"
            raise ConfigurationError(
                f"port {port} ({where}, {setting}) is taken: {error}",
                hint=f"stop what listens there (another `sluice dev`?) or set {setting} to a free port",
            )
    return listeners
