"""Rows to columns for the ClickHouse sink (``_columns.c``)."""

from collections.abc import Sequence
from typing import Any

def columns(rows: Sequence[Sequence[Any]], width: int, /) -> list[list[Any]] | None: ...
