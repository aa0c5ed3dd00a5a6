"""statsd (Etsy) and DogStatsD lines → envelopes.

``<name>:<value>[:<value>...]|<type>[|@<rate>][|#<tag>[:<value>],...][|T<unix seconds>]``, one
metric per line, several lines per datagram. Mapping:

* ``c`` counter: ``Counter`` with delta ``value / rate`` rounded to an integer (the wire counter
  is a uint64; a negative count is malformed);
* ``g`` gauge: ``Gauge``; ``+n``/``-n`` adjust the last value this listener saw of that series
  (statsd's semantics, kept per listener for up to ``max_gauges`` series);
* ``ms`` timer: ``Timer`` ending at receipt (or ``T``), lasting the value in milliseconds;
* ``h`` histogram and ``d`` distribution: ``Gauge`` points, which the windows summarize into
  count / sum / min / max;
* ``s`` set: a ``Gauge`` of the number of distinct values of the series *in the datagram*.
  Counting distinct values over a flush interval would need the listener to hold every set
  member until a timer fires, duplicating the windows; clients flush a set's members together,
  so per datagram is what one flush of theirs saw.

The sample rate scales counters only: a sampled timer or histogram value is still one value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sluice.ingress.protocols.lines import UINT64_MAX, Malformed, digits, epoch_nanoseconds
from sluice.v1.envelope_pb2 import Envelope, GaugeValue

NS = 1_000_000_000
_TYPES = frozenset({"c", "g", "ms", "h", "d", "s"})


@dataclass(slots=True)
class Parsed:
    """The envelopes of one datagram and its malformed lines (reason, message)."""

    envelopes: list[Envelope] = field(default_factory=list)
    malformed: list[tuple[str, str]] = field(default_factory=list)


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise Malformed(f"{what} {text!r} is not a number", reason="value") from None
    if not math.isfinite(value):
        raise Malformed(f"{what} {text!r} is not finite", reason="value")
    return value


def parse_tags(text: str) -> dict[str, str]:
    """DogStatsD tags ``k:v,flag`` (a tag without a value gets ``""``)."""
    tags: dict[str, str] = {}
    for item in text.split(","):
        key, _, value = item.partition(":")
        if not key:
            raise Malformed(f"tag {item!r} has no name", reason="tag")
        tags[key] = value
    return tags


class StatsdParser:
    """Parses datagrams; keeps the last value of each gauge for ``+``/``-`` adjustments."""

    def __init__(self, *, max_gauges: int = 100_000, clock: Callable[[], int] = time.time_ns) -> None:
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._max_gauges = max_gauges
        self._clock = clock

    def parse(self, datagram: bytes) -> Parsed:
        """Every line of ``datagram``; a malformed line is recorded and skipped, never the datagram."""
        out = Parsed()
        sets: dict[tuple[str, tuple[tuple[str, str], ...], int], set[str]] = {}
        now = self._clock()
        for raw in datagram.split(b"\n"):
            line = raw.strip()
            if not line:
                continue
            try:
                self._line(line.decode("utf-8"), now, out.envelopes, sets)
            except UnicodeDecodeError:
                out.malformed.append(("encoding", f"line is not UTF-8: {line[:80]!r}"))
            except Malformed as exc:
                out.malformed.append((exc.reason, f"{exc.message}: {line[:200]!r}"))
        for (name, tags, ts), members in sets.items():
            env = Envelope(timestamp=ts, tags=dict(tags))
            env.gauge.metrics[name].CopyFrom(GaugeValue(value=float(len(members))))
            out.envelopes.append(env)
        return out

    def _line(
        self, line: str, now: int, out: list[Envelope], sets: dict[tuple[str, tuple[tuple[str, str], ...], int], set[str]]
    ) -> None:
        head, *sections = line.split("|")
        name, sep, values = head.partition(":")
        if not sep or not name:
            raise Malformed("expected <name>:<value>|<type>", reason="syntax")
        if not sections:
            raise Malformed("missing |<type>", reason="syntax")
        kind = sections[0]
        if kind not in _TYPES:
            raise Malformed(f"unknown metric type {kind!r}", reason="type")
        rate, tags, ts = 1.0, {}, 0
        for section in sections[1:]:
            if section.startswith("@"):
                rate = _float(section[1:], "sample rate")
                if not 0 < rate <= 1:
                    raise Malformed(f"sample rate {rate:g} is not in (0, 1]", reason="sample_rate")
            elif section.startswith("#"):
                tags = parse_tags(section[1:])
            elif section.startswith("T"):
                ts = epoch_nanoseconds(digits(section[1:], "timestamp T") * NS, f"timestamp {section[:40]!r}")
            elif section.startswith(("c:", "e:", "card:")):
                pass  # DogStatsD container id, external data, tag cardinality
            else:
                raise Malformed(f"unknown section {section!r}", reason="syntax")
        items = tuple(sorted(tags.items()))
        stamp = ts or now
        for text in values.split(":"):
            if kind == "s":
                sets.setdefault((name, items, ts), set()).add(text)
                continue
            if kind == "g":
                value = self._gauge(name, items, text)
            else:
                value = _float(text, "value")
            env = Envelope(timestamp=ts, tags=tags)
            if kind == "c":
                count = value / rate
                if count < 0:
                    raise Malformed(f"counter value {count:g} is negative", reason="negative_counter")
                if not count <= UINT64_MAX:  # also inf, from a tiny sample rate
                    raise Malformed(f"counter value {count:g} is out of range (uint64)", reason="value")
                env.counter.name = name
                env.counter.delta = round(count)
            elif kind == "ms":
                if value < 0:
                    raise Malformed(f"timer value {value:g} is negative", reason="negative_timer")
                if value * 1_000_000 > stamp:
                    raise Malformed(f"timer value {value:g} ms starts before the epoch", reason="value")
                env.timer.name = name
                env.timer.stop = stamp
                env.timer.start = stamp - round(value * 1_000_000)
            else:
                env.gauge.metrics[name].CopyFrom(GaugeValue(value=value))
            out.append(env)

    def _gauge(self, name: str, tags: tuple[tuple[str, str], ...], text: str) -> float:
        value = _float(text, "gauge value")
        key = (name, tags)
        if text[:1] in "+-":
            value += self._gauges.get(key, 0.0)
        self._gauges.pop(key, None)
        if len(self._gauges) >= self._max_gauges:
            del self._gauges[next(iter(self._gauges))]  # the least recently set series
        self._gauges[key] = value
        return value
