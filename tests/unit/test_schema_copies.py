"""The envelope schema is written once: the proto. The four hand-written copies (the gateway's C
scanner and validator, the worker's C and Python decoders) must agree with its descriptor, and
each reader must catch a copy that drifts (shown on mutated copies)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.schema_copies_c import decode_c, scan_c
from tests.unit.schema_copies_py import decode_py, validate_py

ROOT = Path(__file__).resolve().parents[2]
Reader = Callable[[str], list[str]]
COPIES: dict[str, Reader] = {
    "ingress/_scan.c": scan_c, "streams/_decode.c": decode_c,
    "ingress/validate.py": validate_py, "streams/decode.py": decode_py,
}


@pytest.mark.parametrize("path", sorted(COPIES))
def test_every_copy_agrees_with_the_proto(path: str) -> None:
    assert COPIES[path]((ROOT / path).read_text()) == []


@pytest.mark.parametrize(
    ("path", "before", "after", "problems"),
    [
        ("ingress/_scan.c", "[2] = {FINITE}", "[2] = {ANY_VARINT}",
         ["ingress/_scan.c GAUGE_VALUE: sluice.v1.GaugeValue.value (2) has wire type 1, not 0"]),
        ("ingress/_scan.c", ", [15] = {MESSAGE, &SPAN}", "",
         ["ingress/_scan.c ENVELOPE: sluice.v1.Envelope.span (15) is missing", "ingress/_scan.c: sluice.v1.Span has no schema"]),
        ("ingress/_scan.c", ".repeated = BIT(4)", ".repeated = BIT(3)",
         ["ingress/_scan.c ENVELOPE: repeats fields [3], the proto [4]"]),
        ("ingress/_scan.c", "f.number == 2 && f.wire == LEN", "f.number == 3 && f.wire == LEN",
         ["ingress/_scan.c source_ids(): does not read source_id (2) alone"]),
        ("streams/_decode.c", "COUNTER_WIRES[4] = {0, LEN, VARINT, VARINT}", "COUNTER_WIRES[4] = {0, LEN, FIXED64, VARINT}",
         ["streams/_decode.c COUNTER_WIRES: sluice.v1.Counter.delta (2) has wire type 0, not 1"]),
        ("streams/_decode.c", "f.number >= 10 && f.number <= 14", "f.number >= 10 && f.number <= 16",
         ["streams/_decode.c read_envelope(): sluice.v1.Envelope has no field 16"]),
        ("streams/_decode.c", "f.number == 1 && f.wire == VARINT", "f.number == 1 && f.wire == LEN",
         ["streams/_decode.c read_envelope(): sluice.v1.Envelope.timestamp (1) has wire type 0, not 2"]),
        ("streams/_decode.c", "f.number == 3 && f.wire == LEN", "f.number == 4 && f.wire == LEN",
         ["streams/_decode.c read_envelope(): field 4 is read as instance"]),
        ("streams/_decode.c", "read_fields(e->message, EVENT_WIRES", "read_fields(e->message, LOG_WIRES",
         ["streams/_decode.c add_envelope(): case 14 (event) reads it with LOG_WIRES"]),
        ("streams/_decode.c", "== 1 ? ERR : OUT", "== 2 ? ERR : OUT",
         ["streams/_decode.c: reads ERR as field 2 == 2, the proto has field 2 == 1"]),
        ("ingress/validate.py", '("start", timer.start)', '("start", timer.begin)',
         ["ingress/validate.py:{line}: sluice.v1.Timer has no field begin"]),
        ("ingress/validate.py", 'kind == "gauge"', 'kind == "gauges"',
         ["ingress/validate.py:{line}: sluice.v1.Envelope.message has no member gauges"]),
        ("ingress/validate.py", 'timer, event, span"', 'timer, event"',
         ["ingress/validate.py: KINDS is 'log, counter, gauge, timer, event', "
          "the oneof's members are 'log, counter, gauge, timer, event, span'"]),
        ("streams/decode.py", "c.delta", "c.deltas", ["streams/decode.py:{line}: sluice.v1.Counter has no field deltas"]),
        ("streams/decode.py", "sp = env.span", "sp = env.spam",
         ["streams/decode.py:{line}: sluice.v1.Envelope has no field spam"]),
        ("streams/decode.py", "envelope_pb2.Log.ERR", "envelope_pb2.Log.ERROR",
         ["streams/decode.py:{line}: sluice.v1.Log has no enum, value or type ERROR"]),
    ],
)
def test_a_copy_that_drifts_from_the_proto_fails(path: str, before: str, after: str, problems: list[str]) -> None:
    source = (ROOT / path).read_text()
    assert before in source, f"{path} no longer holds {before!r}: pick another mutation"
    line = source[: source.index(before)].count("\n") + 1
    assert COPIES[path](source.replace(before, after, 1)) == [p.format(line=line) for p in problems]


@pytest.mark.parametrize("path", sorted(COPIES))
def test_a_copy_the_reader_cannot_read_fails(path: str) -> None:
    unreadable = "/* rewritten */\n" if path.endswith(".c") else "KINDS = ''\n"
    assert COPIES[path](unreadable) != []
