"""``host:port`` settings of the gateway's listeners."""

from __future__ import annotations

from sluice.exceptions import ConfigurationError


def parse_listen(listen: str, setting: str = "gateway.listen") -> tuple[str, int]:
    """``host:port`` (host may be ``[v6]``) split; :class:`ConfigurationError` when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigurationError(
            f"{setting} {listen!r} is not host:port", hint="e.g. 127.0.0.1:4317 or [::]:4317"
        )
    return host, int(port)
