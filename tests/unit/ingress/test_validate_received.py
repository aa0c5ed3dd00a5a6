"""Validation of a batch with the bytes it came in: the same outcome, error for error, as
validating the decoded envelopes one by one; the envelopes' bytes forwarded as they came."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.ingress.exceptions import InvalidEnvelope
from sluice.ingress.frames import envelope_bytes, prefix
from sluice.ingress.validate import EnvelopeValidator
from sluice.settings import GatewaySettings
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch

NOW = 1_700_000_000_000_000_000
KEY = "ak_received"
LIMITS = GatewaySettings(max_tags=3, max_tag_key_bytes=6, max_tag_value_bytes=40, max_envelope_bytes=160)
VALIDATOR = EnvelopeValidator(LIMITS, clock=lambda: NOW)
HORIZON = NOW + 600 * 10**9


def outcome(envelopes: list[Envelope], received: bytes | None) -> tuple[str, str] | list[Envelope]:
    """The error (message, reason), or the accepted envelopes as decoded from what is returned."""
    try:
        encoded = VALIDATOR.validate(envelopes, KEY, first_index=7, received=received)
    except InvalidEnvelope as exc:
        return str(exc), exc.reason
    return [Envelope.FromString(e) for e in encoded]


def both_ways(data: bytes) -> None:
    """Validating ``data``'s envelopes with and without the bytes gives the same outcome."""
    with_bytes = outcome(list(EnvelopeBatch.FromString(data).batch), data)
    assert with_bytes == outcome(list(EnvelopeBatch.FromString(data).batch), None)


# Mostly valid values, so that whole batches are often valid but for one thing.
texts = st.sampled_from(["a"] * 4 + ["", "abcdef", "abcdefg", "é" * 3, "x" * 45])
timestamps = st.sampled_from([NOW] * 8 + [0, -1, 1, HORIZON, HORIZON + 1])
values = st.sampled_from([0.0, 1.5, -2.0, 1e308] * 2 + [float("nan"), float("inf"), float("-inf")])


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    env = Envelope(timestamp=draw(timestamps), source_id=draw(st.sampled_from(["app"] * 4 + [""])))
    for k, v in draw(st.dictionaries(texts, texts, max_size=4)).items():
        env.tags[k] = v
    kind = draw(st.sampled_from(["log", "counter", "gauge", "timer", "event", "span", "none"]))
    if kind == "log":
        env.log.payload = b"p" * draw(st.integers(0, 150))
    elif kind == "counter":
        env.counter.name = draw(texts)
    elif kind == "gauge":
        env.gauge.SetInParent()
        for name, value in draw(st.dictionaries(texts, values, max_size=3)).items():
            env.gauge.metrics[name].value = value
    elif kind == "timer":
        env.timer.name, env.timer.start, env.timer.stop = draw(texts), draw(st.integers(0, 3)), draw(st.integers(0, 3))
    elif kind == "event":
        env.event.title = draw(texts)
    elif kind == "span":
        span = env.span
        span.trace_id = draw(st.sampled_from([b"t" * 16, b"\0" * 16, b"t"]))
        span.span_id = draw(st.sampled_from([b"s" * 8, b"\0" * 8]))
        span.parent_span_id = draw(st.sampled_from([b"", b"p" * 8, b"p"]))
        span.name = draw(texts)
        span.start, span.end = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    return env


@settings(max_examples=600, deadline=None)
@given(st.lists(envelopes(), max_size=6))
def test_same_outcome_with_and_without_the_bytes(batch: list[Envelope]) -> None:
    both_ways(EnvelopeBatch(batch=batch).SerializeToString())


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_same_outcome_for_any_bytes_that_decode(data: bytes) -> None:
    try:
        EnvelopeBatch.FromString(data)
    except DecodeError:
        return
    both_ways(data)


def valid(n: int) -> list[Envelope]:
    out = []
    for i in range(n):
        env = Envelope(timestamp=NOW - i, source_id="app", tags={"host": "h1"})
        if i % 3 == 0:
            env.counter.name, env.counter.delta = "requests", i
        elif i % 3 == 1:
            env.gauge.metrics["cpu"].value = 0.5
        else:
            env.log.payload = b"line %d" % i
        out.append(env)
    return out


def test_valid_envelopes_are_forwarded_as_they_came() -> None:
    envs = valid(9)
    # The first one with its fields out of order: accepted, and not re-encoded.
    first = envs[0].SerializeToString()
    reordered = first[10:] + first[:10]  # the timestamp (10 bytes) last
    assert Envelope.FromString(reordered) == envs[0] and reordered != first
    data = prefix(len(reordered)) + reordered + EnvelopeBatch(batch=envs[1:]).SerializeToString()
    decoded = list(EnvelopeBatch.FromString(data).batch)
    encoded = VALIDATOR.validate(decoded, KEY, received=data)
    assert encoded == envelope_bytes(data)
    assert encoded[0] == reordered
    assert [Envelope.FromString(e) for e in encoded] == envs


def test_envelopes_to_stamp_are_stamped_and_serialized() -> None:
    envs = valid(4)
    envs[2].timestamp = 0
    envs[3].source_id = ""
    data = EnvelopeBatch(batch=envs).SerializeToString()
    decoded = list(EnvelopeBatch.FromString(data).batch)
    encoded = VALIDATOR.validate(decoded, KEY, received=data)
    assert (decoded[2].timestamp, decoded[3].source_id) == (NOW, KEY)
    assert encoded == [e.SerializeToString() for e in decoded]


@pytest.mark.parametrize(("change", "message"), [
    (lambda e: e.gauge.metrics["cpu"].__setattr__("value", float("nan")), "envelope[8].gauge.metrics['cpu'].value: NaN is not allowed"),
    (lambda e: e.counter.__setattr__("delta", 1), "envelope[8].counter.name: must not be empty"),
    (lambda e: e.gauge.metrics[""].__setattr__("value", 1.0), "envelope[8].gauge.metrics['']: name must not be empty"),
    (lambda e: e.tags.__setitem__("k" * 7, "v"), f"envelope[8].tags[{'k' * 7!r}]: key is 7 bytes, the limit is 6"),
    (lambda e: e.tags.update({"a": "1", "b": "2", "c": "3"}), "envelope[8].tags: 4 tags exceed the limit of 3"),
    (lambda e: e.log.__setattr__("payload", b"x" * 200), "envelope[8]: 233 bytes exceed the limit of 160 bytes"),
    (lambda e: e.ClearField("gauge"), "envelope[8]: no message is set (expected one of log, counter, gauge, timer, event, span)"),
    (lambda e: e.__setattr__("timestamp", HORIZON + 1), f"envelope[8].timestamp: {HORIZON + 1} is more than 600s in the future"),
])
def test_the_first_invalid_envelope_is_named(change: object, message: str) -> None:
    envs = valid(5)
    change(envs[1])  # type: ignore[operator]
    data = EnvelopeBatch(batch=envs).SerializeToString()
    both_ways(data)
    with pytest.raises(InvalidEnvelope) as info:
        VALIDATOR.validate(list(EnvelopeBatch.FromString(data).batch), KEY, first_index=7, received=data)
    assert str(info.value) == message
