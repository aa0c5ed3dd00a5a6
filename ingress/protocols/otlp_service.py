"""The OTLP/gRPC collector services on the gateway's port, authenticated like ``sluice.v1.Ingress``.

OTel exporters send the bearer token and access key as headers (``OTEL_EXPORTER_OTLP_HEADERS``
or ``headers=``), which arrive as call metadata. Items whose envelopes fail validation are
reported in the response's partial success; failures of the whole request (rate limit, Kafka)
abort the call with the native status, which OTel exporters retry when it is retryable.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb, logs_service_pb2_grpc as logs_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2 as metrics_pb,
    metrics_service_pb2_grpc as metrics_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb, trace_service_pb2_grpc as trace_grpc

from sluice.exceptions import SluiceError
from sluice.ingress.auth import Authenticator
from sluice.ingress.protocols.ingest import Ingest
from sluice.ingress.protocols.otlp import Groups, log_groups, metrics_groups, span_groups
from sluice.ingress.service import abort, authenticate

SERVICE_NAMES = (
    "opentelemetry.proto.collector.logs.v1.LogsService",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.trace.v1.TraceService",
)


class _Exporter:
    def __init__(self, authenticator: Authenticator, ingest: Ingest) -> None:
        self._authenticator = authenticator
        self._ingest = ingest

    async def _export(self, groups: Groups, context: grpc.aio.ServicerContext, entry_point: str) -> tuple[int, str]:
        """Publish the groups' envelopes; the number of groups with a rejected envelope and the first error."""
        metrics = self._ingest.metrics
        config = await authenticate(self._authenticator, context, metrics, entry_point)
        envelopes = [env for group in groups for env in group]
        try:
            admitted = await self._ingest.publish(config, envelopes, entry_point)
        except SluiceError as exc:
            await abort(context, exc, entry_point, metrics)
        if not admitted.rejected:
            return 0, ""
        rejected, index = 0, 0
        for group in groups:
            if any(i in admitted.rejected for i in range(index, index + len(group))):
                rejected += 1
            index += len(group)
        return rejected, admitted.error


R = TypeVar("R", logs_pb.ExportLogsServiceResponse, metrics_pb.ExportMetricsServiceResponse,
              trace_pb.ExportTraceServiceResponse)


def _partial(response: R, field: str, rejected: int, error: str) -> R:
    """``response`` with OTLP's partial success set when anything was rejected."""
    if rejected:
        setattr(response.partial_success, field, rejected)
        response.partial_success.error_message = error
    return response


class LogsServicer(_Exporter, logs_grpc.LogsServiceServicer):
    """``LogsService.Export``: one ``Log`` envelope per log record."""

    async def Export(
        self, request: logs_pb.ExportLogsServiceRequest, context: grpc.aio.ServicerContext
    ) -> logs_pb.ExportLogsServiceResponse:
        rejected, error = await self._export(log_groups(request.resource_logs), context, "OTLP.Logs")
        return _partial(logs_pb.ExportLogsServiceResponse(), "rejected_log_records", rejected, error)


class MetricsServicer(_Exporter, metrics_grpc.MetricsServiceServicer):
    """``MetricsService.Export``: counters and gauges per data point (see :mod:`.otlp`)."""

    async def Export(
        self, request: metrics_pb.ExportMetricsServiceRequest, context: grpc.aio.ServicerContext
    ) -> metrics_pb.ExportMetricsServiceResponse:
        rejected, error = await self._export(metrics_groups(request.resource_metrics), context, "OTLP.Metrics")
        return _partial(metrics_pb.ExportMetricsServiceResponse(), "rejected_data_points", rejected, error)


class TraceServicer(_Exporter, trace_grpc.TraceServiceServicer):
    """``TraceService.Export``: one ``Span`` envelope per span, stored in ``sluice.spans``."""

    async def Export(
        self, request: trace_pb.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_pb.ExportTraceServiceResponse:
        rejected, error = await self._export(span_groups(request.resource_spans), context, "OTLP.Traces")
        return _partial(trace_pb.ExportTraceServiceResponse(), "rejected_spans", rejected, error)


def add_otlp_servicers(server: grpc.aio.Server, authenticator: Authenticator, ingest: Ingest) -> None:
    """Register the OTLP collector services on ``server``."""
    logs_grpc.add_LogsServiceServicer_to_server(LogsServicer(authenticator, ingest), server)  # type: ignore[no-untyped-call]
    metrics_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        MetricsServicer(authenticator, ingest), server
    )
    trace_grpc.add_TraceServiceServicer_to_server(TraceServicer(authenticator, ingest), server)  # type: ignore[no-untyped-call]
