"""Following a file: complete lines only, positions, rotation, truncation, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sluice.client.tail import MAX_LINE_BYTES, FileTail, Line, Position, PositionFile
from sluice.exceptions import SluiceError


class Follower:
    """Pulls batches from a tail, with a deadline on each."""

    def __init__(self, tail: FileTail, size: int = 100) -> None:
        self.stop = asyncio.Event()
        self._batches: AsyncIterator[list[Line]] = tail.batches(size, self.stop)

    async def next(self) -> list[Line]:
        return await asyncio.wait_for(anext(self._batches), 5)

    async def texts(self, count: int) -> list[bytes]:
        got: list[bytes] = []
        while len(got) < count:
            got += [text for text, _ in await self.next()]
        assert len(got) == count
        return got

    async def close(self) -> None:
        self.stop.set()
        with pytest.raises(StopAsyncIteration):
            await self.next()


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


async def test_complete_lines_with_their_positions(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    follower = Follower(FileTail(log, poll_interval=0.01), size=2)
    append(log, b"one\ntwo\r\nthr")
    inode = log.stat().st_ino
    assert await follower.next() == [(b"one", Position(inode, 4)), (b"two", Position(inode, 9))]
    append(log, b"ee\n")
    assert await follower.next() == [(b"three", Position(inode, 15))]
    await follower.close()


async def test_starts_at_a_saved_position_or_at_zero_when_it_is_stale(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\nb\nc\n")
    inode = log.stat().st_ino
    follower = Follower(FileTail(log, Position(inode, 2), poll_interval=0.01))
    assert await follower.texts(2) == [b"b", b"c"]
    await follower.close()
    follower = Follower(FileTail(log, Position(inode, 99), poll_interval=0.01))  # file got shorter
    assert await follower.texts(3) == [b"a", b"b", b"c"]
    await follower.close()


async def test_rotation_drains_the_old_file_then_follows_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"1\n")
    follower = Follower(FileTail(log, poll_interval=0.01))
    assert await follower.texts(1) == [b"1"]
    append(log, b"2\nlast-unterminated")
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(b"3\n")
    assert await follower.texts(3) == [b"2", b"last-unterminated", b"3"]
    await follower.close()


async def test_truncation_starts_again_at_zero(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"first line\n")
    follower = Follower(FileTail(log, poll_interval=0.01))
    assert await follower.texts(1) == [b"first line"]
    log.write_bytes(b"x\n")  # truncated (copytruncate), then shorter than the position
    assert await follower.texts(1) == [b"x"]
    await follower.close()


async def test_a_restart_after_rotation_finishes_the_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\nb\n")
    saved = Position(log.stat().st_ino, 2)
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(b"c\n")
    follower = Follower(FileTail(log, saved, poll_interval=0.01))
    assert await follower.texts(2) == [b"b", b"c"]
    await follower.close()


async def test_long_lines_are_cut(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"x" * (MAX_LINE_BYTES + 5) + b"\n")
    follower = Follower(FileTail(log, poll_interval=0.01))
    assert await follower.texts(2) == [b"x" * MAX_LINE_BYTES, b"xxxxx"]
    await follower.close()


def test_position_file(tmp_path: Path) -> None:
    state = PositionFile(tmp_path / "app.log.sluice-pos")
    assert state.load() is None
    state.save(Position(7, 42))
    assert state.load() == Position(7, 42)
    assert [p.name for p in tmp_path.iterdir()] == ["app.log.sluice-pos"]
    state.path.write_text("{not json")
    with pytest.raises(SluiceError) as info:
        state.load()
    assert str(info.value).startswith(f"cannot read the position file {state.path}: ")
    assert info.value.hint == "delete it to follow the file from its start again"


def test_position_file_that_cannot_be_written(tmp_path: Path) -> None:
    state = PositionFile(tmp_path / "missing-dir" / "pos")
    with pytest.raises(SluiceError) as info:
        state.save(Position(1, 2))
    assert str(info.value) == (
        f"cannot write the position file {state.path}: No such file or directory "
        "(hint: choose a writable place with --state)"
    )


async def test_a_folder_is_not_followed(tmp_path: Path) -> None:
    follower = Follower(FileTail(tmp_path, poll_interval=0.01))
    with pytest.raises(SluiceError, match=rf"^cannot read {tmp_path}: Is a directory$"):
        await follower.next()
