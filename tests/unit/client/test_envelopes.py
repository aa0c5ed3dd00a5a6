"""The SDK's envelope builders and its constructor checks."""

from __future__ import annotations

import grpc
import pytest

from sluice.client import (
    ClientError,
    SluiceClient,
    counter_envelope,
    event_envelope,
    gauge_envelope,
    log_envelope,
    timer_envelope,
)
from sluice.keys import InvalidAccessKey
from sluice.v1.envelope_pb2 import Counter, Envelope, Event, Gauge, GaugeValue, Log, Timer


def test_builders() -> None:
    common = {"timestamp": 7, "source_id": "app", "instance_id": "1", "tags": {"host": "h"}}
    assert log_envelope("hi", **common) == Envelope(log=Log(payload=b"hi", type=Log.OUT), **common)
    assert log_envelope(b"\xff", error=True) == Envelope(log=Log(payload=b"\xff", type=Log.ERR))
    assert counter_envelope("c", 2, total=9) == Envelope(counter=Counter(name="c", delta=2, total=9))
    assert gauge_envelope({"cpu": (0.5, "ratio"), "n": 3}) == Envelope(
        gauge=Gauge(metrics={"cpu": GaugeValue(value=0.5, unit="ratio"), "n": GaugeValue(value=3.0)})
    )
    assert timer_envelope("t", 1, 2) == Envelope(timer=Timer(name="t", start=1, stop=2))
    assert event_envelope("up", "body") == Envelope(event=Event(title="up", body="body"))


def test_client_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="^target must be host:port of a gateway, got an empty string$"):
        SluiceClient("", "ak_client", "t")
    with pytest.raises(InvalidAccessKey):
        SluiceClient("localhost:4317", "bad key", "t")
    with pytest.raises(ValueError, match="^token must not be empty"):
        SluiceClient("localhost:4317", "ak_client", "")
    with pytest.raises(ValueError, match=r"^timeout must be > 0 or None, got 0$"):
        SluiceClient("localhost:4317", "ak_client", "t", timeout=0)


def test_client_error() -> None:
    error = ClientError(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", accepted=5)
    assert (str(error), error.details, error.accepted, error.retriable) == (
        "RESOURCE_EXHAUSTED: slow down", "slow down", 5, True
    )
    assert not ClientError(grpc.StatusCode.PERMISSION_DENIED, "no").retriable
