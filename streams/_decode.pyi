"""EnvelopeBatch records decoded from their wire bytes (``_decode.c``): the worker's fast path."""

from typing import Any

from sluice.time_bounds import Window

def decode(
    value: bytes, access_key: str, partition: int, offset: int, window: Window | None = None, /
) -> tuple[list[list[Any]], list[list[Any]], list[tuple[str, str, str, dict[str, str], int, float, float]]] | None: ...
