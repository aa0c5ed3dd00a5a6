"""statsd / DogStatsD lines: types, sample rates, gauge deltas, sets, tags, timestamps, bad lines."""

from __future__ import annotations

import pytest
from google.protobuf.json_format import MessageToDict

from sluice.ingress.protocols.statsd import StatsdParser

NOW = 1_700_000_000_000_000_000


def parse(data: bytes, parser: StatsdParser | None = None) -> tuple[list[dict[str, object]], list[str]]:
    parsed = (parser or StatsdParser(clock=lambda: NOW)).parse(data)
    return [MessageToDict(e) for e in parsed.envelopes], [reason for reason, _ in parsed.malformed]


@pytest.mark.parametrize(("line", "expected"), [
    (b"hits:1|c", {"counter": {"name": "hits", "delta": "1"}}),
    (b"hits:3|c|@0.5", {"counter": {"name": "hits", "delta": "6"}}),
    (b"hits:1|c|@0.3", {"counter": {"name": "hits", "delta": "3"}}),  # 3.33 rounded
    (b"hits:2.5|c", {"counter": {"name": "hits", "delta": "2"}}),  # round half to even
    (b"temp:-4.5|g", {"gauge": {"metrics": {"temp": {"value": -4.5}}}}),
    (b"db:12.5|ms", {"timer": {"name": "db", "start": str(NOW - 12_500_000), "stop": str(NOW)}}),
    (b"db:12|ms|@0.1", {"timer": {"name": "db", "start": str(NOW - 12_000_000), "stop": str(NOW)}}),
    (b"size:3|h", {"gauge": {"metrics": {"size": {"value": 3.0}}}}),
    (b"size:3|d", {"gauge": {"metrics": {"size": {"value": 3.0}}}}),
    (b"a.b-c_d:1|c|#env:prod,canary,url:http://x", {
        "tags": {"env": "prod", "canary": "", "url": "http://x"}, "counter": {"name": "a.b-c_d", "delta": "1"}}),
    (b"hits:1|c|#k:v|@0.5|T1700000001|c:abc|card:low", {
        "timestamp": str(1_700_000_001 * 10**9), "tags": {"k": "v"}, "counter": {"name": "hits", "delta": "2"}}),
])
def test_one_line(line: bytes, expected: dict[str, object]) -> None:
    assert parse(line) == ([expected], [])


def test_gauge_deltas_apply_to_the_last_value_of_the_same_series() -> None:
    parser = StatsdParser(clock=lambda: NOW)
    values, _ = parse(b"g:10|g\ng:+5|g\ng:-20|g\ng:-1|g|#x:1\ng:3|g", parser)
    assert [v["gauge"]["metrics"]["g"]["value"] for v in values] == [10.0, 15.0, -5.0, -1.0, 3.0]  # type: ignore[index]
    values, _ = parse(b"g:+1|g", parser)  # the state outlives the datagram
    assert values[0]["gauge"] == {"metrics": {"g": {"value": 4.0}}}


def test_gauge_state_is_bounded() -> None:
    parser = StatsdParser(max_gauges=2, clock=lambda: NOW)
    parse(b"a:1|g\nb:1|g\nc:1|g", parser)
    values, _ = parse(b"a:+1|g\nc:+1|g", parser)  # a was evicted
    assert [list(v["gauge"]["metrics"].values())[0]["value"] for v in values] == [1.0, 2.0]  # type: ignore[index,union-attr]


def test_sets_count_distinct_members_per_series_in_the_datagram() -> None:
    values, _ = parse(b"u:ann|s\nu:bob|s\nu:ann|s\nu:ann|s|#t:1\nv:1:2:1|s")
    assert values == [
        {"gauge": {"metrics": {"u": {"value": 2.0}}}},
        {"tags": {"t": "1"}, "gauge": {"metrics": {"u": {"value": 1.0}}}},
        {"gauge": {"metrics": {"v": {"value": 2.0}}}},
    ]


def test_several_values_in_one_line() -> None:
    values, _ = parse(b"h:1:2.5|h")
    assert [v["gauge"] for v in values] == [{"metrics": {"h": {"value": 1.0}}}, {"metrics": {"h": {"value": 2.5}}}]


@pytest.mark.parametrize(("line", "reason"), [
    (b"nocolon", "syntax"),
    (b":1|c", "syntax"),
    (b"x:1", "syntax"),
    (b"x:1|q", "type"),
    (b"x:abc|c", "value"),
    (b"x:inf|g", "value"),
    (b"x:1|c|@0", "sample_rate"),
    (b"x:1|c|@1.5", "sample_rate"),
    (b"x:1|c|@abc", "value"),
    (b"x:-1|c", "negative_counter"),
    (b"x:-1|ms", "negative_timer"),
    (b"x:1|c|#:v", "tag"),
    (b"x:1|c|Tsoon", "timestamp"),
    (b"x:1|c|zzz", "syntax"),
    (b"\xff:1|c", "encoding"),
])
def test_malformed_lines(line: bytes, reason: str) -> None:
    assert parse(line) == ([], [reason])


def test_a_bad_line_never_drops_the_good_lines_of_its_datagram() -> None:
    values, reasons = parse(b"a:1|c\nbroken\n\nb:2|c\r\nc:x|g\nd:3|c\n")
    assert [v["counter"]["name"] for v in values] == ["a", "b", "d"]  # type: ignore[index]
    assert reasons == ["syntax", "value"]


@pytest.mark.parametrize(("line", "reason", "message"), [
    # Values that do not fit the envelope's integer fields used to raise ValueError out of the parser.
    (b"a:1|c|@1e-300", "value", "counter value 1e+300 is out of range (uint64)"),
    (b"a:1e300|c", "value", "counter value 1e+300 is out of range (uint64)"),
    (b"a:1e300|ms", "value", "timer value 1e+300 ms starts before the epoch"),
    (b"a:1|c|T99999999999999999999", "timestamp", "timestamp 'T99999999999999999999' is out of range"),
    (b"a:1|c|T" + b"9" * 5000, "timestamp", "timestamp T '" + "9" * 40 + "' is out of range"),
    ("a:1|c|T٣".encode(), "timestamp", "timestamp T '٣' is not an integer"),  # not an ASCII digit
])
def test_out_of_range_values_are_malformed_lines(line: bytes, reason: str, message: str) -> None:
    parsed = StatsdParser(clock=lambda: NOW).parse(line + b"\nok:1|c")
    assert len(parsed.envelopes) == 1
    [(got, text)] = parsed.malformed
    assert got == reason and text.startswith(message), text
