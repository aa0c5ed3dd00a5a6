"""The file sink's JSON lines (``_jsonl.c``): orjson's bytes for every value a row holds, and
clear errors for what a line cannot hold."""

from __future__ import annotations

import random
import struct
from typing import Any

import orjson
import pytest

from sluice.streams._jsonl import lines
from sluice.streams.decode import LOG_COLUMNS, decode_batch
from sluice.streams.pipeline import _LINE_FIELDS
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch


def orjson_lines(dicts: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(d, option=orjson.OPT_APPEND_NEWLINE) for d in dicts)


VALUES: list[Any] = [
    "", "plain", 'quote " backslash \\ slash /', "\x00\x01\x1f\x7f\b\t\n\f\r", "é € 😀 \u2028",
    0, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1,
    0.0, -0.0, 1.5, 0.1, 1e16, 1.5e16, 1e15, 1e-4, 1e-5, -1.5e-5, 9.999999999999999e-05, 1e-6, 1e-7,
    5e-324, 1.7976931348623157e308, float("nan"), float("inf"), float("-inf"),
    True, False, None,
    {}, {"host": "h1", "route": "/r"}, {"a": [1, (2.5, None)], "b": {"c": {}}}, [], (), [[[]]],
]


def test_every_kind_of_value_is_written_as_orjson_writes_it() -> None:
    rows = [[v, i] for i, v in enumerate(VALUES)]
    name = 'value "é"\n'  # names are escaped as values are, once for all the rows
    fields = ((name, 0), ("i", 1))
    assert lines(rows, fields) == orjson_lines([{name: v, "i": i} for i, v in enumerate(VALUES)])
    assert lines([{"value": v} for v in VALUES], None) == orjson_lines([{"value": v} for v in VALUES])


def test_floats_are_written_as_orjson_writes_them() -> None:
    rng = random.Random(5)
    floats = [rng.random() * 10 ** rng.randint(-30, 30) for _ in range(20_000)]
    floats += [-rng.random() * 10 ** rng.randint(-8, 18) for _ in range(20_000)]
    floats += [rng.randint(-10**6, 10**6) / 10 ** rng.randint(0, 12) for _ in range(20_000)]
    floats += [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(20_000)]  # NaNs and subnormals too
    assert lines([[f] for f in floats], (("f", 0),)) == orjson_lines([{"f": f} for f in floats])


def test_a_decoded_log_row_gives_the_line_a_dict_of_its_fields_gave() -> None:
    env = Envelope(timestamp=1_700_000_000_123_456_789, source_id="api", instance_id="7")
    env.log.payload = 'GET /a?q="x"\n\t✓'.encode()
    env.tags.update({"host": "h1", "zone": "é"})
    (row,) = decode_batch(EnvelopeBatch(batch=[env]).SerializeToString(), "ak_1", 3, 9).logs
    fields = _LINE_FIELDS["logs"]
    assert lines([row, tuple(row)], fields) == orjson_lines([{name: row[i] for name, i in fields}] * 2)
    assert [name for name, _ in fields] == ["timestamp", "source_id", "instance_id", "type", "payload", "tags"]
    assert all(LOG_COLUMNS[i] == name for name, i in fields)


def test_no_rows_give_no_bytes() -> None:
    assert lines([], (("a", 0),)) == b""
    assert lines((), None) == b""
    assert lines([[]], ()) == b"{}\n"


@pytest.mark.parametrize(
    ("rows", "fields", "error", "message"),
    [
        ([[2**64]], (("a", 0),), OverflowError, "int outside 64 bits"),
        ([[-(2**63) - 1]], (("a", 0),), OverflowError, "int outside 64 bits"),
        ([[{1: "x"}]], (("a", 0),), TypeError, "keys must be str, not int"),
        ([[b"bytes"]], (("a", 0),), TypeError, "cannot hold bytes"),
        ([[{"a"}]], (("a", 0),), TypeError, "cannot hold set"),
        ([["\ud800"]], (("a", 0),), UnicodeEncodeError, "surrogates not allowed"),
        ([[1]], (("a", 1),), IndexError, "a row of 1 values has no value 1"),
        ([[1]], (("a", -1),), IndexError, "a row of 1 values has no value -1"),
        ([{"a": 1}], (("a", 0),), TypeError, "a row must be a list or tuple, not dict"),
        ([[1]], None, TypeError, "without fields a row must be a dict, not list"),
        ([[1]], [("a", 0)], TypeError, r"fields must be a tuple of \(name, index\) pairs"),
        ([[1]], (("a", "0"),), TypeError, r"fields must be a tuple of \(name, index\) pairs"),
        ([[1]], (("\ud800", 0),), UnicodeEncodeError, "surrogates not allowed"),  # a name, rendered once per call
        ([[1]], (("a", 2**64),), OverflowError, "too large to convert"),
        (5, None, TypeError, "rows must be a sequence"),
    ],
)
def test_what_a_line_cannot_hold_is_refused_with_its_reason(rows: Any, fields: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        lines(rows, fields)


def test_nesting_is_limited() -> None:
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than 64 deep"):
        lines([[deep]], (("a", 0),))
