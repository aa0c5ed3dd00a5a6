"""InfluxDB line protocol → envelopes.

``measurement[,tag=value...] field=value[,field=value...] [timestamp]`` per line; ``#`` starts a
comment line. Escapes follow the reference: ``\\,`` and ``\\ `` in measurements; ``\\,``, ``\\=``
and ``\\ `` in tag keys, tag values and field keys; ``\\"`` and ``\\\\`` in string fields. Fields are
floats (``1``, ``-1.5e3``), integers (``1i``), unsigned (``1u``), booleans (``t``, ``TRUE``, ...)
or double-quoted strings. The timestamp is an integer in the request's precision; without one
the line gets the time of receipt.

A line's numeric and boolean fields become one ``Gauge`` envelope whose metrics are named
``<measurement>.<field>`` (booleans as 1/0; integers beyond 2**53 lose precision as doubles);
its string fields, which are text and cannot be aggregated, become one ``Event`` titled with
the measurement whose body is the JSON object of those fields. Tags are the envelope's tags.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from sluice.ingress.protocols.lines import Malformed, digits, epoch_nanoseconds
from sluice.v1.envelope_pb2 import Envelope, GaugeValue

# v2 names precisions ns/us/ms/s; v1 /write n/u/ms/s/m/h.
PRECISIONS = {
    "ns": 1, "n": 1, "us": 1_000, "u": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
    "m": 60_000_000_000, "h": 3_600_000_000_000,
}
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(slots=True)
class Line:
    """One parsed line: measurement, tags, fields (float, int, bool or str) and timestamp (ns or 0)."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | bool | str]
    timestamp: int = 0


@dataclass(slots=True)
class Parsed:
    """The envelopes of a body or datagram and its malformed lines (reason, message)."""

    envelopes: list[Envelope] = field(default_factory=list)
    malformed: list[tuple[str, str]] = field(default_factory=list)


def _token(line: str, pos: int, stops: str, escapable: str) -> tuple[str, int]:
    """The text from ``pos`` to the first unescaped character of ``stops``, unescaped; and its end."""
    out: list[str] = []
    n = len(line)
    while pos < n:
        ch = line[pos]
        if ch == "\\" and pos + 1 < n and line[pos + 1] in escapable:
            out.append(line[pos + 1])
            pos += 2
            continue
        if ch in stops:
            break
        out.append(ch)
        pos += 1
    return "".join(out), pos


def _field_value(line: str, pos: int) -> tuple[float | int | bool | str, int]:
    if pos < len(line) and line[pos] == '"':
        out: list[str] = []
        pos += 1
        while pos < len(line):
            ch = line[pos]
            if ch == "\\" and pos + 1 < len(line) and line[pos + 1] in '"\\':
                out.append(line[pos + 1])
                pos += 2
                continue
            if ch == '"':
                return "".join(out), pos + 1
            out.append(ch)
            pos += 1
        raise Malformed("unterminated string field", reason="string")
    text, pos = _token(line, pos, ", ", "")
    if not text:
        raise Malformed("missing field value", reason="field")
    if text in _TRUE:
        return True, pos
    if text in _FALSE:
        return False, pos
    if "_" in text:  # Python's int() and float() take 1_000; line protocol does not
        raise Malformed(f"bad field value {text[:40]!r}", reason="field")
    if text[-1] in "iu":
        try:
            number = int(text[:-1])
        except ValueError:
            raise Malformed(f"bad integer field {text[:40]!r}", reason="integer") from None
        low, high = (0, 2**64 - 1) if text[-1] == "u" else _INT64
        if not low <= number <= high:
            raise Malformed(f"integer field {text!r} is out of range", reason="integer")
        return number, pos
    try:
        value = float(text)
    except ValueError:
        raise Malformed(f"bad field value {text!r}", reason="field") from None
    if not math.isfinite(value):
        raise Malformed(f"field value {text!r} is not finite", reason="field")
    return value, pos


def parse_line(line: str, precision: int = 1) -> Line:
    """One line; :class:`Malformed` with the reason when it is not line protocol."""
    measurement, pos = _token(line, 0, ", ", ", ")
    if not measurement:
        raise Malformed("missing measurement", reason="measurement")
    tags: dict[str, str] = {}
    while pos < len(line) and line[pos] == ",":
        key, pos = _token(line, pos + 1, "=, ", ",= ")
        if pos >= len(line) or line[pos] != "=" or not key:
            raise Malformed("tag is not key=value", reason="tag")
        value, pos = _token(line, pos + 1, ", ", ",= ")
        if not value:
            raise Malformed(f"tag {key!r} has no value", reason="tag")
        tags[key] = value
    if pos >= len(line) or line[pos] != " ":
        raise Malformed("missing fields", reason="field")
    fields: dict[str, float | int | bool | str] = {}
    pos += 1
    while True:
        key, pos = _token(line, pos, "=, ", ",= ")
        if pos >= len(line) or line[pos] != "=" or not key:
            raise Malformed("field is not key=value", reason="field")
        fields[key], pos = _field_value(line, pos + 1)
        if pos < len(line) and line[pos] == ",":
            pos += 1
            continue
        break
    rest = line[pos:].strip()
    timestamp = 0
    if rest:
        if pos < len(line) and line[pos] != " ":
            raise Malformed(f"unexpected {line[pos:pos + 20]!r} after the fields", reason="syntax")
        if rest.startswith("-") and rest[1:].isascii() and rest[1:].isdigit():
            raise Malformed(f"timestamp {rest[:40]!r} is not after the epoch", reason="timestamp")
        timestamp = epoch_nanoseconds(digits(rest, "timestamp") * precision, f"timestamp {rest!r}")
        if timestamp == 0:
            raise Malformed(f"timestamp {rest!r} is not after the epoch", reason="timestamp")
    return Line(measurement, tags, fields, timestamp)


def envelopes_of(line: Line) -> list[Envelope]:
    """The ``Gauge`` of a line's numbers and the ``Event`` of its strings (see the module docstring)."""
    out: list[Envelope] = []
    numbers = {k: v for k, v in line.fields.items() if not isinstance(v, str)}
    strings = {k: v for k, v in line.fields.items() if isinstance(v, str)}
    if numbers:
        env = Envelope(timestamp=line.timestamp, tags=line.tags)
        for key, value in numbers.items():
            env.gauge.metrics[f"{line.measurement}.{key}"].CopyFrom(GaugeValue(value=float(value)))
        out.append(env)
    if strings:
        env = Envelope(timestamp=line.timestamp, tags=line.tags)
        env.event.title = line.measurement
        env.event.body = json.dumps(strings, ensure_ascii=False, sort_keys=True)
        out.append(env)
    return out


def parse(body: bytes, precision: str = "ns") -> Parsed:
    """Every line of ``body``; a malformed line is recorded and skipped, the others kept."""
    scale = PRECISIONS[precision]
    out = Parsed()
    for raw in body.split(b"\n"):
        text = raw.rstrip(b"\r")
        if not text.strip() or text.lstrip().startswith(b"#"):
            continue
        try:
            out.envelopes += envelopes_of(parse_line(text.decode("utf-8"), scale))
        except UnicodeDecodeError:
            out.malformed.append(("encoding", f"line is not UTF-8: {text[:80]!r}"))
        except Malformed as exc:
            out.malformed.append((exc.reason, f"{exc.message}: {text[:200]!r}"))
    return out
