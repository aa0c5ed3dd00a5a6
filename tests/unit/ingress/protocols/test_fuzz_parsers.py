"""Property-based: whatever bytes a statsd / line-protocol datagram or a remote-write body holds,
the parsers answer with envelopes and counted malformed lines (or a :class:`Malformed` body),
never with another exception; and the lines of a datagram are parsed independently."""

from __future__ import annotations

import cramjam
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.ingress.protocols import influx, remote_write
from sluice.ingress.protocols.compression import BodyTooLarge, decompress
from sluice.ingress.protocols.lines import Malformed
from sluice.ingress.protocols.statsd import StatsdParser

NOW = 1_700_000_000_000_000_000

# Bytes near the grammar (separators, digits, signs, exponents, escapes) find more than noise does.
ALPHABET = b" ,=:|@#T\"\\\n\r\t-+.eEiu0123456789abcfgmsdhnNaI_\xff\xd9\xa3"
near = st.lists(st.sampled_from([bytes([b]) for b in ALPHABET]), max_size=80).map(b"".join)
numbers = st.one_of(st.integers(), st.floats()).map(lambda n: str(n).encode())
lines = st.one_of(
    near, st.binary(max_size=80),
    st.tuples(st.sampled_from([b"m f=", b"a:", b"m f=1 ", b"a:1|c|@", b"a:1|ms|T", b"a:1|c|T", b"m f=1i "]), numbers,
              st.sampled_from([b"", b"|c", b"|ms", b"|g", b"i", b"u"])).map(b"".join),
)
datagrams = st.lists(lines, max_size=6).map(b"\n".join)


def assert_envelopes_encode(envelopes: list) -> None:  # type: ignore[type-arg]
    for env in envelopes:
        env.SerializeToString()


@settings(max_examples=500, deadline=None)
@given(datagrams)
def test_any_statsd_datagram_parses_into_envelopes_and_counted_lines(data: bytes) -> None:
    parsed = StatsdParser(clock=lambda: NOW).parse(data)
    assert_envelopes_encode(parsed.envelopes)
    assert all(reason and message for reason, message in parsed.malformed)


@settings(max_examples=500, deadline=None)
@given(datagrams, st.sampled_from(sorted(influx.PRECISIONS)))
def test_any_line_protocol_body_parses_into_envelopes_and_counted_lines(data: bytes, precision: str) -> None:
    parsed = influx.parse(data, precision)
    assert_envelopes_encode(parsed.envelopes)
    assert all(reason and message for reason, message in parsed.malformed)


@settings(max_examples=300, deadline=None)
# Without double quotes: a string field may span lines, so a quote can join one line to the next.
@given(st.lists(lines.map(lambda line: line.replace(b'"', b"")), min_size=1, max_size=5))
def test_a_datagram_parses_like_its_lines_one_by_one(parts: list[bytes]) -> None:
    whole = influx.parse(b"\n".join(parts))
    alone = [influx.parse(p) for p in parts]
    assert len(whole.malformed) == sum(len(p.malformed) for p in alone)
    assert len(whole.envelopes) == sum(len(p.envelopes) for p in alone)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda b: bytes(cramjam.snappy.compress_raw(b)))))
def test_any_remote_write_body_is_parsed_or_malformed(body: bytes) -> None:
    try:
        parsed = remote_write.parse(decompress(body, "snappy", 1 << 16, ("snappy",)))
    except (Malformed, BodyTooLarge) as exc:
        assert exc.reason in {"snappy", "protobuf", "too_large"}
        return
    assert_envelopes_encode(parsed.envelopes)
