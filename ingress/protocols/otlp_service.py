"""The OTLP/gRPC collector services on the gateway's port, authenticated like ``sluice.v1.Ingress``.

OTel exporters send the bearer token and access key as headers (``OTEL_EXPORTER_OTLP_HEADERS``
or ``headers=``), which arrive as call metadata. Items whose envelopes fail validation are
reported in the response's partial success; failures of the whole request (rate limit, Kafka)
abort the call with the native status, which OTel exporters retry when it is retryable.

Requests arrive as bytes and are parsed here, not by gRPC: once the caller is authenticated and
the decoding cost reserved (:mod:`sluice.ingress.decoding`), so that a request's objects exist only
within the gateway's decoding budget, and bytes that are not the service's message are answered
INVALID_ARGUMENT naming it (gRPC's own deserializer answered ``UNKNOWN``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb

from sluice.exceptions import SluiceError
from sluice.ingress.auth import Authenticator
from sluice.ingress.decoding import COST_FACTOR, DecodingBudget, DecodingBusy, TooLargeToDecode
from sluice.ingress.protocols.ingest import Ingest
from sluice.ingress.protocols.lines import Malformed
from sluice.ingress.protocols.otlp import Groups, log_groups, metrics_groups, span_groups
from sluice.ingress.service import abort, authenticate


@dataclass(frozen=True, slots=True)
class Signal:
    """One OTLP service: its request, how its items become groups of envelopes, its response."""

    service: str
    entry_point: str
    request: type[Message]
    groups: Callable[[Any], Groups]
    response: type[Message]
    rejected_field: str  # the partial success's count of rejected items


SIGNALS = (
    Signal(logs_pb.DESCRIPTOR.services_by_name["LogsService"].full_name, "OTLP.Logs",
           logs_pb.ExportLogsServiceRequest, lambda r: log_groups(r.resource_logs),
           logs_pb.ExportLogsServiceResponse, "rejected_log_records"),
    Signal(metrics_pb.DESCRIPTOR.services_by_name["MetricsService"].full_name, "OTLP.Metrics",
           metrics_pb.ExportMetricsServiceRequest, lambda r: metrics_groups(r.resource_metrics),
           metrics_pb.ExportMetricsServiceResponse, "rejected_data_points"),
    Signal(trace_pb.DESCRIPTOR.services_by_name["TraceService"].full_name, "OTLP.Traces",
           trace_pb.ExportTraceServiceRequest, lambda r: span_groups(r.resource_spans),
           trace_pb.ExportTraceServiceResponse, "rejected_spans"),
)
SERVICE_NAMES = tuple(signal.service for signal in SIGNALS)


def rejected_groups(groups: Groups, rejected: set[int]) -> int:
    """How many groups hold an envelope whose index (over all groups) is in ``rejected``."""
    count, index = 0, 0
    for group in groups:
        if any(i in rejected for i in range(index, index + len(group))):
            count += 1
        index += len(group)
    return count


class Exporter:
    """``Export`` of one OTLP service: authenticate, reserve, parse, publish, report partial success."""

    def __init__(self, signal: Signal, authenticator: Authenticator, ingest: Ingest, decoding: DecodingBudget) -> None:
        self._signal = signal
        self._authenticator = authenticator
        self._ingest = ingest
        self._decoding = decoding

    async def __call__(self, raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        signal, metrics = self._signal, self._ingest.metrics
        config = await authenticate(self._authenticator, context, metrics, signal.entry_point)
        response = signal.response()
        try:
            cost = len(raw) * COST_FACTOR[signal.entry_point]
            async with self._decoding.reserve(cost, f"{signal.entry_point} export"):
                groups = signal.groups(self._parse(raw))
                envelopes = [env for group in groups for env in group]
                admitted = await self._ingest.publish(config, envelopes, signal.entry_point)
                rejected = rejected_groups(groups, admitted.rejected) if admitted.rejected else 0
        except SluiceError as exc:
            if isinstance(exc, (TooLargeToDecode, DecodingBusy)):
                metrics.decoding_refused.labels(signal.entry_point, exc.reason).inc()
            elif isinstance(exc, Malformed):
                metrics.invalid.labels(exc.reason).inc()
            await abort(context, exc, signal.entry_point, metrics)
        if rejected:
            setattr(response.partial_success, signal.rejected_field, rejected)  # type: ignore[attr-defined]
            response.partial_success.error_message = admitted.error  # type: ignore[attr-defined]
        return response

    def _parse(self, raw: bytes) -> Any:
        try:
            return self._signal.request.FromString(raw)
        except DecodeError as exc:
            name = self._signal.request.DESCRIPTOR.full_name
            raise Malformed(f"the request is not a valid {name}: {exc}", reason="malformed") from exc


def add_otlp_servicers(
    server: grpc.aio.Server, authenticator: Authenticator, ingest: Ingest, decoding: DecodingBudget
) -> None:
    """Register the OTLP collector services on ``server``; their requests are decoded within
    ``decoding`` (the gateway's budget, shared with the HTTP writes)."""
    budget = decoding
    server.add_generic_rpc_handlers(tuple(
        grpc.method_handlers_generic_handler(signal.service, {
            "Export": grpc.unary_unary_rpc_method_handler(
                Exporter(signal, authenticator, ingest, budget), response_serializer=signal.response.SerializeToString
            ),
        })
        for signal in SIGNALS
    ))
