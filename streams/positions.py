"""Per partition, the highest source offset whose outputs are durable, kept in a changelog-backed
state so a restarted worker (or the next owner of a partition) knows it.

Kafka offsets of the raw topic are contiguous (it is neither compacted nor transactional), so
the next record of a partition must be at the position plus one. A record further on means
records were skipped on the way in: Faust, on Tansu, was seen to drop the records it had
fetched while a restarted worker recovered its tables and then skip them. :meth:`split` finds
such gaps so the worker can seek back instead of losing them, and drops records read again
that are durable already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar


class PositionState(Protocol):
    def get(self, key: str) -> list[Any] | None: ...

    def put(self, partition: int, key: str, value: list[Any]) -> None: ...


class HasPosition(Protocol):
    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=HasPosition)


class Positions:
    """Durable positions: in memory, and in ``state`` when one is given."""

    def __init__(self, state: PositionState | None = None) -> None:
        self._state = state
        self._memory: dict[int, int] = {}

    def get(self, partition: int) -> int:
        """The partition's position; -1 when nothing of it is known to be durable."""
        stored = self._state.get(str(partition)) if self._state is not None else None
        return max(self._memory.get(partition, -1), int(stored[0]) if stored else -1)

    def advance(self, partition: int, offset: int) -> None:
        """Record that everything of ``partition`` up to ``offset`` is durable."""
        if offset > self.get(partition):
            self._memory[partition] = offset
            if self._state is not None:
                self._state.put(partition, str(partition), [offset])

    def as_dict(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        wanted = set(self._memory) if partitions is None else set(partitions)
        found = {p: self.get(p) for p in sorted(wanted)}
        return {p: o for p, o in found.items() if o >= 0}

    def split(
        self, records: Sequence[R], first_offset: Callable[[int], int]
    ) -> tuple[list[R], dict[int, int], int]:
        """The records that continue their partition without a gap; per partition with a gap,
        the offset to read again from; and how many records were dropped as already durable
        (at or below the position: processing them again could only differ, e.g. when routes
        changed since). ``first_offset(p)`` is where a partition with no position starts."""
        expected: dict[int, int] = {}
        gaps: dict[int, int] = {}
        kept = []
        durable = 0
        for r in records:
            p = r.partition
            if p in gaps:
                continue
            if p not in expected:
                position = self.get(p)
                expected[p] = position + 1 if position >= 0 else first_offset(p)
            if r.offset < expected[p]:
                durable += 1
            elif r.offset > expected[p]:
                gaps[p] = expected[p]
            else:
                kept.append(r)
                expected[p] = r.offset + 1
        return kept, gaps, durable
