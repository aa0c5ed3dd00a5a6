"""Which errors may be retried: one class-level ``retriable`` on the root, ``SluiceError``."""

from __future__ import annotations

import grpc

from sluice.client import ClientError
from sluice.exceptions import ConfigurationError, SluiceError
from sluice.ingress.exceptions import (
    BufferFull, InvalidEnvelope, PermissionDenied, PublishFailed, RateLimited, SpoolFull, Unauthenticated,
)
from sluice.ingress.stream_reader import StreamIdle
from sluice.kafka import KafkaUnavailable
from sluice.streams.exceptions import ClickHouseUnavailable, DecodeError, SinkError


def test_retriable_is_a_class_attribute_of_each_error() -> None:
    retriable = [KafkaUnavailable, ClickHouseUnavailable, PublishFailed, BufferFull, SpoolFull, RateLimited, StreamIdle]
    final = [SluiceError, ConfigurationError, DecodeError, SinkError, InvalidEnvelope, Unauthenticated, PermissionDenied]
    assert [c.retriable for c in retriable] == [True] * len(retriable)
    assert [c.retriable for c in final] == [False] * len(final)
    assert KafkaUnavailable("down").retriable and not SluiceError("no").retriable


def test_a_client_error_is_retriable_by_the_status_it_received() -> None:
    codes = [c for c in grpc.StatusCode if ClientError(c, "x").retriable]
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE]
