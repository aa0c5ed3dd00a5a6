"""Envelope validation: what is stamped, what is refused, and the exact message for each case."""

from __future__ import annotations

import grpc
import pytest

from sluice.ingress.exceptions import InvalidEnvelope
from sluice.ingress.validate import EnvelopeValidator
from sluice.settings import GatewaySettings, Settings
from sluice.time_bounds import TimeBounds
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch

NOW = 1_700_000_000_000_000_000
KEY = "ak_validate"


def validator(**limits: object) -> EnvelopeValidator:
    return EnvelopeValidator(GatewaySettings(**limits), clock=lambda: NOW)  # type: ignore[arg-type]


def log(**kw: object) -> Envelope:
    env = Envelope(**kw)  # type: ignore[arg-type]
    env.log.payload = b"hello"
    return env


def invalid(envelopes: list[Envelope], *, first_index: int = 0, **limits: object) -> str:
    with pytest.raises(InvalidEnvelope) as info:
        validator(**limits).validate(envelopes, KEY, first_index=first_index)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return str(info.value)


def test_valid_envelopes_are_stamped_and_serialized_once() -> None:
    counter = Envelope(timestamp=NOW - 5, source_id="app", instance_id="3", tags={"host": "h1"})
    counter.counter.name, counter.counter.delta = "requests", 2
    gauge = Envelope()
    gauge.gauge.metrics["cpu"].value = 0.5
    gauge.gauge.metrics["cpu"].unit = "ratio"
    timer = Envelope()
    timer.timer.name, timer.timer.start, timer.timer.stop = "db", 10, 10
    event = Envelope()
    event.event.title = "deployed"
    envelopes = [log(), counter, gauge, timer, event]

    encoded = validator().validate(envelopes, KEY)

    assert [e.timestamp for e in envelopes] == [NOW, NOW - 5, NOW, NOW, NOW]
    assert [e.source_id for e in envelopes] == [KEY, "app", KEY, KEY, KEY]
    assert encoded == [e.SerializeToString() for e in envelopes]
    assert Envelope.FromString(encoded[1]) == counter


def test_empty_batch_is_valid() -> None:
    assert validator().validate([], KEY) == []


def test_negative_timestamp() -> None:
    assert invalid([log(timestamp=-5)]) == "envelope[0].timestamp: -5 is negative"


def test_timestamp_too_far_in_the_future() -> None:
    horizon = NOW + 600 * 10**9
    assert validator().validate([log(timestamp=horizon)], KEY)
    assert invalid([log(timestamp=horizon + 1)]) == (
        f"envelope[0].timestamp: {horizon + 1} is more than 600s in the future"
    )
    assert invalid([log(timestamp=NOW + 2 * 10**9)], max_future_seconds=1.5) == (
        f"envelope[0].timestamp: {NOW + 2 * 10**9} is more than 1.5s in the future"
    )


def test_no_message_kind() -> None:
    assert invalid([log(), Envelope(source_id="x")]) == (
        "envelope[1]: no message is set (expected one of log, counter, gauge, timer, event, span)"
    )


def test_index_counts_from_first_index_and_names_the_first_invalid() -> None:
    assert invalid([log(), log(), log(timestamp=-1), Envelope()], first_index=1000) == (
        "envelope[1002].timestamp: -1 is negative"
    )


def test_envelope_too_large() -> None:
    env = Envelope(timestamp=NOW, source_id=KEY)
    env.log.payload = b"x" * 200
    size = len(env.SerializeToString())
    assert validator(max_envelope_bytes=size).validate([env], KEY)
    env.log.payload += b"x"
    assert invalid([env], max_envelope_bytes=size) == (
        f"envelope[0]: {size + 1} bytes exceed the limit of {size} bytes"
    )
    unstamped = Envelope(timestamp=NOW)  # the size counts what the gateway stamps in
    unstamped.log.payload = b"x" * 200
    assert invalid([unstamped], max_envelope_bytes=size - 1) == (
        f"envelope[0]: {size} bytes exceed the limit of {size - 1} bytes"
    )


def test_batch_length() -> None:
    v = validator(max_batch_envelopes=3)
    v.check_batch_length(3)
    with pytest.raises(InvalidEnvelope) as info:
        v.check_batch_length(4)
    assert str(info.value) == "batch: 4 envelopes exceed the limit of 3 per batch"
    with pytest.raises(InvalidEnvelope) as info:
        v.check_batch_length(5, where="batch[7]")
    assert str(info.value) == "batch[7]: 5 envelopes exceed the limit of 3 per batch"


def test_too_many_tags() -> None:
    tags = {f"k{i}": "v" for i in range(3)}
    assert validator(max_tags=3).validate([log(tags=tags)], KEY)
    assert invalid([log(tags=tags | {"k3": "v"})], max_tags=3) == (
        "envelope[0].tags: 4 tags exceed the limit of 3"
    )


def test_tag_key_and_value_bytes() -> None:
    limits = {"max_tag_key_bytes": 4, "max_tag_value_bytes": 6}
    assert validator(**limits).validate([log(tags={"abcd": "éééé"[:3]})], KEY)  # 6 bytes
    assert invalid([log(tags={"abcde": "v"})], **limits) == (
        "envelope[0].tags['abcde']: key is 5 bytes, the limit is 4"
    )
    assert invalid([log(tags={"ab": "éééé"})], **limits) == (
        "envelope[0].tags['ab']: value is 8 bytes, the limit is 6"
    )
    long_key = "k" * 100
    assert invalid([log(tags={long_key: "v"})], **limits) == (
        f"envelope[0].tags[{'k' * 80 + '...'!r}]: key is 100 bytes, the limit is 4"
    )


def test_tag_limits_hold_whatever_the_envelope_size() -> None:
    # Small envelopes skip the per-tag look (their size bounds every tag): the edges still hold.
    limits = {"max_tag_key_bytes": 256, "max_tag_value_bytes": 4096}
    assert validator(**limits).validate([log(tags={"k" * 256: "v" * 4096})], KEY)
    assert invalid([log(tags={"a": "v", "k" * 257: "v"})], **limits) == (
        f"envelope[0].tags[{'k' * 80 + '...'!r}]: key is 257 bytes, the limit is 256"
    )
    assert invalid([log(tags={"k": "é" * 2049})], **limits) == (
        "envelope[0].tags['k']: value is 4098 bytes, the limit is 4096"
    )


def test_counter_name() -> None:
    env = Envelope()
    env.counter.delta = 1
    assert invalid([env]) == "envelope[0].counter.name: must not be empty"


def test_gauge_without_metrics() -> None:
    env = Envelope()
    env.gauge.SetInParent()
    assert env.WhichOneof("message") == "gauge"
    assert invalid([env]) == "envelope[0].gauge.metrics: must not be empty"


def test_gauge_metric_name() -> None:
    env = Envelope()
    env.gauge.metrics[""].value = 1.0
    assert invalid([env]) == "envelope[0].gauge.metrics['']: name must not be empty"


@pytest.mark.parametrize(
    ("value", "shown"), [(float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity")]
)
def test_gauge_values_must_be_finite(value: float, shown: str) -> None:
    env = Envelope()
    env.gauge.metrics["mem"].value = 1.0
    env.gauge.metrics["cpu"].value = value
    assert invalid([log(), log(), log(), env]) == (
        f"envelope[3].gauge.metrics['cpu'].value: {shown} is not allowed"
    )


def test_timer() -> None:
    unnamed = Envelope()
    unnamed.timer.start, unnamed.timer.stop = 1, 2
    assert invalid([unnamed]) == "envelope[0].timer.name: must not be empty"
    backwards = Envelope()
    backwards.timer.name, backwards.timer.start, backwards.timer.stop = "db", 20, 10
    assert invalid([backwards]) == "envelope[0].timer.stop: 10 is before start 20"


def test_validates_a_batch_in_place() -> None:
    batch = EnvelopeBatch(batch=[log(), log(source_id="s")])
    validator().validate(batch.batch, KEY)
    assert [(e.timestamp, e.source_id) for e in batch.batch] == [(NOW, KEY), (NOW, "s")]


@pytest.mark.parametrize(("span", "message"), [
    ({"trace_id": b"\0" * 16, "span_id": b"s" * 8, "name": "x"}, "trace_id: must be 16 bytes, not all zero"),
    ({"trace_id": b"t" * 15, "span_id": b"s" * 8, "name": "x"}, "trace_id: must be 16 bytes, not all zero"),
    ({"trace_id": b"t" * 16, "span_id": b"s" * 7, "name": "x"}, "span_id: must be 8 bytes, not all zero"),
    ({"trace_id": b"t" * 16, "span_id": b"s" * 8, "parent_span_id": b"p", "name": "x"}, "parent_span_id: must be 8 bytes or empty"),
    ({"trace_id": b"t" * 16, "span_id": b"s" * 8}, "name: must not be empty"),
    ({"trace_id": b"t" * 16, "span_id": b"s" * 8, "name": "x", "start": 5, "end": 4}, "end: 4 is before start 5"),
])
def test_invalid_spans(span: dict[str, object], message: str) -> None:
    assert invalid([Envelope(span=span)]) == f"envelope[0].span.{message}"  # type: ignore[arg-type]


def test_a_valid_span() -> None:
    span = Envelope(span={"trace_id": b"t" * 16, "span_id": b"s" * 8, "name": "x", "start": 1, "end": 2})  # type: ignore[arg-type]
    assert validator().validate([span], "ak_x") == [span.SerializeToString()]


# --- every time bounded: the future, the retention of what it is stored as, durations ----------

DAY = 86_400 * 10**9
RETAINED = TimeBounds.of(Settings(clickhouse={"ttl_days_raw": 30}, worker={"max_lateness": 86400.0},  # type: ignore[arg-type]
                                  gateway={"max_duration_seconds": 3600.0}))
INT64_MAX = 2**63 - 1
SPAN = {"trace_id": b"t" * 16, "span_id": b"s" * 8, "name": "GET"}


def refused(env: Envelope) -> tuple[str, str]:
    with pytest.raises(InvalidEnvelope) as info:
        EnvelopeValidator(GatewaySettings(), bounds=RETAINED, clock=lambda: NOW).validate([env], KEY)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return str(info.value), info.value.reason


def test_bounds_come_from_the_settings() -> None:
    assert RETAINED == TimeBounds(future_ns=600 * 10**9, max_duration_ns=3600 * 10**9, raw_past_ns=30 * DAY,
                                  metric_past_ns=DAY)
    assert RETAINED.around(NOW) == (NOW - 30 * DAY, NOW - DAY, NOW + 600 * 10**9, 3600 * 10**9)
    forever = TimeBounds.of(Settings(clickhouse={"ttl_days_raw": 0}, worker={"max_lateness": 0}))  # type: ignore[arg-type]
    assert forever.around(NOW) == (1, 1, NOW + 600 * 10**9, 86_400 * 10**9)


@pytest.mark.parametrize(("env", "message", "reason"), [
    (Envelope(timer={"name": "t", "start": NOW, "stop": INT64_MAX}),
     f"envelope[0].timer.stop: {INT64_MAX} is more than 600s in the future", "timer"),
    (Envelope(timer={"name": "t", "start": NOW + 601 * 10**9, "stop": NOW + 601 * 10**9}),
     f"envelope[0].timer.start: {NOW + 601 * 10**9} is more than 600s in the future", "timer"),
    (Envelope(timer={"name": "t", "stop": NOW}), "envelope[0].timer.start: 0 is not set", "timer"),
    (Envelope(timer={"name": "t", "start": -(2**63), "stop": NOW}), f"envelope[0].timer.start: {-(2**63)} is negative", "timer"),
    (Envelope(timer={"name": "t", "start": NOW - 3601 * 10**9, "stop": NOW}),
     "envelope[0].timer: lasts 3601s, longer than 3600s (gateway.max_duration_seconds)", "timer"),
    (Envelope(timer={"name": "t", "start": NOW - DAY - 2, "stop": NOW - DAY - 1}),
     f"envelope[0].timer.stop: {NOW - DAY - 1} is older than the 86400s metric points are kept for (worker.max_lateness)",
     "retention"),
    (Envelope(timestamp=NOW - DAY - 1, counter={"name": "c"}),
     f"envelope[0].timestamp: {NOW - DAY - 1} is older than the 86400s metric points are kept for (worker.max_lateness)",
     "retention"),
    (Envelope(timestamp=NOW - 31 * DAY, log={"payload": b"old"}),
     f"envelope[0].timestamp: {NOW - 31 * DAY} is older than the retention of logs, events and spans (30 days, "
     "clickhouse.ttl_days_raw)", "retention"),
    (Envelope(timestamp=NOW - 30 * DAY - 1, event={"title": "old"}),
     f"envelope[0].timestamp: {NOW - 30 * DAY - 1} is older than the retention of logs, events and spans (30 days, "
     "clickhouse.ttl_days_raw)", "retention"),
    (Envelope(span=SPAN | {"start": NOW - 30 * DAY - 1, "end": NOW - 30 * DAY}),
     f"envelope[0].span.start: {NOW - 30 * DAY - 1} is older than the retention of logs, events and spans (30 days, "
     "clickhouse.ttl_days_raw)", "retention"),
    (Envelope(span=SPAN | {"start": NOW, "end": INT64_MAX}), f"envelope[0].span.end: {INT64_MAX} is more than 600s in the future", "span"),
    (Envelope(span=SPAN | {"end": NOW}), "envelope[0].span.start: 0 is not set", "span"),
    (Envelope(span=SPAN | {"start": NOW - 3601 * 10**9, "end": NOW}),
     "envelope[0].span: lasts 3601s, longer than 3600s (gateway.max_duration_seconds)", "span"),
])
def test_times_outside_their_bounds_are_refused_naming_the_field(env: Envelope, message: str, reason: str) -> None:
    assert refused(env) == (message, reason)


def test_times_at_their_bounds_are_accepted() -> None:
    accepted = [
        Envelope(timestamp=NOW - 30 * DAY, log={"payload": b"x"}),
        Envelope(timestamp=NOW - 30 * DAY, event={"title": "x"}),
        Envelope(timestamp=NOW - DAY, counter={"name": "c"}),
        Envelope(timestamp=NOW + 600 * 10**9, gauge={"metrics": {"cpu": {"value": 1.0}}}),
        Envelope(timer={"name": "t", "start": NOW - DAY - 3600 * 10**9, "stop": NOW - DAY}),
        Envelope(span=SPAN | {"start": NOW - 30 * DAY, "end": NOW - 30 * DAY + 3600 * 10**9}),
    ]
    validated = EnvelopeValidator(GatewaySettings(), bounds=RETAINED, clock=lambda: NOW).validate(accepted, KEY)
    assert len(validated) == 6
