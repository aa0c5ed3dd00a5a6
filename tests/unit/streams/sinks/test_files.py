"""The file sink: exact lines, replays skipped, crashes cut back to the durable state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluice.streams.exceptions import SinkError
from sluice.streams.sinks.files import FileSink


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_are_written_on_flush_only(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    assert sink.add("k", "logs", 0, 7, [{"payload": "a"}, {"payload": "é"}]) == 2
    assert not (tmp_path / "k" / "logs.jsonl").exists()
    assert sink.flush() == 2
    assert (tmp_path / "k" / "logs.jsonl").read_bytes() == '{"payload":"a"}\n{"payload":"é"}\n'.encode()
    state = json.loads((tmp_path / "k" / ".logs.jsonl.state").read_text())
    assert (state["size"], state["offsets"]) == (33, {"0": 7})
    assert sink.flush() == 0


def test_flush_counts_lines_not_records(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    assert sink.add("k", "logs", 0, 1, [{"n": 1}, {"n": 2}]) == 2
    assert sink.add("k", "logs", 0, 2, [{"n": 3}, {"n": 4}, {"n": 5}]) == 3
    assert sink.add("k", "events", 1, 1, [{"n": 6}]) == 1
    assert sink.flush() == 6
    assert sink.lines_written == 6
    assert lines(tmp_path / "k" / "logs.jsonl") == [{"n": n} for n in range(1, 6)]
    assert sink.flush() == 0


def test_replayed_records_are_skipped_across_restarts(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    sink.add("k", "logs", 0, 1, [{"n": 1}])
    sink.add("k", "logs", 1, 1, [{"n": 2}])
    assert sink.add("k", "logs", 0, 1, [{"n": 1}]) == 0  # same record again in the buffer
    sink.flush()
    again = FileSink(tmp_path)
    assert again.add("k", "logs", 0, 1, [{"n": 1}]) == 0
    assert again.add("k", "logs", 1, 0, [{"n": 0}]) == 0
    assert again.add("k", "logs", 0, 2, [{"n": 3}]) == 1
    again.flush()
    assert lines(tmp_path / "k" / "logs.jsonl") == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_bytes_written_after_the_last_state_are_cut_on_open(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    sink.add("k", "events", 0, 1, [{"n": 1}])
    sink.flush()
    with open(tmp_path / "k" / "events.jsonl", "ab") as f:
        f.write(b'{"n": 2}\n{"n"')  # a crash between the append and the state update
    again = FileSink(tmp_path)
    again.add("k", "events", 0, 2, [{"n": 2}])
    again.flush()
    assert lines(tmp_path / "k" / "events.jsonl") == [{"n": 1}, {"n": 2}]


def test_an_unreadable_state_file_stops_the_sink(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / ".logs.jsonl.state").write_text("{not json")
    with pytest.raises(SinkError, match=r"cannot read .*\.logs\.jsonl\.state"):
        FileSink(tmp_path).add("k", "logs", 0, 0, [{}])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def all_lines(sink: FileSink, key: str = "k", stream: str = "logs") -> list[dict[str, object]]:
    """Every line of a stream, the rotated files oldest first, then the current one."""
    current = sink.root / key / f"{stream}.jsonl"
    paths = sink.rotated(key, stream) + ([current] if current.exists() else [])
    return [line for p in paths for line in lines(p)]


def test_rotation_by_size_keeps_whole_flushes_and_every_line_once(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, max_bytes=30)
    for offset in range(7):
        sink.add("k", "logs", 0, offset, [{"n": offset}])  # 8 bytes a line
        if offset % 2:
            sink.flush()
    sink.flush()
    assert [p.name for p in sink.rotated("k", "logs")] == ["logs.000001.jsonl", "logs.000002.jsonl"]
    sizes = [p.stat().st_size for p in sink.rotated("k", "logs")]
    assert sizes == [16, 16]  # 16 + 16 would pass 30 bytes: each file took whole flushes
    assert (tmp_path / "k" / "logs.jsonl").stat().st_size == 24
    assert all_lines(sink) == [{"n": i} for i in range(7)]
    assert sink.rotations == 2


def test_rotation_by_age_also_for_idle_files(tmp_path: Path) -> None:
    clock = Clock()
    sink = FileSink(tmp_path, max_age=60, clock=clock)
    sink.add("k", "logs", 0, 0, [{"n": 0}])
    sink.flush()
    clock.now += 59
    sink.add("k", "logs", 0, 1, [{"n": 1}])
    sink.flush()
    assert sink.rotated("k", "logs") == []
    clock.now += 1
    sink.flush()  # nothing new, but the file is a minute old
    assert [p.name for p in sink.rotated("k", "logs")] == ["logs.000001.jsonl"]
    assert not (tmp_path / "k" / "logs.jsonl").exists()
    sink.flush()  # an empty current file is never rotated
    clock.now += 100
    sink.add("k", "logs", 0, 2, [{"n": 2}])
    sink.flush()
    clock.now += 59
    sink.flush()
    assert len(sink.rotated("k", "logs")) == 1  # the new file's age counts from its first line
    assert all_lines(sink) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_only_the_newest_rotated_files_are_kept(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, max_bytes=1, keep=2)
    for offset in range(6):
        sink.add("k", "logs", 0, offset, [{"n": offset}])
        sink.flush()
    assert [p.name for p in sink.rotated("k", "logs")] == ["logs.000004.jsonl", "logs.000005.jsonl"]
    assert all_lines(sink) == [{"n": 3}, {"n": 4}, {"n": 5}]


def test_a_crash_between_the_rename_and_the_state_loses_and_doubles_nothing(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, max_bytes=20)
    sink.add("k", "logs", 0, 0, [{"n": 0}, {"n": 1}])
    sink.flush()
    # The next flush would rotate: the crash happens right after the rename.
    (tmp_path / "k" / "logs.jsonl").rename(tmp_path / "k" / "logs.000001.jsonl")
    again = FileSink(tmp_path, max_bytes=20)
    assert again.add("k", "logs", 0, 0, [{"n": 0}, {"n": 1}]) == 0  # replayed: skipped
    assert again.add("k", "logs", 0, 1, [{"n": 2}]) == 1
    again.flush()
    assert all_lines(again) == [{"n": 0}, {"n": 1}, {"n": 2}]
    # A crash after the append, before the state, in a rotated-to file: the tail is cut.
    again.add("k", "logs", 0, 2, [{"n": 3}])
    again.flush()
    with open(tmp_path / "k" / "logs.jsonl", "ab") as f:
        f.write(b'{"n":4}\n{"n"')
    third = FileSink(tmp_path, max_bytes=20)
    assert third.add("k", "logs", 0, 2, [{"n": 3}]) == 0
    third.add("k", "logs", 0, 3, [{"n": 4}])
    third.flush()
    assert all_lines(third) == [{"n": i} for i in range(5)]


def test_rotation_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep >= 1"):
        FileSink(tmp_path, keep=0)
