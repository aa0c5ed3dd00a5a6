"""The Faust table adapter: JSON bytes in the store and the changelog, under the source partition."""

from __future__ import annotations

from typing import Any

from sluice.streams.state import FaustTableState


class FakeTable:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sent: list[tuple[int, str, bytes | None]] = []

    def send_changelog(self, partition: int, key: str, value: bytes | None) -> None:
        self.sent.append((partition, key, value))


def test_values_are_stored_and_sent_as_the_same_json_bytes() -> None:
    table = FakeTable()
    state = FaustTableState(table)
    row = [2**64 - 1, "k", {"host": "h1"}, 3, 1.5, (7, 2.0), {55: 1, -(2**31): 2}]
    state.put(3, "3|100|@d|9|0", [1, [row]])
    (sent,) = table.sent
    assert sent == (3, "3|100|@d|9|0", table.data["3|100|@d|9|0"])
    assert sent[2] == b'[1,[[18446744073709551615,"k",{"host":"h1"},3,1.5,[7,2.0],{"55":1,"-2147483648":2}]]]'
    assert state.get("3|100|@d|9|0") == [1, [[2**64 - 1, "k", {"host": "h1"}, 3, 1.5, [7, 2.0], {"55": 1, "-2147483648": 2}]]]
    assert state.get("missing") is None
    state.delete(3, "3|100|@d|9|0")
    assert table.sent[-1] == (3, "3|100|@d|9|0", None) and list(state.keys()) == []


def test_sync_ends_each_written_partition_with_a_record_of_its_own() -> None:
    table = FakeTable()
    state = FaustTableState(table)
    state.put(0, "0|@applied", [5])
    state.put(1, "1|@applied", [7])
    state.delete(1, "1|x")
    del table.sent[:]
    assert state.sync() == 2
    assert sorted(table.sent) == [(0, "@sync", None), (1, "@sync", None)]
    assert state.sync() == 0 and len(table.sent) == 2  # nothing written since
