"""Influx line protocol against InfluxData's reference decoder, on its own test corpus and the
cases of its decoder test (``influx_reference_cases``, which also check where decoding resumes
after a faulty entry).

``tests/data/influx_line_protocol_corpus.json`` holds the decode cases of the reference's corpus
(github.com/influxdata/line-protocol, ``lineprotocol/testdata/corpus.json`` at commit
08518c8fca06f307353bc0a0d7c9f96c2cadff93, MIT licence, whose notice the file carries). Each text
is decoded whole, as the reference's corpus test does: it is refused when any entry is, and
otherwise gives the same entries (measurement, tags, typed fields, time).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from sluice.ingress.protocols.influx import PRECISIONS, Line, decode, parse
from sluice.ingress.protocols.lines import Malformed
from tests.unit.ingress.protocols.influx_reference_cases import CASES

CORPUS = Path(__file__).parents[3] / "data" / "influx_line_protocol_corpus.json"

# Texts the reference accepts that Sluice refuses by its documented limits: an envelope's time is
# after the epoch (the README's Influx mapping lists this). The gateway's validation, which every
# envelope passes, then also refuses times beyond gateway.max_future_seconds (as for the corpus's
# 9223372036854775806) and older than worker.max_lateness or clickhouse.ttl_days_raw.
AT_OR_BEFORE_THE_EPOCH = {
    "0ca29e2594d6ab9e398bb798a31fc538",  # cpu value=1 -9223372036854775806
    "24152b90d5366cb2bd12ef6ae61f6e03",  # cpu value=42 0
    "63bf641fc07a620976c195588a3c5ed7",  # cpu,os=serverA,re=eas true=true,... 000000
    "6da69703255f375c6e548939529297e2",  # cpu,host=A,region=us-east str="foo \" bar" 000000000
    "7529ba9d57539713e2f34ef8157849e0",  # cpu value=42 0\n
    "8205429124ea6e42d3775650114505d0",  # u e=1 -9
    "8cfb7000e65db62d8c8007e0624816e8",  # cpu value=42 0
    "b580f5d3aa084dd9eb1c9235745bbbb4",  # cpu value=1 -9223372036854775806
    "dbb05362bfad2ed5693847e9dbb9f50c",  # cpu value=42 0\n
    "f3b6237a6505f63409a566553c622272",  # cpu value=1 -1
    "fae5598e8cb33c7b5ca453dabe7d1f1a",  # cpu value=1 -1
}


def _typed(value: float | int | bool | str) -> tuple[str, Any]:
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, int):
        return "int", value  # Sluice keeps integers and unsigned integers alike as int
    return ("float" if isinstance(value, float) else "string"), value


def _expected(entry: list[Any], default: int, scale: int) -> tuple[Any, ...]:
    name, tags, fields, time = entry
    return (
        name,
        sorted(map(tuple, tags)),
        [(key, "int" if kind == "uint" else kind, value) for key, kind, value in fields],
        None if time == default - default % scale else time,
    )


def _decoded(line: Line) -> tuple[Any, ...]:
    return (
        line.measurement,
        sorted(line.tags.items()),
        [(key, *_typed(value)) for key, value in line.fields.items()],
        line.timestamp,
    )


def _cases() -> list[tuple[str, bytes, str, int, list[Any] | None]]:
    cases = json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]
    return [(key, base64.b64decode(text["binary"]) if isinstance(text, dict) else text.encode(), precision, default, expected)
            for key, text, precision, default, expected in cases]


def test_the_corpus_holds_the_reference_cases() -> None:
    cases = _cases()
    assert len(cases) == 6615
    assert sum(expected is not None for *_, expected in cases) == 395


def test_sluice_decodes_every_corpus_case_as_the_reference_does() -> None:
    differences: list[tuple[Any, ...]] = []
    for key, body, precision, default, expected in _cases():
        decoded = list(decode(body, PRECISIONS[precision]))
        if expected is None:
            if not any(isinstance(entry, Malformed) for entry in decoded):
                differences.append((key, body, "accepted", [_decoded(e) for e in decoded if isinstance(e, Line)]))
            continue
        refused = [entry.message for entry in decoded if isinstance(entry, Malformed)]
        if refused:
            differences.append((key, body, "refused", refused))
            continue
        scale = PRECISIONS[precision]
        got = [_decoded(e) for e in decoded if isinstance(e, Line)]
        want = [_expected(entry, default, scale) for entry in expected]
        if got != want:
            differences.append((key, body, "differs", got, want))
    assert differences == []


def test_sluice_stores_what_the_reference_accepts_but_for_its_documented_limits() -> None:
    refused = {}
    for key, body, precision, _, expected in _cases():
        if expected is not None and (malformed := parse(body, precision).malformed):
            refused[key] = malformed
    assert {key: [reason for reason, _ in why] for key, why in refused.items()} == {
        key: ["timestamp"] for key in AT_OR_BEFORE_THE_EPOCH
    }


@pytest.mark.parametrize(("name", "text", "precision", "expected"), CASES, ids=[case[0] for case in CASES])
def test_sluice_decodes_the_reference_decoder_cases_entry_by_entry(
    name: str, text: str, precision: str, expected: list[Line | None]
) -> None:
    decoded = decode(text.encode(), PRECISIONS[precision])
    assert [None if isinstance(entry, Malformed) else _decoded(entry) for entry in decoded] == [
        None if entry is None else _decoded(entry) for entry in expected
    ]
