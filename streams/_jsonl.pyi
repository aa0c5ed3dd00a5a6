"""JSON lines for the file sink (``_jsonl.c``)."""

from collections.abc import Sequence
from typing import Any

def lines(rows: Sequence[Any], fields: tuple[tuple[str, int], ...] | None, /) -> bytes: ...
