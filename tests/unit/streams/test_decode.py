"""Decoding records: exact rows and points, and the wire-level decoder (``_decode.c``) against
protobuf's (``decode_with_protobuf``): the same rows and points whenever it answers, an answer
for every record of logs, events and metrics, and protobuf's error for everything it leaves."""

from __future__ import annotations

import re
from typing import Any

import pytest
from google.protobuf.message import DecodeError as ProtobufDecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.streams._decode import decode
from sluice.streams.decode import Decoded, decode_batch, decode_with_protobuf
from sluice.streams.exceptions import DecodeError
from sluice.time_bounds import UNBOUNDED, TimeBounds, Window
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch

KEY = "ak_decode"


def record(*envelopes: Envelope) -> bytes:
    return EnvelopeBatch(batch=envelopes).SerializeToString()


def test_rows_and_points_are_exact() -> None:
    data = record(
        Envelope(timestamp=5, source_id="app", instance_id="1", tags={"h": "a"}, log={"payload": b"hi\xff", "type": 1}),
        Envelope(timestamp=6, tags={"h": "b"}, counter={"name": "req", "delta": 3, "total": 2**64 - 1}),
        Envelope(timestamp=7, gauge={"metrics": {"cpu": {"unit": "%", "value": 0.5}}}),
        Envelope(timestamp=8, timer={"name": "t", "start": 1_000_000, "stop": 3_500_000}),
        Envelope(timestamp=9, timer={"name": "u"}),
        Envelope(timestamp=10, source_id="s", event={"title": "deploy", "body": "v2"}),
    )
    for decoded in (decode_batch(data, KEY, 4, 99), decode_with_protobuf(data, KEY, 4, 99)):
        assert decoded.logs == [[KEY, 5, "app", "1", "ERR", "hi\ufffd", {"h": "a"}, 4, 99, 0]]
        assert decoded.points == [
            ("req", "counter", "", {"h": "b"}, 6, 3.0, float(2**64 - 1)),
            ("cpu", "gauge", "%", {}, 7, 0.5, 0.5),
            ("t", "timer", "ms", {}, 3_500_000, 2.5, 2.5),
            ("u", "timer", "ms", {}, 9, 0.0, 0.0),  # no stop: the envelope's timestamp
        ]
        assert decoded.events == [[KEY, 10, "s", "", "deploy", "v2", {}, 4, 99, 5]]
        assert decoded.spans == []
        assert decoded.out_of_bounds == 0


def test_spans_are_decoded_by_protobuf() -> None:
    span = {"trace_id": b"t" * 16, "span_id": b"s" * 8, "name": "GET", "start": 2, "end": 5, "kind": 2}
    data = record(Envelope(timestamp=1, source_id="a", span=span))
    assert decode(data, KEY, 0, 0) is None
    assert decode_batch(data, KEY, 0, 0).spans == [[
        KEY, 2, "a", "", (b"t" * 16).hex(), (b"s" * 8).hex(), "", "GET", "SERVER", 5, 3, "UNSET", "", {}, 0, 0, 0,
    ]]


@pytest.mark.parametrize(("data", "message"), [
    (b"\x0a\x05ab", "not an EnvelopeBatch"),
    (record(Envelope(timestamp=1)), "envelope[0] has no message"),
    (b"\x0a\x04\x12\x02\xc3\x28", "not an EnvelopeBatch"),  # source_id not UTF-8
])
def test_what_does_not_decode_is_refused_by_protobuf(data: bytes, message: str) -> None:
    assert decode(data, KEY, 0, 0) is None
    with pytest.raises(DecodeError, match=re.escape(message)):
        decode_batch(data, KEY, 0, 0)


def normal(decoded: Decoded) -> tuple[Any, ...]:
    """Comparable: floats by repr (NaN), tags as sorted items, points sorted (protobuf walks a
    gauge's map in its own order)."""
    def value(v: Any) -> Any:
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, dict):
            return sorted(v.items())
        return v
    rows = [[value(v) for v in row] for row in decoded.logs + decoded.events + decoded.spans]
    return rows, sorted(repr([value(v) for v in point]) for point in decoded.points)


texts = st.sampled_from(["", "a", "host", "é", "\U0001f600", "x" * 200])
uint64 = st.sampled_from([0, 1, 2**53, 2**53 + 1, 2**63, 2**64 - 1])
int64 = st.sampled_from([0, 1, -1, 10**18, 2**62, -(2**63), 2**63 - 1])
doubles = st.sampled_from([0.0, -0.0, 1.5, 1e308, 5e-324, float("nan"), float("inf")])


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    env = Envelope(timestamp=draw(int64), source_id=draw(texts), instance_id=draw(texts))
    for k, v in draw(st.dictionaries(texts, texts, max_size=3)).items():
        env.tags[k] = v
    kind = draw(st.sampled_from(["log", "counter", "gauge", "timer", "event", "span", "none"]))
    if kind == "log":
        env.log.payload = draw(st.sampled_from([b"", b"ok", b"\xff\xfe", "é".encode()]))
        env.log.type = draw(st.sampled_from([0, 1, 5]))  # type: ignore[assignment]
    elif kind == "counter":
        env.counter.name, env.counter.delta, env.counter.total = draw(texts), draw(uint64), draw(uint64)
    elif kind == "gauge":
        env.gauge.SetInParent()
        for name, value in draw(st.dictionaries(texts, doubles, max_size=3)).items():
            env.gauge.metrics[name].value = value
            env.gauge.metrics[name].unit = draw(texts)
    elif kind == "timer":
        env.timer.name, env.timer.start, env.timer.stop = draw(texts), draw(int64), draw(int64)
    elif kind == "event":
        env.event.title, env.event.body = draw(texts), draw(texts)
    elif kind == "span":
        env.span.name = draw(texts)
    return env


def agree(data: bytes, *, canonical: bool, window: Window = UNBOUNDED) -> None:
    fast = decode(data, KEY, 2, 40, window)
    try:
        slow: Decoded | str = decode_with_protobuf(data, KEY, 2, 40, window)
    except DecodeError as exc:
        slow = str(exc)
    if fast is not None:
        assert isinstance(slow, Decoded), slow
        assert normal(Decoded(*fast)) == normal(slow) and slow.out_of_bounds == 0
        assert normal(decode_batch(data, KEY, 2, 40, window)) == normal(slow)
    else:
        if isinstance(slow, str):
            with pytest.raises(DecodeError) as info:
                decode_batch(data, KEY, 2, 40, window)
            assert str(info.value) == slow
        else:
            both = decode_batch(data, KEY, 2, 40, window)
            assert normal(both) == normal(slow) and both.out_of_bounds == slow.out_of_bounds
        if canonical:  # protobuf's own encoding of logs, events and metrics: always decoded here
            assert not all(_fast_kind(e, window) for e in EnvelopeBatch.FromString(data).batch), "left to protobuf"


def _fast_kind(env: Envelope, window: Window) -> bool:
    """Whether the wire-level decoder reads an envelope of this content: not a span, every time
    within the window (a timer forwards, at most 2**53 ns long)."""
    raw_from, metric_from, until, max_duration = window
    kind = env.WhichOneof("message")
    if kind == "timer":
        took = env.timer.stop - env.timer.start
        return 0 <= took <= min(max_duration, 2**53) and metric_from <= (env.timer.stop or env.timestamp) <= until
    if kind in ("log", "event"):
        return raw_from <= env.timestamp <= until
    return kind in ("counter", "gauge") and metric_from <= env.timestamp <= until


@settings(max_examples=1500, deadline=None)
@given(st.lists(envelopes(), max_size=6))
def test_both_decoders_agree_on_generated_records(batch: list[Envelope]) -> None:
    agree(EnvelopeBatch(batch=batch).SerializeToString(), canonical=True)


# A record taken at AT, logs kept 30 days, metric points 1 day, timers at most an hour.
AT = 1_700_000_000_000_000_000
DAY, HOUR = 86_400 * 10**9, 3_600 * 10**9
WINDOW = TimeBounds(future_ns=600 * 10**9, max_duration_ns=HOUR, raw_past_ns=30 * DAY, metric_past_ns=DAY).around(AT)
near = st.sampled_from([
    AT, AT - 1, AT - HOUR, AT - HOUR - 1, WINDOW.until, WINDOW.until + 1, WINDOW.raw_from, WINDOW.raw_from - 1,
    WINDOW.metric_from, WINDOW.metric_from - 1, 0, 2**63 - 1, -(2**63),
])


@st.composite
def bounded_envelopes(draw: st.DrawFn) -> Envelope:
    env = draw(envelopes())
    env.timestamp = draw(near)
    if env.HasField("timer"):
        env.timer.start, env.timer.stop = draw(near), draw(near)
    elif env.HasField("span"):
        env.span.start, env.span.end = draw(near), draw(near)
    return env


@settings(max_examples=1500, deadline=None)
@given(st.lists(bounded_envelopes(), max_size=6))
def test_both_decoders_agree_on_what_is_out_of_bounds(batch: list[Envelope]) -> None:
    agree(EnvelopeBatch(batch=batch).SerializeToString(), canonical=True, window=WINDOW)


@pytest.mark.parametrize(("env", "kept"), [
    (Envelope(timestamp=AT, timer={"name": "t", "start": AT, "stop": 2**63 - 1}), False),  # would never close
    (Envelope(timestamp=AT, timer={"name": "t", "start": AT - HOUR, "stop": AT}), True),
    (Envelope(timestamp=AT, timer={"name": "t", "start": AT - HOUR - 1, "stop": AT}), False),
    (Envelope(timestamp=AT, timer={"name": "t", "start": AT, "stop": AT - 1}), False),
    (Envelope(timestamp=WINDOW.until + 1, counter={"name": "c"}), False),
    (Envelope(timestamp=WINDOW.metric_from - 1, counter={"name": "c"}), False),
    (Envelope(timestamp=WINDOW.metric_from, gauge={"metrics": {"g": {"value": 1.0}}}), True),
    (Envelope(timestamp=WINDOW.raw_from - 1, log={"payload": b"old"}), False),
    (Envelope(timestamp=WINDOW.raw_from, event={"title": "old"}), True),
    (Envelope(timestamp=AT, span={"trace_id": b"t" * 16, "span_id": b"s" * 8, "start": AT, "end": 2**63 - 1}), False),
    (Envelope(timestamp=AT, span={"trace_id": b"t" * 16, "span_id": b"s" * 8, "start": AT - 1, "end": AT}), True),
])
def test_envelopes_out_of_bounds_are_dropped_and_counted(env: Envelope, kept: bool) -> None:
    good = Envelope(timestamp=AT, log={"payload": b"ok"})
    decoded = decode_batch(record(good, env, good), KEY, 0, 7, WINDOW)
    assert len(decoded.logs + decoded.events + decoded.points + decoded.spans) == (3 if kept else 2)
    assert decoded.out_of_bounds == (0 if kept else 1)
    assert [row[-1] for row in decoded.logs] == ([0, 1, 2] if env.HasField("log") and kept else [0, 2])


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_both_decoders_agree_on_any_bytes(data: bytes) -> None:
    try:
        EnvelopeBatch.FromString(data)
    except ProtobufDecodeError:
        assert decode(data, KEY, 0, 0) is None
        return
    agree(data, canonical=False)


@pytest.mark.parametrize(("name", "data"), [
    ("a repeated timestamp", b"\x0a\x06\x08\x01\x08\x02\x52\x00"),
    ("a gauge naming a metric twice", b"\x0a\x14\x62\x12" + b"\x0a\x07\x0a\x01a\x12\x02\x0a\x00" * 2),
    ("an unknown envelope field", b"\x0a\x05\xa0\x01\x05\x52\x00"),
    ("a timer longer than 2**53 ns", record(Envelope(timer={"name": "t", "start": -(2**62), "stop": 2**62}))),
    ("a timer running backwards", record(Envelope(timer={"name": "t", "start": 2, "stop": 1}))),
])
def test_doubts_go_to_protobuf(name: str, data: bytes) -> None:
    assert decode(data, KEY, 0, 0) is None, name
    agree(data, canonical=False)


def test_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="decode"):
        decode(bytearray(b""), KEY, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"decode\(\): window must be a tuple of 4 ints"):
        decode(b"", KEY, 0, 0, (1, 2))  # type: ignore[arg-type]


def test_repeated_names_and_tags_are_shared_strings_and_every_string_is_kept_exactly() -> None:
    def counter(i: int, value: str) -> Envelope:
        return Envelope(timestamp=i, source_id="app", tags={"host": value}, counter={"name": "req", "delta": 1})

    first = decode(record(counter(1, "h1"), counter(2, "h1")), KEY, 0, 0)
    again = decode(record(counter(3, "h1")), KEY, 0, 1)
    assert first is not None and again is not None
    (a, b), (c,) = first[2], again[2]
    assert a[0] is b[0] is c[0] == "req"  # one string across envelopes and records
    [(ka, va)], [(kc, vc)] = a[3].items(), c[3].items()
    assert ka is kc == "host" and va is vc == "h1"
    # More distinct strings than the cache has slots, short and long, ASCII or not: each exact.
    values = [f"v{i}" for i in range(70_000)] + ["x" * 64, "x" * 65, "é", "\x00", "", "h1"]
    decoded = []
    for i in range(0, len(values), 1000):
        got = decode(record(*(counter(j, v) for j, v in enumerate(values[i:i + 1000]))), KEY, 0, i)
        assert got is not None
        decoded += [p[3]["host"] for p in got[2]]
    assert decoded == values
    after = decode(record(counter(1, "h1"), counter(2, "h1")), KEY, 0, 99)
    assert after is not None and after[2][0][3]["host"] is after[2][1][3]["host"]  # shared again


def test_envelopes_with_the_same_tags_share_one_dict_and_others_get_their_own() -> None:
    def log(i: int, **tags: str) -> Envelope:
        return Envelope(timestamp=i, tags=tags, log={"payload": b"x"})

    def counter(i: int, **tags: str) -> Envelope:
        return Envelope(timestamp=i, tags=tags, counter={"name": "req", "delta": 1})

    first = decode(record(log(1, host="h1", zone="a"), counter(2, host="h1", zone="a"), counter(3, host="h2")), KEY, 0, 0)
    again = decode(record(counter(4, host="h1", zone="a"), log(5), counter(6)), KEY, 0, 1)
    assert first is not None and again is not None
    (log_row,), (p1, p2) = first[0], first[2]
    (p3, p5), (empty_row,) = again[2], again[0]
    assert log_row[6] is p1[3] is p3[3] == {"host": "h1", "zone": "a"}  # across streams and records
    assert p2[3] == {"host": "h2"} and p2[3] is not p1[3]
    assert empty_row[6] == p5[3] == {}
    # Tags too long to share are decoded exactly all the same, a dict each.
    long = {f"k{i}": "v" * 20 for i in range(30)}
    got = decode(record(counter(7, **long), counter(8, **long)), KEY, 0, 2)
    assert got is not None
    (a, b) = got[2]
    assert a[3] == b[3] == long and a[3] is not b[3]
