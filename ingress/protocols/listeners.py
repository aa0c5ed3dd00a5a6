"""The protocol listeners the gateway starts and stops beside its gRPC server (see ``protocols.*``)."""

from __future__ import annotations

from sluice.ingress.auth import Authenticator
from sluice.ingress.decoding import DecodingBudget
from sluice.ingress.exceptions import BindError
from sluice.ingress.listen import parse_listen
from sluice.ingress.protocols import influx
from sluice.ingress.protocols.http import HttpWrites
from sluice.ingress.protocols.ingest import Ingest
from sluice.ingress.protocols.loki import LokiPush
from sluice.ingress.protocols.otlp_http import OtlpHttp
from sluice.ingress.protocols.statsd import StatsdParser
from sluice.ingress.protocols.udp import UdpListener
from sluice.keys import AccessKeyStore
from sluice.settings import ProtocolsSettings


def _split(listen: str, setting: str) -> tuple[str, int]:
    host, port = parse_listen(listen, setting)
    return host.strip("[]"), port


class ProtocolListeners:
    """The configured UDP listeners and HTTP writes; each is off when its address is empty."""

    def __init__(
        self, settings: ProtocolsSettings, authenticator: Authenticator, ingest: Ingest, keys: AccessKeyStore,
        decoding: DecodingBudget,
    ) -> None:
        self.statsd: UdpListener | None = None
        self.influx_udp: UdpListener | None = None
        self.http: HttpWrites | None = None
        self.otlp_http: HttpWrites | None = None  # the same routes, on OTLP/HTTP's own port
        if settings.statsd_listen:
            self.statsd = UdpListener(
                "statsd", _split(settings.statsd_listen, "protocols.statsd_listen"),
                settings.statsd_access_key, StatsdParser().parse, ingest, keys,
            )
        if settings.influx_udp_listen:
            self.influx_udp = UdpListener(
                "influx_udp", _split(settings.influx_udp_listen, "protocols.influx_udp_listen"),
                settings.influx_udp_access_key, influx.parse, ingest, keys,
            )
        if settings.http_listen:
            host, port = _split(settings.http_listen, "protocols.http_listen")
            self.http = HttpWrites(host, port, authenticator, ingest, settings=settings, decoding=decoding)
            OtlpHttp(self.http)
            LokiPush(self.http)
        if settings.otlp_http_listen:
            host, port = _split(settings.otlp_http_listen, "protocols.otlp_http_listen")
            self.otlp_http = HttpWrites(host, port, authenticator, ingest, settings=settings, decoding=decoding)
            OtlpHttp(self.otlp_http)
            LokiPush(self.otlp_http)

    async def start(self) -> None:
        """Bind every configured listener; :class:`BindError` (and none left bound) if one cannot."""
        started: list[UdpListener | HttpWrites] = []
        try:
            for listener in (self.statsd, self.influx_udp, self.http, self.otlp_http):
                if listener is not None:
                    await listener.start()
                    started.append(listener)
        except OSError as exc:
            for listener in started:
                await listener.stop()
            raise BindError(f"cannot bind a protocol listener: {exc.strerror}",
                            hint="check the SLUICE_PROTOCOLS_*_LISTEN addresses") from exc

    async def stop(self) -> None:
        """Stop receiving; what the UDP listeners already received is published first."""
        for listener in (self.http, self.otlp_http, self.statsd, self.influx_udp):
            if listener is not None:
                await listener.stop()
