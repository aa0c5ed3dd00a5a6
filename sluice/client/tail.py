"""Follow a growing log file like a collector agent: complete lines with the position after each,
across rotation (the path names a new file) and truncation (the file got shorter).

A :class:`Position` is (inode, byte offset): it names a place in one file even after that file
was renamed away, so a follower restarted after a rotation finishes the rotated file first when
it is still in the same folder.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sluice.exceptions import SluiceError

# Longer lines are cut into pieces this long, so that no line can block the follower for ever.
MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Position:
    """A byte offset in the file with inode ``inode``."""

    inode: int
    offset: int


class PositionFile:
    """Where a follower is: a small JSON file, replaced atomically on each save."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> Position | None:
        """The saved position; None when there is none yet."""
        try:
            data = json.loads(self.path.read_text())
            return Position(inode=int(data["inode"]), offset=int(data["offset"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SluiceError(
                f"cannot read the position file {self.path}: {exc}",
                hint="delete it to follow the file from its start again",
            ) from exc

    def save(self, position: Position) -> None:
        """Write ``position`` (durably, replacing the previous one in one step)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump({"inode": position.inode, "offset": position.offset}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise SluiceError(
                f"cannot write the position file {self.path}: {exc.strerror}",
                hint="choose a writable place with --state",
            ) from exc


Line = tuple[bytes, Position]  # a line without its newline, and the position after it


class FileTail:
    """The complete lines of ``path`` from ``start`` on (the beginning when None or stale).

    A line is complete once it ends with a newline; the last unterminated line of a file that was
    rotated away is complete too. Between checks for new data it waits ``poll_interval`` seconds.
    """

    def __init__(self, path: str | Path, start: Position | None = None, *, poll_interval: float = 0.1) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        self.path = Path(path)
        self._start = start
        self._poll = poll_interval
        self._file: BinaryIO | None = None
        self._inode = 0
        self._offset = 0

    async def batches(self, size: int, stop: asyncio.Event) -> AsyncIterator[list[Line]]:
        """Lists of at most ``size`` lines, as they come, until ``stop`` is set."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        try:
            while not stop.is_set():
                opened = self._file is not None or self._open()
                lines: list[Line] | None = self._read(size) if opened else []
                if not lines:
                    lines = self._reopen(size)
                if lines:
                    yield lines
                elif lines is None:
                    try:
                        await asyncio.wait_for(stop.wait(), self._poll)
                    except TimeoutError:
                        pass
        finally:
            if self._file is not None:
                self._file.close()

    def _open(self) -> bool:
        """Open the file to follow first: where the saved position is, else ``path`` from 0."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        start, self._start = self._start, None
        if start is not None and start.inode != st.st_ino:
            rotated = _find_inode(self.path.parent, start.inode)
            if rotated is not None and os.stat(rotated).st_size >= start.offset:
                self._switch(rotated, start.offset)
                return True
            start = None
        offset = start.offset if start is not None and start.offset <= st.st_size else 0
        self._switch(self.path, offset)
        return True

    def _switch(self, path: Path, offset: int) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            self._file = open(path, "rb")
        except OSError as exc:
            raise SluiceError(f"cannot read {path}: {exc.strerror}") from exc
        self._inode = os.fstat(self._file.fileno()).st_ino
        self._file.seek(offset)
        self._offset = offset

    def _read(self, size: int) -> list[Line]:
        assert self._file is not None
        lines: list[Line] = []
        while len(lines) < size:
            line = self._file.readline(MAX_LINE_BYTES)
            if not line.endswith(b"\n") and len(line) < MAX_LINE_BYTES:
                self._file.seek(self._offset)  # incomplete: read it again once it is
                break
            self._offset += len(line)
            lines.append((line.rstrip(b"\r\n"), Position(self._inode, self._offset)))
        return lines

    def _reopen(self, size: int) -> list[Line] | None:
        """At the end of the file: follow a rotation or a truncation. None if there was none,
        else the last lines of the rotated file (drained before switching to the new one)."""
        if self._file is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None  # renamed away, the new file is not there yet: keep the old one
        if st.st_ino != self._inode:
            lines = self._read(size)  # written just before the rotation
            if lines:
                return lines
            rest = self._file.read()  # an unterminated last line
            if rest:
                self._offset += len(rest)
                lines = [(rest.rstrip(b"\r"), Position(self._inode, self._offset))]
            self._switch(self.path, 0)
            return lines
        if st.st_size < self._offset:
            self._switch(self.path, 0)
            return []
        return None


def _find_inode(folder: Path, inode: int) -> Path | None:
    """The file in ``folder`` with inode ``inode``, if any."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() and entry.inode() == inode:
                return Path(entry.path)
    return None
