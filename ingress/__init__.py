"""The gRPC gateway: authenticate, validate and publish telemetry to Kafka."""

from sluice.ingress.auth import Authenticator, TokenVerifier, issue_token
from sluice.ingress.exceptions import (
    BindError,
    IngressError,
    InvalidEnvelope,
    PermissionDenied,
    PublishFailed,
    Unauthenticated,
)
from sluice.ingress.publisher import Publisher
from sluice.ingress.server import Gateway, run_gateway
from sluice.ingress.config_service import AgentConfigServicer
from sluice.ingress.service import IngressServicer
from sluice.ingress.validate import EnvelopeValidator

__all__ = [
    "AgentConfigServicer",
    "Authenticator",
    "BindError",
    "EnvelopeValidator",
    "Gateway",
    "IngressError",
    "IngressServicer",
    "InvalidEnvelope",
    "PermissionDenied",
    "PublishFailed",
    "Publisher",
    "TokenVerifier",
    "Unauthenticated",
    "issue_token",
    "run_gateway",
]
