"""The gateway process: a grpc.aio server with the ingress and config services.

``Gateway`` is what tests and embedders start and stop; :func:`run_gateway` is what
``sluice gateway`` runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from sluice.crypto import Keyring
from sluice.exceptions import ConfigurationError
from sluice.ingress.auth import Authenticator, TokenVerifier
from sluice.ingress.deadline import DeadlineInterceptor
from sluice.ingress.decoding import DecodingBudget
from sluice.ingress.exceptions import BindError
from sluice.ingress.config_service import AgentConfigServicer
from sluice.ingress.handlers import add_agent_config_to_server, add_ingress_to_server
from sluice.ingress.limits import ByteRateLimiter
from sluice.ingress.listen import parse_listen as parse_listen  # re-exported
from sluice.ingress.metrics import GatewayMetrics
from sluice.ingress.protocols.ingest import Ingest
from sluice.ingress.protocols.listeners import ProtocolListeners
from sluice.ingress.protocols.otlp_service import SERVICE_NAMES as OTLP_SERVICE_NAMES, add_otlp_servicers
from sluice.ingress.publisher import Publisher
from sluice.ingress.quotas import KeyQuotas
from sluice.ingress.server_options import server_options
from sluice.ingress.service import IngressServicer
from sluice.ingress.tls import server_credentials
from sluice.ingress.validate import EnvelopeValidator
from sluice.kafka import ensure_topics
from sluice.keys import JsonKeyStore
from sluice.keys.topic_store import ConfigTopicStore
from sluice.settings import Settings
from sluice.time_bounds import TimeBounds

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    "sluice.v1.Ingress",
    "sluice.v1.AgentConfig",
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
    *OTLP_SERVICE_NAMES,
)

# Tag and length of an envelope inside a record: it must fit with them.
_FRAMING_BYTES = 6


class Gateway:
    """The gRPC gateway: ``await start()``, serve, ``await stop(grace)``; or ``async with``."""

    def __init__(self, settings: Settings) -> None:
        gateway, kafka = settings.gateway, settings.kafka
        self._host, self._port = parse_listen(gateway.listen)
        if gateway.max_envelope_bytes + _FRAMING_BYTES > kafka.max_record_bytes:
            raise ConfigurationError(
                f"gateway.max_envelope_bytes ({gateway.max_envelope_bytes}) does not fit in "
                f"kafka.max_record_bytes ({kafka.max_record_bytes})"
            )
        self.settings = settings
        self.keys = ConfigTopicStore(
            kafka.bootstrap, kafka.config_topic, replication_factor=kafka.replication_factor
        )
        self._authenticator = Authenticator(TokenVerifier(settings.auth), self.keys)
        self._credentials = server_credentials(settings.tls)
        self._validator = EnvelopeValidator(gateway, bounds=TimeBounds.of(settings))
        self.metrics = GatewayMetrics(key_labels=settings.metrics_key_labels)
        self.publisher = Publisher(
            kafka, gateway, metrics=self.metrics, keyring=Keyring(settings.encryption),
            spool_dir=gateway.spool_dir or settings.data_dir / "spool",
        )
        # One of each per gateway: a key's byte rate and quotas span all protocols.
        self._limiter = ByteRateLimiter(self.metrics)
        self.quotas = KeyQuotas(gateway, self.metrics)
        self._ingest = Ingest(
            self._validator, self.publisher, self._limiter, self.metrics, self.quotas,
            chunk_envelopes=gateway.stream_batch_envelopes,
        )
        # One budget bounds the bytes every protocol decodes at once.
        self.decoding = DecodingBudget(gateway.max_decoding_bytes, gateway.decoding_timeout)
        self.protocols = ProtocolListeners(
            settings.protocols, self._authenticator, self._ingest, self.keys, self.decoding
        )
        self._health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self.metrics_port: int | None = None

    @property
    def port(self) -> int:
        """The port served on: the one bound by the system once started if ``listen`` had port 0."""
        return self._port

    @property
    def transport(self) -> str:
        """``plaintext``, ``TLS`` or ``mutual TLS``."""
        if self._credentials is None:
            return "plaintext"
        return "TLS" if self.settings.tls.client_ca_file is None else "mutual TLS"

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        return f"{self._host}:{self._port}"

    async def start(self) -> None:
        """Ensure the raw topic exists, connect to Kafka and start serving."""
        if self._server is not None:
            raise RuntimeError("the gateway is already started")
        kafka, gateway = self.settings.kafka, self.settings.gateway
        await ensure_topics(
            kafka.bootstrap,
            [kafka.raw_topic],
            partitions=kafka.partitions,
            replication_factor=kafka.replication_factor,
        )
        await self.keys.start()
        seed = self.settings.access_keys_path
        if seed.exists():
            added = await self.keys.seed(JsonKeyStore(seed).list())
            if added:
                log.info("seeded %d access key(s) from %s: %s", len(added), seed, ", ".join(added))
        try:
            await self.publisher.start()
        except BaseException:
            await self.keys.stop()
            raise
        try:
            server = grpc.aio.server(
                options=server_options(gateway),
                maximum_concurrent_rpcs=gateway.max_concurrent_rpcs,
                interceptors=[DeadlineInterceptor(gateway.call_timeout, gateway.stream_timeout)],
            )
            add_ingress_to_server(
                IngressServicer(
                    self._authenticator,
                    self._validator,
                    self.publisher,
                    metrics=self.metrics,
                    limiter=self._limiter,
                    quotas=self.quotas,
                    stream_batch_envelopes=gateway.stream_batch_envelopes,
                    stream_linger=gateway.stream_linger,
                    stream_idle_timeout=gateway.stream_idle_timeout,
                ),
                server,
            )
            add_agent_config_to_server(
                AgentConfigServicer(self._authenticator, self.metrics, self.keys, self.quotas), server
            )
            add_otlp_servicers(server, self._authenticator, self._ingest, self.decoding)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            reflection.enable_server_reflection(SERVICE_NAMES, server)
            try:
                if self._credentials is None:
                    self._port = server.add_insecure_port(gateway.listen)
                else:
                    self._port = server.add_secure_port(gateway.listen, self._credentials)
            except RuntimeError as exc:
                raise BindError(
                    f"cannot listen on {gateway.listen}", hint="is another process using that port?"
                ) from exc
            await server.start()
            for service in SERVICE_NAMES:
                await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
            if gateway.metrics_listen:
                host, port = parse_listen(gateway.metrics_listen, "gateway.metrics_listen")
                try:
                    self.metrics_port = self.metrics.serve(host.strip("[]"), port)
                except OSError as exc:
                    await server.stop(None)
                    raise BindError(
                        f"cannot serve metrics on {gateway.metrics_listen}: {exc.strerror}",
                        hint="set SLUICE_GATEWAY_METRICS_LISTEN to a free host:port, or empty to turn it off",
                    ) from exc
            try:
                await self.protocols.start()
            except BaseException:
                await server.stop(None)
                self.metrics.close()
                raise
        except BaseException:
            await self.publisher.stop()
            await self.keys.stop()
            raise
        self._server = server
        log.info(
            "gateway listening on %s (%s), publishing to %s at %s",
            self.address, self.transport, kafka.raw_topic, kafka.bootstrap,
        )

    async def stop(self, grace: float | None = 10.0) -> None:
        """Refuse new calls, let in-flight calls finish for ``grace`` seconds, then disconnect Kafka."""
        server, self._server = self._server, None
        if server is not None:
            await self.protocols.stop()
            await self._health.enter_graceful_shutdown()
            await server.stop(grace)
        await self.publisher.stop()
        await self.keys.stop()
        self.metrics.close()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run_gateway(settings: Settings, *, grace: float = 10.0) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully (in-flight calls get ``grace`` seconds)."""
    gateway = Gateway(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    try:
        await gateway.start()
        await stopping.wait()
        log.info("stopping the gateway (grace %gs)", grace)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await gateway.stop(grace)
