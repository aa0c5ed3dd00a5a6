"""EnvelopeBatch records decoded from their wire bytes (``_decode.c``): the worker's fast path."""

from typing import Any

def decode(
    value: bytes, access_key: str, partition: int, offset: int, /
) -> tuple[list[list[Any]], list[list[Any]], list[tuple[str, str, str, dict[str, str], int, float, float]]] | None: ...
