r"""InfluxDB line protocol → envelopes, decoded as InfluxData's reference decoder does.

``measurement[,tag=value...] field=value[,field=value...] [timestamp]`` per entry; runs of spaces
may precede an entry and separate its sections; blank lines and ``#`` comment lines are skipped.
Measurements, tag keys and values and field keys take any printable character but their
separators, escaped with a backslash: ``\,`` and ``\ `` in measurements, also ``\=`` in tag keys,
tag values and field keys; a backslash before any other character is literal. Fields are floats
(``1``, ``-1.5e3``), integers (``1i``), unsigned (``1u``), booleans (``t``, ``TRUE``, ...) or
double-quoted strings, which may span lines and take ``\"``, ``\\``, ``\n``, ``\r`` and ``\t``.
The timestamp is a signed integer in the request's precision; without one the entry gets the
time of receipt. An entry naming a tag key twice is refused. Go's float syntax, which the
reference uses, also takes ``1_000`` and ``0x1p3``; like InfluxDB, Sluice refuses them.

Sluice refuses what it cannot store: :func:`parse` a timestamp at or before the epoch, the gateway
(as for every envelope) times beyond ``gateway.max_future_seconds`` ahead or older than it keeps.

An entry's numeric and boolean fields become one ``Gauge`` envelope whose metrics are named
``<measurement>.<field>`` (booleans as 1/0; integers beyond 2**53 lose precision as doubles);
its string fields, which are text and cannot be aggregated, become one ``Event`` titled with
the measurement whose body is the JSON object of those fields. Tags are the envelope's tags.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from sluice.ingress.protocols.lines import Malformed
from sluice.v1.envelope_pb2 import Envelope, GaugeValue

# v2 names precisions ns/us/ms/s; v1 /write n/u/ms/s/m/h.
PRECISIONS = {
    "ns": 1, "n": 1, "us": 1_000, "u": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
    "m": 60_000_000_000, "h": 3_600_000_000_000,
}
_BOOLS = {
    "t": True, "T": True, "true": True, "True": True, "TRUE": True,
    "f": False, "F": False, "false": False, "False": False, "FALSE": False,
}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1

# The tokens, possessive so that an escape is never split to end a token early.
_MEASUREMENT_TEXT = r"[^, \\\x00-\x1f\x7f]*+(?:\\[ ,]?+[^, \\\x00-\x1f\x7f]*+)*+"
_KEY_TEXT = r"[^,= \\\x00-\x1f\x7f]*+(?:\\[,= ]?+[^,= \\\x00-\x1f\x7f]*+)*+"  # tag keys and values, field keys
_STRING_TEXT = r'[^"\\]*+(?:\\.[^"\\]*+)*+'  # up to the closing quote (with DOTALL)
_MEASUREMENT = re.compile(_MEASUREMENT_TEXT)
_KEY = re.compile(_KEY_TEXT)
_STRING = re.compile(_STRING_TEXT, re.DOTALL)
_VALUE = re.compile(r"[^, \r\n]*")
_TIME = re.compile(r"[-0-9]*")
_SPACES = re.compile(r" *")
# Spaces, blank lines and comments (printable text to the end of the line) before an entry.
_BLANK = re.compile(r"(?: *(?:\r?\n|#[^\x00-\x1f\x7f]*+(?:\r?\n|\r?\Z)))*+ *(?:\r\Z)?")
_FLOAT = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SIGNED = re.compile(r"-?[0-9]+")
_STRING_ESCAPE = re.compile(r'\\([\\"nrt])')
_STRING_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
# The common entry, without faults, a field value to unescape or a measurement starting oddly,
# decoded in one match (see _plain); its tags and fields are then split by _TAG and _FIELD.
_TOKEN = rf"(?=[^,= \x00-\x1f\x7f]){_KEY_TEXT}"  # not empty
_FIELD_TEXT = rf'{_TOKEN}=(?:"{_STRING_TEXT}"|[^,= \\"\x00-\x1f\x7f]++)'
_PLAIN = re.compile(
    rf"((?=[^, #\x00-\x1f\x7f]){_MEASUREMENT_TEXT})((?:,{_TOKEN}={_TOKEN})*+) ++({_FIELD_TEXT}(?:,{_FIELD_TEXT})*+)"
    r"(?: ++(-?[0-9]++))? *+(?:\r?\n|\r?\Z)",
    re.DOTALL,
)
_TAG = re.compile(rf",({_TOKEN})=({_TOKEN})")
_FIELD = re.compile(rf'({_TOKEN})=(?:"({_STRING_TEXT})"|([^,= \\"\x00-\x1f\x7f]++)),?', re.DOTALL)
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, kept by surrogateescape


@dataclass(slots=True)
class Line:
    """One entry: measurement, tags, fields (float, int, bool or str) and timestamp (ns; None
    when the entry has none)."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | bool | str]
    timestamp: int | None = None


@dataclass(slots=True)
class Parsed:
    """The envelopes of a body or datagram and its malformed lines (reason, message)."""

    envelopes: list[Envelope] = field(default_factory=list)
    malformed: list[tuple[str, str]] = field(default_factory=list)


def _end(token: re.Pattern[str], text: str, pos: int) -> int:
    """Where ``token``, which also matches the empty string, ends when it starts at ``pos``."""
    match = token.match(text, pos)
    return match.end() if match else pos


def _unescape_measurement(text: str) -> str:
    # As a backslash escapes no backslash here, replacing pair by pair undoes escapes one by one.
    return text.replace("\\,", ",").replace("\\ ", " ")


def _unescape_key(text: str) -> str:
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


def _unescape_string(match: re.Match[str]) -> str:
    return _STRING_ESCAPES[match[1]]


def _value(key: str, text: str) -> float | int | bool:
    """The value of a field that is not a string."""
    boolean = _BOOLS.get(text)
    if boolean is not None:
        return boolean
    suffix = text[-1]
    if suffix == "i" or suffix == "u":
        if not _SIGNED.fullmatch(text, 0, len(text) - 1) or suffix == "u" and text[0] == "-":
            raise Malformed(f"bad integer field {key}={text[:40]}", reason="integer")
        number = int(text[:-1])
        if not (0 <= number <= _UINT64_MAX if suffix == "u" else _INT64_MIN <= number <= _INT64_MAX):
            raise Malformed(f"integer field {key}={text[:40]} is out of range", reason="integer")
        return number
    if not _FLOAT.fullmatch(text):
        raise Malformed(f"bad field value {text[:40]!r}", reason="field")
    real = float(text)
    if not math.isfinite(real):
        raise Malformed(f"field value {text[:40]!r} is out of range", reason="field")
    return real


def _timestamp(text: str, precision: int) -> int:
    if not _SIGNED.fullmatch(text):
        raise Malformed(f"timestamp {text[:40]!r} is not an integer", reason="timestamp")
    if len(text) > 20 or not _INT64_MIN <= int(text) * precision <= _INT64_MAX:
        raise Malformed(
            f"timestamp {text[:40]!r} is out of range (nanoseconds since the epoch must fit in int64)",
            reason="timestamp",
        )
    return int(text) * precision


def _plain(text: str, pos: int, precision: int) -> tuple[Line, int] | None:
    """The entry at ``pos`` if it is a common one (see ``_PLAIN``), else None."""
    match = _PLAIN.match(text, pos)
    if match is None:
        return None
    measurement, tag_text, field_text, time_text = match.groups()
    if "\\" in measurement:
        measurement = _unescape_measurement(measurement)
    tags: dict[str, str] = {}
    if tag_text:
        pairs = _TAG.findall(tag_text)
        if "\\" in tag_text:
            pairs = [(_unescape_key(key), _unescape_key(value)) for key, value in pairs]
        tags = dict(pairs)
        if len(tags) != len(pairs):
            return None  # a tag key given twice
    fields: dict[str, float | int | bool | str] = {}
    try:
        for key, string, value in _FIELD.findall(field_text):
            if "\\" in key:
                key = _unescape_key(key)
            if value:
                fields[key] = _value(key, value)
            else:
                fields[key] = _STRING_ESCAPE.sub(_unescape_string, string) if "\\" in string else string
        timestamp = None if time_text is None else _timestamp(time_text, precision)
    except Malformed:
        return None
    return Line(measurement, tags, fields, timestamp), match.end()


def _entry(text: str, pos: int, precision: int) -> tuple[Line | Malformed, int]:
    """The entry at ``pos`` (or why it is not one) and where the next may begin."""
    n = len(text)
    try:
        end = _end(_MEASUREMENT, text, pos)
        if end == pos or text[pos] == "#":
            raise Malformed(f"no measurement at {text[pos:pos + 1]!r}", reason="measurement")
        measurement = text[pos:end]
        if "\\" in measurement:
            measurement = _unescape_measurement(measurement)
        pos = end
        tags: dict[str, str] = {}
        while pos < n and text[pos] == ",":
            end = _end(_KEY, text, pos + 1)
            if end == pos + 1 or end >= n or text[end] != "=":
                raise Malformed("tag is not key=value", reason="tag")
            key = text[pos + 1:end]
            pos = _end(_KEY, text, end + 1)
            if pos == end + 1:
                raise Malformed(f"tag {key!r} has no value", reason="tag")
            value = text[end + 1:pos]
            if "\\" in key:
                key = _unescape_key(key)
            if key in tags:
                raise Malformed(f"tag key {key!r} is given twice", reason="tag")
            tags[key] = _unescape_key(value) if "\\" in value else value
        if pos >= n or text[pos] != " ":
            raise Malformed("missing fields", reason="field")
        pos = _end(_SPACES, text, pos)
        fields: dict[str, float | int | bool | str] = {}
        while True:
            end = _end(_KEY, text, pos)
            if end == pos or end >= n or text[end] != "=":
                raise Malformed("field is not key=value", reason="field")
            key = text[pos:end]
            if "\\" in key:
                key = _unescape_key(key)
            pos = end + 1
            if pos < n and text[pos] == '"':
                end = _end(_STRING, text, pos + 1)
                if end >= n:
                    pos = n  # the string runs to the end of the input, as the reference reads it
                    raise Malformed(f"string field {key!r} has no closing quote", reason="string")
                string = text[pos + 1:end]
                fields[key] = _STRING_ESCAPE.sub(_unescape_string, string) if "\\" in string else string
                pos = end + 1
            else:
                end = _end(_VALUE, text, pos)
                if end == pos:
                    raise Malformed(f"field {key!r} has no value", reason="field")
                fields[key] = _value(key, text[pos:end])
                pos = end
            if pos < n and text[pos] == ",":
                pos += 1
                continue
            break
        timestamp = None
        if pos < n and text[pos] == " ":
            pos = _end(_SPACES, text, pos)
            end = _end(_VALUE, text, pos)
            if end > pos:
                timestamp = _timestamp(text[pos:end], precision)
                pos = _end(_SPACES, text, end)
        if pos >= n:
            return Line(measurement, tags, fields, timestamp), n
        if text[pos] == "\n" or pos == n - 1 and text[pos] == "\r":
            return Line(measurement, tags, fields, timestamp), pos + 1
        if text.startswith("\r\n", pos):
            return Line(measurement, tags, fields, timestamp), pos + 2
        raise Malformed(f"unexpected {text[pos:pos + 20]!r} at the end of the line", reason="syntax")
    except Malformed as exc:
        resume = text.find("\n", pos)  # from the fault, past any complete multi-line string before it
        return exc, n if resume < 0 else resume + 1


def decode(body: bytes, precision: int = 1) -> Iterator[Line | Malformed]:
    """Every entry of ``body`` in order, with its timestamp in ns; a :class:`Malformed` naming the
    fault and the line in place of an entry that is not line protocol, decoding resuming on the
    next line."""
    try:
        text, undecodable = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, undecodable = body.decode("utf-8", "surrogateescape"), True
    pos, n = 0, len(text)
    while (pos := _end(_BLANK, text, pos)) < n:
        start = pos
        line, pos = _plain(text, pos, precision) or _entry(text, pos, precision)
        if isinstance(line, Malformed):
            shown = text[start:pos].rstrip("\r\n")[:200].encode("utf-8", "surrogateescape")
            yield Malformed(f"{line.message}: {shown!r}", reason=line.reason)
        elif undecodable and _UNDECODABLE.search(text, start, pos):
            shown = text[start:pos].rstrip("\r\n")[:80].encode("utf-8", "surrogateescape")
            yield Malformed(f"line is not UTF-8: {shown!r}", reason="encoding")
        else:
            yield line


def parse_line(line: str, precision: int = 1) -> Line:
    """The one entry of ``line``; :class:`Malformed` with the reason when it is not line protocol."""
    entries = list(decode(line.encode("utf-8", "surrogateescape"), precision))
    if len(entries) != 1:
        raise Malformed(f"{len(entries)} entries in {line[:200]!r}", reason="syntax")
    if isinstance(entries[0], Malformed):
        raise entries[0]
    return entries[0]


def envelopes_of(line: Line) -> list[Envelope]:
    """The ``Gauge`` of a line's numbers and the ``Event`` of its strings (see the module docstring)."""
    out: list[Envelope] = []
    timestamp = line.timestamp or 0
    numbers = {k: v for k, v in line.fields.items() if not isinstance(v, str)}
    strings = {k: v for k, v in line.fields.items() if isinstance(v, str)}
    if numbers:
        env = Envelope(timestamp=timestamp, tags=line.tags)
        for key, value in numbers.items():
            env.gauge.metrics[f"{line.measurement}.{key}"].CopyFrom(GaugeValue(value=float(value)))
        out.append(env)
    if strings:
        env = Envelope(timestamp=timestamp, tags=line.tags)
        env.event.title = line.measurement
        env.event.body = json.dumps(strings, ensure_ascii=False, sort_keys=True)
        out.append(env)
    return out


def parse(body: bytes, precision: str = "ns") -> Parsed:
    """Every entry of ``body``; a malformed one, or one Sluice cannot store (a timestamp at or
    before the epoch: envelope times are positive), is recorded and skipped, the others kept."""
    out = Parsed()
    for line in decode(body, PRECISIONS[precision]):
        if isinstance(line, Malformed):
            out.malformed.append((line.reason, line.message))
        elif line.timestamp is not None and line.timestamp <= 0:
            out.malformed.append(("timestamp", f"timestamp {line.timestamp} ns is not after the epoch (1970-01-01)"))
        else:
            out.envelopes += envelopes_of(line)
    return out
