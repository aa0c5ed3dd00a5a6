"""``sluice.v1.AgentConfig``: an agent reads (GetConfig) or watches (WatchConfig) the
configuration of its own access key. Both hold a call of the key's quotas, a watch a stream too."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from sluice.ingress.auth import Authenticator
from sluice.ingress.exceptions import InvalidEnvelope, PermissionDenied, quoted
from sluice.ingress.handlers import Malformed
from sluice.ingress.metrics import GatewayMetrics
from sluice.ingress.quotas import KeyQuotas, QuotaExceeded, Slot
from sluice.ingress.service import abort, authenticate, well_formed
from sluice.keys import AccessKeyConfig
from sluice.keys.topic_store import ConfigTopicStore
from sluice.v1 import config_pb2, config_pb2_grpc


def config_response(config: AccessKeyConfig) -> config_pb2.AgentConfigResponse:
    """An access key's configuration as the wire message."""
    return config_pb2.AgentConfigResponse(
        access_key=config.access_key,
        enabled=config.enabled,
        shards=config.shards,
        limits=config_pb2.Limits(
            bytes_per_second=config.limits.bytes_per_second,
            events_per_second=config.limits.events_per_second,
        ),
        routes=[config_pb2.Route(stream=s, sinks=sinks) for s, sinks in sorted(config.routes.items())],
        version=config.version,
    )


class AgentConfigServicer(config_pb2_grpc.AgentConfigServicer):
    """Registered with :func:`~sluice.ingress.handlers.add_agent_config_to_server`, whose requests
    that do not decode arrive as :class:`Malformed` and are answered INVALID_ARGUMENT."""

    def __init__(
        self, authenticator: Authenticator, metrics: GatewayMetrics, keys: ConfigTopicStore, quotas: KeyQuotas
    ) -> None:
        self._authenticator = authenticator
        self._metrics = metrics
        self._keys = keys
        self._quotas = quotas

    async def _caller(
        self,
        request: config_pb2.GetConfigRequest | Malformed,
        context: grpc.aio.ServicerContext,
        entry_point: str,
    ) -> tuple[AccessKeyConfig, Slot]:
        """The caller's configuration and its slot of the key's quotas; a call for another key's
        configuration, one that did not decode, or one over the key's quotas is refused."""
        config = await authenticate(self._authenticator, context, self._metrics, entry_point)
        try:
            request = well_formed(request, "request")
        except InvalidEnvelope as exc:
            self._metrics.invalid.labels(exc.reason).inc()
            await abort(context, exc, entry_point, self._metrics)
        if request.access_key and request.access_key != config.access_key:
            await abort(
                context,
                PermissionDenied(
                    f"access key {config.access_key!r} may not read the configuration of "
                    f"{quoted(request.access_key)}",
                    reason="foreign_key",
                ),
                entry_point,
                self._metrics,
            )
        try:
            slot = self._quotas.open(config.access_key, streaming=entry_point == "WatchConfig")
        except QuotaExceeded as exc:
            await abort(context, exc, entry_point, self._metrics)
        return config, slot

    async def GetConfig(
        self, request: config_pb2.GetConfigRequest | Malformed, context: grpc.aio.ServicerContext
    ) -> config_pb2.AgentConfigResponse:
        config, slot = await self._caller(request, context, "GetConfig")
        with slot:
            return config_response(config)

    async def WatchConfig(
        self, request: config_pb2.GetConfigRequest | Malformed, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[config_pb2.AgentConfigResponse]:
        """The configuration now, then every new version until the client goes away."""
        config, slot = await self._caller(request, context, "WatchConfig")
        with slot:
            async for version in self._keys.watch(config.access_key):
                yield config_response(version)
