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
    assert json.loads((tmp_path / "k" / ".logs.jsonl.state").read_text()) == {"size": 33, "offsets": {"0": 7}}
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
