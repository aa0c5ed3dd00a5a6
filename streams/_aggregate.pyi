"""The windows' per-point and per-row loops (``_aggregate.c``)."""

from collections.abc import Callable
from typing import Any

Point = tuple[str, str, str, dict[str, str], int, float, float]

def aggregate(
    points: list[Point], sids: list[int], access_key: str, size_s: int, newest: int,
    resolve: Callable[[int], dict[int, list[Any]] | None], timer_kind: str,
    timer_add: Callable[[dict[int, int], float], Any], /,
) -> int: ...
def series_ids(
    access_key: str, points: list[Point], memo: dict[int, tuple[Any, ...]], memo_max: int,
    compute: Callable[[str, str, dict[str, str]], int], /,
) -> list[int]: ...
def window_rows(values: dict[int, list[Any]], start: int, /) -> list[list[Any]]: ...
