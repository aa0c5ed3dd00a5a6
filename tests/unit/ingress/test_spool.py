"""The disk spool: order, durability across reopen, bounds, corrupt segments."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.ingress.exceptions import SpoolFull
from sluice.ingress.spool import Spool


def spool(path: Path, now: list[float] | None = None, **kwargs: int) -> Spool:
    clock = now or [100.0]
    return Spool(path, max_bytes=kwargs.get("max_bytes", 10_000), segment_bytes=kwargs.get("segment_bytes", 1024),
                 clock=lambda: clock[0])


def drain(s: Spool) -> list[tuple[bytes, list[bytes], int]]:
    out = []
    while (entry := s.peek()) is not None:
        out.append((entry.key, entry.records, entry.envelopes))
        s.advance(entry)
    return out


def test_entries_come_back_in_order_across_segments_and_reopen(tmp_path: Path) -> None:
    s = spool(tmp_path)
    for i in range(20):
        s.append(b"k%d" % (i % 3), [bytes([i]) * 50, b"r"], i, "k1" if i % 2 else "")
    assert len(list(tmp_path.glob("*.seg"))) > 1
    first = s.peek()
    assert first is not None
    s.advance(first)
    again = spool(tmp_path)  # a restart: what was replayed is not replayed again
    assert drain(again) == [(b"k%d" % (i % 3), [bytes([i]) * 50, b"r"], i) for i in range(1, 20)]
    assert again.empty and list(tmp_path.glob("*.seg")) == []
    again.append(b"k", [b"later"], 1)
    assert drain(again) == [(b"k", [b"later"], 1)]


def test_the_oldest_waiting_entry_has_an_age(tmp_path: Path) -> None:
    now = [100.0]
    s = spool(tmp_path, now)
    assert s.oldest_age() == 0.0
    s.append(b"k", [b"a"], 1)
    now[0] = 103.0
    s.append(b"k", [b"b"], 1)
    now[0] = 110.0
    assert s.oldest_age() == 10.0
    entry = s.peek()
    assert entry is not None
    s.advance(entry)
    assert s.oldest_age() == 7.0


def test_the_spool_is_bounded(tmp_path: Path) -> None:
    s = spool(tmp_path, max_bytes=2048, segment_bytes=1024)
    s.append(b"k", [b"x" * 900], 1)
    s.append(b"k", [b"x" * 900], 1)
    with pytest.raises(SpoolFull, match="spool is full"):
        s.append(b"k", [b"x" * 900], 1)


def test_a_corrupt_segment_is_quarantined_and_what_follows_is_replayed(tmp_path: Path) -> None:
    s = spool(tmp_path, segment_bytes=1024)
    for i in range(6):
        s.append(b"k", [bytes([i]) * 300], 1)
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) == 2
    data = bytearray(segments[0].read_bytes())
    data[400] ^= 0xFF  # inside the second entry
    segments[0].write_bytes(bytes(data))
    replayed = [records[0][0] for _, records, _ in drain(spool(tmp_path))]
    assert replayed[0] == 0 and replayed[1:] == [3, 4, 5]
    assert [p.suffix for p in tmp_path.iterdir() if p.suffix != ".pos"] == [".corrupt"]
