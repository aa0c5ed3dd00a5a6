"""The wire-level fast path (``EnvelopeValidator.forward``, ``_scan.c``) against the one-by-one
path (``EnvelopeValidator.validate`` on decoded envelopes): whatever the fast path forwards, the
slow path accepts unchanged; whatever canonical batch the slow path accepts unchanged, the fast
path forwards; everything else is left to the slow path, which words the error."""

from __future__ import annotations

import struct

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.ingress._scan import scan, source_ids
from sluice.ingress.exceptions import InvalidEnvelope
from sluice.ingress.frames import envelope_bytes, frame_records, prefix
from sluice.ingress.validate import EnvelopeValidator
from sluice.settings import GatewaySettings
from sluice.time_bounds import DAY_NS, TimeBounds
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch

NOW = 1_700_000_000_000_000_000
KEY = "ak_received"
LIMITS = GatewaySettings(
    max_tags=3, max_tag_key_bytes=6, max_tag_value_bytes=40, max_envelope_bytes=160, max_batch_envelopes=5
)
# Logs, events and spans kept 30 days, metric points 1 day; timers and spans last at most an hour.
BOUNDS = TimeBounds(future_ns=600 * 10**9, max_duration_ns=3600 * 10**9, raw_past_ns=30 * DAY_NS, metric_past_ns=DAY_NS)
VALIDATOR = EnvelopeValidator(LIMITS, bounds=BOUNDS, clock=lambda: NOW)
HORIZON = NOW + 600 * 10**9
RAW_FROM, METRIC_FROM, HOUR = NOW - 30 * DAY_NS, NOW - DAY_NS, 3600 * 10**9


def slow(data: bytes) -> tuple[str, str] | tuple[list[bytes], bool]:
    """The one-by-one path: the error (message, reason), or the encoded envelopes and whether
    validating changed (stamped) any of them."""
    batch = EnvelopeBatch.FromString(data)
    try:
        VALIDATOR.check_batch_length(len(batch.batch))
        encoded = VALIDATOR.validate(list(batch.batch), KEY, first_index=7)
    except InvalidEnvelope as exc:
        return str(exc), exc.reason
    return encoded, list(batch.batch) != list(EnvelopeBatch.FromString(data).batch)


def agree(data: bytes, *, canonical: bool) -> list[bytes] | None:
    """Check the two paths against each other on ``data`` (which decodes); the fast path's answer."""
    fast = VALIDATOR.forward(data)
    outcome = slow(data)
    if fast is not None:
        assert list(fast) == envelope_bytes(data) and len(fast) == len(envelope_bytes(data))
        assert fast.nbytes == sum(map(len, fast))
        assert isinstance(outcome[0], list) and outcome[1] is False, outcome  # accepted, nothing stamped
        assert [Envelope.FromString(e) for e in fast] == [Envelope.FromString(e) for e in outcome[0]]
    elif canonical and data:
        assert not (isinstance(outcome[0], list) and outcome[1] is False), "a valid canonical batch was not forwarded"
    return fast


# Mostly valid values, so that whole batches are often valid but for one thing.
texts = st.sampled_from(["a"] * 4 + ["", "abcdef", "abcdefg", "é" * 3, "\U0001f600", "x" * 45])
edges = [0, -1, 1, HORIZON, HORIZON + 1, -(2**63), RAW_FROM, RAW_FROM - 1, METRIC_FROM, METRIC_FROM - 1]
timestamps = st.sampled_from([NOW] * 8 + edges)
values = st.sampled_from([0.0, 1.5, -2.0, 1e308, -0.0, 5e-324] * 2 + [float("nan"), float("inf"), float("-inf")])
# Times of timers and spans: within a duration of each other and of every bound, or far off.
int64 = st.sampled_from(
    [NOW, NOW - 1, NOW - HOUR, NOW - HOUR - 1, HORIZON - HOUR] + edges + [2, 2**63 - 1] + [NOW] * 5
)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    env = Envelope(
        timestamp=draw(timestamps), source_id=draw(st.sampled_from(["app"] * 4 + ["", "é"])), instance_id=draw(texts)
    )
    for k, v in draw(st.dictionaries(texts, texts, max_size=4)).items():
        env.tags[k] = v
    kind = draw(st.sampled_from(["log", "counter", "gauge", "timer", "event", "span", "none"]))
    if kind == "log":
        env.log.payload = b"p" * draw(st.integers(0, 150))
        env.log.type = draw(st.sampled_from([0, 1, 7]))  # type: ignore[assignment]
    elif kind == "counter":
        env.counter.name = draw(texts)
        env.counter.delta, env.counter.total = draw(st.sampled_from([0, 1, 2**64 - 1])), draw(st.sampled_from([0, 5]))
    elif kind == "gauge":
        env.gauge.SetInParent()
        for name, value in draw(st.dictionaries(texts, values, max_size=3)).items():
            env.gauge.metrics[name].value = value
            env.gauge.metrics[name].unit = draw(st.sampled_from(["", "ms", "é"]))
    elif kind == "timer":
        env.timer.name, env.timer.start, env.timer.stop = draw(texts), draw(int64), draw(int64)
    elif kind == "event":
        env.event.title, env.event.body = draw(texts), draw(texts)
    elif kind == "span":
        span = env.span
        span.trace_id = draw(st.sampled_from([b"t" * 16, b"\0" * 16, b"\0" * 15 + b"t", b"t", b""]))
        span.span_id = draw(st.sampled_from([b"s" * 8, b"\0" * 8, b"", b"s" * 9]))
        span.parent_span_id = draw(st.sampled_from([b"", b"p" * 8, b"p"]))
        span.name = draw(texts)
        span.start, span.end = draw(int64), draw(int64)
        span.kind, span.status = draw(st.sampled_from([0, 2, 9])), draw(st.sampled_from([0, 2]))  # type: ignore[assignment]
        span.status_message = draw(texts)
    return env


@settings(max_examples=1500, deadline=None)
@given(st.lists(envelopes(), max_size=7))
def test_both_paths_agree_on_generated_batches(batch: list[Envelope]) -> None:
    agree(EnvelopeBatch(batch=batch).SerializeToString(), canonical=True)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_are_forwarded_only_when_the_slow_path_accepts_them_unchanged(data: bytes) -> None:
    try:
        EnvelopeBatch.FromString(data)
    except DecodeError:
        assert VALIDATOR.forward(data) is None
        return
    agree(data, canonical=False)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (numbers below 16)."""
    return bytes((number << 3 | 2,)) + prefix(len(payload))[1:] + payload


def ts(value: int) -> bytes:
    out, value = bytearray((0x08,)), value & (2**64 - 1)
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes((value,)))


def batch_of(*envelopes: bytes) -> bytes:
    return b"".join(field(1, e) for e in envelopes)


COUNTER = field(11, field(1, b"requests"))
GOOD = ts(NOW) + field(2, b"app") + COUNTER


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=12).map(lambda b: b.replace(b"\0", b"")) | st.lists(st.integers(0x80, 0xFF), max_size=6).map(bytes))
def test_a_string_is_forwarded_exactly_when_it_is_utf8(raw: bytes) -> None:
    as_source = batch_of(ts(NOW) + field(2, raw) + COUNTER)  # an empty source is stamped
    as_tag_value = batch_of(GOOD + field(4, field(1, b"k") + field(2, raw)))
    for data, accepted_if_utf8 in ((as_source, bool(raw)), (as_tag_value, True)):
        try:
            EnvelopeBatch.FromString(data)
            utf8 = True
        except DecodeError:
            utf8 = False
        assert utf8 == _is_utf8(raw)
        assert (VALIDATOR.forward(data) is not None) is (utf8 and accepted_if_utf8)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize(("name", "data"), [
    ("the timestamp twice", batch_of(ts(NOW) + GOOD)),
    ("the source twice", batch_of(GOOD + field(2, b"app"))),
    ("two members of the oneof", batch_of(GOOD + field(14, b""))),
    ("the counter twice", batch_of(GOOD + COUNTER)),
    ("an unknown envelope field", batch_of(GOOD + bytes((0xA0, 0x01, 0x05)))),  # field 20, varint
    ("an unknown batch field", batch_of(GOOD) + b"\x10\x01"),
    ("a known field of another wire type", batch_of(GOOD + b"\x19" + b"\0" * 8)),  # instance_id as fixed64
    ("a group", batch_of(GOOD + b"\xa3\x01\xa4\x01")),
    ("more tags than max_tags, even if repeated", batch_of(GOOD + field(4, field(1, b"k") + field(2, b"v")) * 4)),
])
def test_wire_level_doubts_go_to_the_slow_path(name: str, data: bytes) -> None:
    assert VALIDATOR.forward(data) is None, name
    agree(data, canonical=False)


def test_non_canonical_but_certain_encodings_are_forwarded_as_they_came() -> None:
    reordered = COUNTER + field(2, b"app") + ts(NOW)
    overlong_timestamp = b"\x08" + bytes(b | 0x80 for b in ts(NOW)[1:]) + b"\x00" + field(2, b"app") + COUNTER
    data = batch_of(reordered, overlong_timestamp, GOOD)
    forwarded = VALIDATOR.forward(data)
    assert forwarded is not None and list(forwarded) == [reordered, overlong_timestamp, GOOD]
    assert forwarded.nbytes == sum(map(len, forwarded)) and forwarded.batch == data
    assert [Envelope.FromString(e).timestamp for e in envelope_bytes(data)] == [NOW] * 3


@pytest.mark.parametrize("payload_bytes", [0, 100, 130, 20_000])
def test_a_batch_of_exactly_its_envelopes_is_kept_framed(payload_bytes: int) -> None:
    envs = [Envelope(timestamp=NOW, source_id="a", log={"payload": b"p" * (payload_bytes + i)}) for i in range(3)]
    data = EnvelopeBatch(batch=envs).SerializeToString()
    big = VALIDATOR.__class__(GatewaySettings(max_envelope_bytes=1 << 20), clock=lambda: NOW)
    forwarded = big.forward(data)
    assert forwarded is not None and forwarded.batch == data == frame_records(list(forwarded), 1 << 30)[0]
    assert forwarded.nbytes == len(data) - sum(len(prefix(len(e))) for e in forwarded)


def test_a_batch_framed_with_a_longer_length_than_needed_is_forwarded_but_not_kept() -> None:
    overlong = b"\x0a" + bytes((len(GOOD) | 0x80, 0)) + GOOD + field(1, GOOD)
    forwarded = VALIDATOR.forward(overlong)
    assert forwarded is not None and list(forwarded) == [GOOD, GOOD] and forwarded.batch is None
    assert forwarded.nbytes == 2 * len(GOOD)


@pytest.mark.parametrize(("extra", "forwarded"), [
    (field(4, field(1, b"k" * 6) + field(2, b"v" * 40)), True),  # key and value at their limits
    (field(4, field(1, b"k" * 7)), False),
    (field(4, field(2, b"v" * 41)), False),
    (field(4, b""), True),  # a tag with an empty key and value
    (field(3, b"i" * (160 - len(GOOD) - 3)), True),  # envelope at max_envelope_bytes
    (field(3, b"i" * (160 - len(GOOD) - 2)), False),
])
def test_limits(extra: bytes, forwarded: bool) -> None:
    data = batch_of(GOOD + extra)
    assert (VALIDATOR.forward(data) is not None) is forwarded
    agree(data, canonical=True)


@pytest.mark.parametrize(("timestamp", "forwarded"), [
    (METRIC_FROM, True), (HORIZON, True), (HORIZON + 1, False), (METRIC_FROM - 1, False), (1, False), (0, False),
    (-1, False), (-(2**63), False), (2**63 - 1, False),
])
def test_timestamps(timestamp: int, forwarded: bool) -> None:
    data = batch_of(ts(timestamp) + field(2, b"app") + COUNTER)
    assert (VALIDATOR.forward(data) is not None) is forwarded
    agree(data, canonical=True)


@pytest.mark.parametrize(("timestamp", "forwarded"), [
    (RAW_FROM, True), (METRIC_FROM - 1, True), (RAW_FROM - 1, False), (HORIZON + 1, False),
])
def test_log_timestamps_are_bounded_by_their_retention(timestamp: int, forwarded: bool) -> None:
    data = batch_of(ts(timestamp) + field(2, b"app") + field(10, field(1, b"line")))
    assert (VALIDATOR.forward(data) is not None) is forwarded
    agree(data, canonical=True)


@pytest.mark.parametrize(("start", "stop", "forwarded"), [
    (NOW - HOUR, NOW, True), (METRIC_FROM - HOUR, METRIC_FROM, True), (HORIZON, HORIZON, True),
    (NOW - HOUR - 1, NOW, False), (NOW, NOW - 1, False), (NOW, HORIZON + 1, False), (HORIZON + 1, HORIZON + 1, False),
    (METRIC_FROM - 2, METRIC_FROM - 1, False), (0, NOW, False), (NOW, 2**63 - 1, False), (-(2**63), NOW, False),
])
def test_timer_times(start: int, stop: int, forwarded: bool) -> None:
    env = Envelope(timestamp=NOW, source_id="app", timer={"name": "t", "start": start, "stop": stop})
    data = EnvelopeBatch(batch=[env]).SerializeToString()
    assert (VALIDATOR.forward(data) is not None) is forwarded
    agree(data, canonical=True)


@pytest.mark.parametrize(("value", "forwarded"), [
    (1.0, True), (-0.0, True), (1.7976931348623157e308, True), (5e-324, True),
    (float("nan"), False), (float("inf"), False), (float("-inf"), False),
])
def test_gauge_values(value: float, forwarded: bool) -> None:
    gauge = field(12, field(1, field(1, b"cpu") + field(2, b"\x11" + struct.pack("<d", value))))
    data = batch_of(ts(NOW) + field(2, b"app") + gauge)
    assert (VALIDATOR.forward(data) is not None) is forwarded
    agree(data, canonical=True)


def test_the_batch_limit_and_empty_batches_go_to_the_slow_path() -> None:
    assert list(VALIDATOR.forward(batch_of(*[GOOD] * 5)) or []) == [GOOD] * 5
    assert VALIDATOR.forward(batch_of(*[GOOD] * 6)) is None
    assert slow(batch_of(*[GOOD] * 6)) == ("batch: 6 envelopes exceed the limit of 5 per batch", "batch_too_large")
    assert VALIDATOR.forward(b"") is None


@pytest.mark.parametrize(("change", "message", "reason"), [
    (lambda e: e.gauge.metrics["cpu"].__setattr__("value", float("nan")), "envelope[8].gauge.metrics['cpu'].value: NaN is not allowed", "gauge"),
    (lambda e: e.counter.__setattr__("delta", 1), "envelope[8].counter.name: must not be empty", "counter"),
    (lambda e: e.gauge.metrics[""].__setattr__("value", 1.0), "envelope[8].gauge.metrics['']: name must not be empty", "gauge"),
    (lambda e: e.tags.__setitem__("k" * 7, "v"), f"envelope[8].tags[{'k' * 7!r}]: key is 7 bytes, the limit is 6", "tags"),
    (lambda e: e.tags.update({"a": "1", "b": "2", "c": "3"}), "envelope[8].tags: 4 tags exceed the limit of 3", "tags"),
    (lambda e: e.log.__setattr__("payload", b"x" * 200), "envelope[8]: 233 bytes exceed the limit of 160 bytes", "too_large"),
    (lambda e: e.ClearField("gauge"), "envelope[8]: no message is set (expected one of log, counter, gauge, timer, event, span)", "no_message"),
    (lambda e: e.__setattr__("timestamp", HORIZON + 1), f"envelope[8].timestamp: {HORIZON + 1} is more than 600s in the future", "timestamp"),
])
def test_an_invalid_envelope_is_left_to_the_slow_path_which_names_it(change: object, message: str, reason: str) -> None:
    envs = [Envelope(timestamp=NOW - i, source_id="app", tags={"host": "h1"}) for i in range(5)]
    for i, env in enumerate(envs):
        if i % 3 == 0:
            env.counter.name, env.counter.delta = "requests", i
        elif i % 3 == 1:
            env.gauge.metrics["cpu"].value = 0.5
        else:
            env.log.payload = b"line %d" % i
    data = EnvelopeBatch(batch=envs).SerializeToString()
    assert list(VALIDATOR.forward(data) or []) == envelope_bytes(data)
    change(envs[1])  # type: ignore[operator]
    data = EnvelopeBatch(batch=envs).SerializeToString()
    assert VALIDATOR.forward(data) is None
    assert slow(data) == (message, reason)


def test_source_ids_are_read_from_forwarded_envelopes() -> None:
    envs = [Envelope(timestamp=NOW, source_id=s, counter={"name": "c"}) for s in ("app", "é", "x" * 130)]
    encoded = VALIDATOR.forward(EnvelopeBatch(batch=envs).SerializeToString())
    assert encoded is not None
    assert source_ids(encoded.items()) == ["app", "é", "x" * 130]
    assert source_ids([COUNTER]) == [""]
    with pytest.raises(ValueError, match="not a serialized envelope"):
        source_ids([b"\x0a\x05ab"])


def test_scan_refuses_wrong_arguments() -> None:
    window = BOUNDS.around(NOW)
    with pytest.raises(TypeError, match="data must be bytes"):
        scan(bytearray(b""), window, 1, 1, 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"scan\(\): window must be a tuple of 4 ints"):
        scan(b"", 0, 1, 1, 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"scan\(\): window must be a tuple of 4 ints"):
        scan(b"", (1, 2, 3), 1, 1, 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tags must be >= 0"):
        scan(b"", window, 1, 1, -1, 1, 1)
    with pytest.raises(TypeError, match="takes 7 arguments"):
        scan(b"")  # type: ignore[call-arg]


SPAN = {"trace_id": b"t" * 16, "span_id": b"s" * 8, "parent_span_id": b"", "name": "GET", "start": NOW - 1, "end": NOW}


@pytest.mark.parametrize(("change", "forwarded"), [
    ({}, True), ({"parent_span_id": b"p" * 8}, True), ({"end": NOW - 1}, True),
    ({"start": RAW_FROM, "end": RAW_FROM + HOUR}, True), ({"start": RAW_FROM - 1}, False),
    ({"start": NOW - HOUR - 1}, False), ({"end": HORIZON + 1}, False), ({"start": 0, "end": 1}, False),
    ({"parent_span_id": b"p"}, False), ({"parent_span_id": b"p" * 9}, False),
    ({"trace_id": b"\0" * 16}, False), ({"trace_id": b"t" * 15}, False), ({"trace_id": b""}, False),
    ({"span_id": b"\0" * 8}, False), ({"span_id": b"s" * 7}, False), ({"name": ""}, False), ({"end": 0}, False),
])
def test_spans(change: dict[str, object], forwarded: bool) -> None:
    data = EnvelopeBatch(batch=[Envelope(timestamp=NOW, source_id="a", span=SPAN | change)]).SerializeToString()
    assert (VALIDATOR.forward(data) is not None) is forwarded
    agree(data, canonical=True)


@pytest.mark.parametrize(("message", "forwarded"), [
    ({"counter": {"name": "c"}}, True), ({"counter": {"delta": 1}}, False),
    ({"timer": {"name": "t", "start": NOW, "stop": NOW}}, True),
    ({"timer": {"name": "t", "start": NOW, "stop": NOW - 1}}, False), ({"timer": {"start": NOW - 1, "stop": NOW}}, False),
    ({"gauge": {}}, False), ({"gauge": {"metrics": {"": {"value": 1.0}}}}, False),
    ({"gauge": {"metrics": {"cpu": {}}}}, True),
    ({"log": {}}, True), ({"event": {}}, True), ({}, False),
])
def test_messages(message: dict[str, object], forwarded: bool) -> None:
    env = Envelope(timestamp=NOW, source_id="a", **message)  # type: ignore[arg-type]
    if message.get("gauge") == {}:
        env.gauge.SetInParent()
    if message.get("log") == {}:
        env.log.SetInParent()
    if message.get("event") == {}:
        env.event.SetInParent()
    data = EnvelopeBatch(batch=[env]).SerializeToString()
    assert (VALIDATOR.forward(data) is not None) is forwarded
    agree(data, canonical=True)
