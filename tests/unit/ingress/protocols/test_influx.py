"""Influx line protocol: the cases of the reference's syntax and escaping rules."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.ingress.protocols.influx import Line, _entry, _plain, parse, parse_line
from sluice.ingress.protocols.lines import Malformed

NS = 1_000_000_000


@pytest.mark.parametrize(("text", "expected"), [
    ("m f=1", Line("m", {}, {"f": 1.0})),
    ("m,t=a f=1.5,g=-2e3 1700000000000000000", Line("m", {"t": "a"}, {"f": 1.5, "g": -2000.0}, 1_700_000_000 * NS)),
    # integers, unsigned, booleans in every spelling
    ("m i=-3i,u=18446744073709551615u", Line("m", {}, {"i": -3, "u": 2**64 - 1})),
    ("m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE",
     Line("m", {}, {**dict.fromkeys("abcde", True), **dict.fromkeys("fghij", False)})),
    # measurement escapes: comma and space (an equals sign needs none)
    (r"my\ cpu\,x=1 f=1", Line("my cpu,x=1", {}, {"f": 1.0})),
    # tag key, tag value and field key escapes: comma, equals, space
    (r"m,k\ 1=v\,1,k\=2=v\=2 f\ x\,y\=z=1", Line("m", {"k 1": "v,1", "k=2": "v=2"}, {"f x,y=z": 1.0})),
    # string fields: escaped quote and backslash; commas, spaces and equals inside are plain
    (r'm s="a \"b\" c\\d, e=f g"', Line("m", {}, {"s": 'a "b" c\\d, e=f g'})),
    ('m s=""', Line("m", {}, {"s": ""})),
    # a backslash before another character is literal
    (r"m,t=a\b f=1", Line("m", {"t": "a\\b"}, {"f": 1.0})),
])
def test_parses(text: str, expected: Line) -> None:
    assert parse_line(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    # runs of spaces before the measurement, the fields and the timestamp, and after it
    ("   m,t=a   f=1   1700  ", Line("m", {"t": "a"}, {"f": 1.0}, 1700)),
    # a string field spans lines; \n, \r and \t are escapes in it
    ('m s="one\ntwo",e="a\\nb\\tc\\rd" 5', Line("m", {}, {"s": "one\ntwo", "e": "a\nb\tc\rd"}, 5)),
    # timestamps at and before the epoch are line protocol
    ("m f=1 0", Line("m", {}, {"f": 1.0}, 0)),
    ("m f=1 -5", Line("m", {}, {"f": 1.0}, -5)),
    # a measurement may hold an equals sign or a quote, a field value an exponent without digits before
    ('m=x"y f=.5e1', Line('m=x"y', {}, {"f": 5.0})),
])
def test_parses_as_the_reference_does(text: str, expected: Line) -> None:
    assert parse_line(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("m,t=a,t=b f=1", "tag"),  # a tag key given twice
    ("\tm f=1", "measurement"),  # only spaces may precede an entry
    ("m f=1\t1", "field"),
    ("m f=1 1 2", "syntax"),
    ("# a comment with a \x01 control character", "measurement"),
    ("m u=-0u", "integer"),  # no sign on an unsigned integer, not even on zero
    ("m f=1_000", "field"),  # Go's float syntax, not line protocol's
    ("m f=0x1p3", "field"),
])
def test_refuses_as_the_reference_does(text: str, reason: str) -> None:
    with pytest.raises(Malformed) as info:
        parse_line(text)
    assert info.value.reason == reason


def test_a_multi_line_string_is_one_entry_and_a_fault_resumes_on_the_next_line() -> None:
    # an unterminated string runs to the end of the body: the rest is one malformed entry
    body = b'a s="x\ny" 1\nb f=1 2 3\nc f=2 4\n   d s="no end\ne f=3 5\n'
    parsed = parse(body)
    assert [(e.timestamp, e.WhichOneof("message")) for e in parsed.envelopes] == [(1, "event"), (4, "gauge")]
    assert json.loads(parsed.envelopes[0].event.body) == {"s": "x\ny"}
    assert [reason for reason, _ in parsed.malformed] == ["syntax", "string"]


def test_times_at_or_before_the_epoch_are_refused_as_sluice_cannot_store_them() -> None:
    parsed = parse(b"m f=1 0\nm f=1 -5\nm f=1 -1\nm f=1 1\nm f=1", "s")
    assert [e.timestamp for e in parsed.envelopes] == [NS, 0]  # 0: the time of receipt
    assert parsed.malformed == [
        ("timestamp", "timestamp 0 ns is not after the epoch (1970-01-01)"),
        ("timestamp", f"timestamp {-5 * NS} ns is not after the epoch (1970-01-01)"),
        ("timestamp", f"timestamp {-NS} ns is not after the epoch (1970-01-01)"),
    ]


@pytest.mark.parametrize(("precision", "factor"), [("ns", 1), ("us", 1_000), ("ms", 1_000_000), ("s", NS), ("m", 60 * NS), ("h", 3600 * NS)])
def test_precision_scales_the_timestamp(precision: str, factor: int) -> None:
    env = parse(b"m f=1 1700", precision).envelopes[0]
    assert env.timestamp == 1700 * factor


@pytest.mark.parametrize(("text", "reason"), [
    ("m", "field"),
    ("m ", "field"),
    (",t=a f=1", "measurement"),
    ("m,t f=1", "tag"),
    ("m,t= f=1", "tag"),
    ("m f=", "field"),
    ("m f", "field"),
    ("m f=abc", "field"),
    ("m f=1x", "field"),
    ("m f=nan", "field"),
    ('m s="open', "string"),
    ("m i=1.5i", "integer"),
    ("m i=9223372036854775808i", "integer"),
    ("m u=-1u", "integer"),
    ("m f=1 12ab", "timestamp"),
    ('m s="x"y', "syntax"),
])
def test_malformed_lines_name_their_reason(text: str, reason: str) -> None:
    with pytest.raises(Malformed) as info:
        parse_line(text)
    assert info.value.reason == reason


def test_a_bad_line_keeps_the_good_ones_and_comments_are_skipped() -> None:
    body = b"# a comment\nm f=1 1\n\nbad\r\nm,t=x s=\"hi\",n=2i 2\r\n\xff f=1\n"
    parsed = parse(body)
    assert [(e.timestamp, dict(e.tags), e.WhichOneof("message")) for e in parsed.envelopes] == [
        (1, {}, "gauge"), (2, {"t": "x"}, "gauge"), (2, {"t": "x"}, "event"),
    ]
    assert parsed.envelopes[1].gauge.metrics["m.n"].value == 2.0
    assert (parsed.envelopes[2].event.title, json.loads(parsed.envelopes[2].event.body)) == ("m", {"s": "hi"})
    assert [reason for reason, _ in parsed.malformed] == ["field", "encoding"]


@pytest.mark.parametrize(("text", "reason", "message"), [
    # A timestamp beyond int64 nanoseconds used to raise ValueError out of the parser.
    (b"m f=1 99999999999999999999", "timestamp", "timestamp '99999999999999999999' is out of range"),
    (b"m f=1 9223372036854775807", "timestamp", None),  # fits in ns...
    (b"m f=1 " + b"9" * 5000, "timestamp", "timestamp '" + "9" * 40 + "' is out of range"),
    (b"m f=1 1_000", "timestamp", "timestamp '1_000' is not an integer"),
    (b"m f=1_0", "field", "bad field value '1_0'"),
])
def test_out_of_range_and_pythonic_numbers_are_malformed(text: bytes, reason: str, message: str | None) -> None:
    parsed = parse(text + b"\nok f=1")
    if message is None:
        assert len(parsed.envelopes) == 2 and parsed.malformed == []
        with pytest.raises(Malformed, match="out of range"):  # ... but not in seconds
            parse_line(text.decode(), NS)
        return
    assert len(parsed.envelopes) == 1
    [(got, line)] = parsed.malformed
    assert got == reason and line.startswith(message), line


def _parts(*parts: str) -> st.SearchStrategy[str]:
    return st.sampled_from(parts)


# Entries near the common form, with the odd part here and there, and noise of the grammar's tokens.
ENTRIES = st.one_of(
    st.tuples(
        _parts("m", "cpu", "é", "a\\ b\\,c", "m\\=\\\\"),
        st.lists(_parts(",t=a", ",u=1", ",t=b", ",t\\=\\ x=a\\,b", ",k=v\\"), max_size=3).map("".join),
        _parts(" ", "  "),
        st.lists(_parts("f=1", "g=-2i", "h=3u", "b=t", "f=-.5e3", "g=1_0", "f=1e999", 's=""', 's="a\\"\\\\\\n\nb"',
                        "f\\ x=1", 's="\\', 'f=1"'), min_size=1, max_size=3).map(",".join),
        _parts("", " 1", " -5", " 99999999999999999999", " 9223372036854775807"), _parts("", "\n", "\r\n", "\r"),
    ).map("".join),
    st.tuples(
        _parts("m", "cpu", "é", "m=x", 'm"', "a\\,b", "#m", "9", "m\\"),
        st.lists(_parts(",t=a", ",t=b", ",u=1", ",t=", ",=a", ",t\\ x=y", ",t=a\\"), max_size=3).map("".join),
        _parts(" ", "   ", "\t", ""),
        st.lists(_parts("f=1", "f=-1.5e3", "g=1i", "g=-0u", "h=18446744073709551615u", "b=t", "b=FALSE", 's="x"',
                        "f=1_0", "f=.5", "f=1.", "f=-", "f=", "=1", "f=1e999", "f=9223372036854775808i"),
                 min_size=1, max_size=3).map(",".join),
        _parts("", " 1", " -5", " 0", "  123 ", " 99999999999999999999", " 1x", " 9223372036854775807", " 1 2"),
        _parts("", "\n", "\r\n", "\r", " \n", "\rx", "\nm f=1"),
    ).map("".join),
    st.lists(_parts("m", "f", "=", ",", " ", "1", "-", ".", "e", "i", "u", "t", '"', "\\", "#", "\r", "\n", "\t"),
             max_size=30).map("".join),
)


@settings(max_examples=1500, deadline=None)
@given(ENTRIES, st.sampled_from([1, 1_000_000_000]))
def test_the_fast_path_decodes_as_the_full_decoder(text: str, precision: int) -> None:
    fast = _plain(text, 0, precision)
    if fast is not None:
        assert repr(fast) == repr(_entry(text, 0, precision))
