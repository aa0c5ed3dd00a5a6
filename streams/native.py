"""ClickHouse's Native format for the ClickHouse sink's blocks, encoded in C (``_native.c``) for
the column types of Sluice's tables.

clickhouse-connect's column writers are Python: building the LowCardinality dictionaries and
walking each Map and String took about a fifth of the worker's time. :func:`encode` makes the same
bytes from the same column lists (``tests/unit/streams/test_native.py`` compares them), and the
insert sends them as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sluice.streams._native import block

# By ClickHouse type (inside any SimpleAggregateFunction): the encoder's kind (see _native.c).
_KINDS = {
    "UInt32": "I", "UInt64": "Q", "Int64": "q", "Float64": "d", "String": "s", "LowCardinality(String)": "L",
    "DateTime('UTC')": "I", "DateTime64(9, 'UTC')": "q",  # the rows hold seconds and nanoseconds
    "Map(LowCardinality(String), String)": "M", "Map(String, String)": "m", "Map(Int32, UInt64)": "k",
    "Tuple(Int64, Float64)": "t",
}
_SIMPLE = re.compile(r"^SimpleAggregateFunction\(\w+, (.*)\)$")
_ENUM8 = re.compile(r"^Enum8\((.*)\)$")
_ENUM_VALUE = re.compile(r"'((?:[^'\\]|\\.)*)' = (-?\d+)")


class NotEncodable(ValueError):
    """A column of a type :func:`encode` does not write."""


@dataclass(frozen=True)
class Layout:
    """How the columns of one table's inserts are declared and encoded."""

    names: list[str]
    types: list[str]
    kinds: str
    enums: dict[int, dict[str, int]] = field(default_factory=dict)  # column -> its names' values


def layout(names: Sequence[str], types: Sequence[str]) -> Layout:
    """The layout of columns ``names`` of ClickHouse ``types``; :class:`NotEncodable` if one has
    a type the encoder does not know."""
    kinds, enums = [], {}
    for i, (name, declared) in enumerate(zip(names, types)):
        inner = m.group(1) if (m := _SIMPLE.match(declared)) else declared
        if (m := _ENUM8.match(inner)) is not None:
            enums[i] = {v.replace("\\'", "'"): int(n) for v, n in _ENUM_VALUE.findall(m.group(1))}
            kinds.append("b")
        elif inner in _KINDS:
            kinds.append(_KINDS[inner])
        else:
            raise NotEncodable(f"column {name} of type {declared} has no Native encoder")
    return Layout(list(names), list(types), "".join(kinds), enums)


def encode(layout: Layout, data: Sequence[Sequence[Any]]) -> bytes:
    """One Native block of ``data`` (one list per column of ``layout``)."""
    columns = [list(c) if not isinstance(c, list) else c for c in data]
    for i, values in layout.enums.items():
        try:
            columns[i] = [values[v] for v in columns[i]]
        except KeyError as exc:
            raise ValueError(f"column {layout.names[i]}: {exc.args[0]!r} is not one of {sorted(values)}") from None
    return block(columns, layout.names, layout.types, layout.kinds)
