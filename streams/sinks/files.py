"""The file sink: ``<data>/files/<access_key>/<stream>.jsonl``, one JSON object per line.

Each file has a sidecar ``.<stream>.jsonl.state`` holding the file's durable size, when it was
started and, per Kafka partition, the last source offset written. Lines are appended and
fsynced before the sidecar is replaced, so after a crash the file is cut back to the size the
sidecar names and replayed records at or below its offsets are skipped: every line is written
exactly once.

Rotation (by size before a write would pass ``max_bytes``, by age once the file is older than
``max_age``) renames the file to ``<stream>.<NNNNNN>.jsonl`` (numbers only go up) and then
records size 0 with the same offsets; only whole flushes go to a file, so no line is ever split.
A crash between the rename and the sidecar leaves a sidecar naming a size the (new, absent)
file does not have, which opening takes as size 0. Only the newest ``keep`` rotated files stay.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.streams._jsonl import lines
from sluice.streams.exceptions import SinkError


@dataclass
class _File:
    path: Path
    size: int = 0
    started: float = 0.0  # when the first line of the current file was written
    offsets: dict[int, int] = field(default_factory=dict)
    # The buffered lines, one bytes per record (``_jsonl.c``). Held as one bytes per line, the
    # logs of 1,000,000 envelopes (250,000 lines) raised the worker's peak RSS by 115 MiB.
    pending: list[bytes] = field(default_factory=list)
    pending_lines: int = 0
    pending_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.state")


class FileSink:
    """Buffered, exactly-once writers of the per-key JSON-lines files under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int = 0,
        max_age: float = 0.0,
        keep: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 0 or max_age < 0 or keep < 1:
            raise ValueError(f"need max_bytes >= 0, max_age >= 0 and keep >= 1, got {max_bytes}, {max_age}, {keep}")
        self.root = Path(root)
        self.max_bytes = max_bytes  # 0: no rotation by size
        self.max_age = max_age  # 0: no rotation by age
        self.keep = keep
        self._clock = clock
        self._files: dict[tuple[str, str], _File] = {}
        self.lines_written = 0
        self.rotations = 0

    def _file(self, access_key: str, stream: str) -> _File:
        f = self._files.get((access_key, stream))
        if f is None:
            f = self._open(self.root / access_key / f"{stream}.jsonl")
            self._files[(access_key, stream)] = f
        return f

    @staticmethod
    def _open(path: Path) -> _File:
        f = _File(path)
        try:
            state = json.loads(f.state_path.read_text())
            f.size = int(state["size"])
            f.offsets = {int(p): int(o) for p, o in state["offsets"].items()}
            f.started = float(state.get("started", time.time()))
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            raise SinkError(
                f"cannot read {f.state_path}: {exc}",
                hint="restore or delete the state file (deleting it may duplicate replayed lines)",
            ) from exc
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            actual = 0
        if actual > f.size:
            # Lines written after the last durable state belong to records that are replayed.
            with open(path, "r+b") as fh:
                fh.truncate(f.size)
        elif actual < f.size:
            f.size = actual  # the file was cut or replaced from outside: keep appending to it
        return f

    def add(
        self, access_key: str, stream: str, partition: int, offset: int, rows: Sequence[Any],
        fields: tuple[tuple[str, int], ...] | None = None,
    ) -> int:
        """Buffer the lines of one record, a JSON object per row; 0 if that record was already
        written. Rows are dicts, or (with ``fields``: ``(name, index)`` pairs) lists or tuples
        whose values at those indexes the lines carry under those names."""
        f = self._file(access_key, stream)
        if offset <= f.offsets.get(partition, -1) or offset <= f.pending_offsets.get(partition, -1):
            return 0
        f.pending.append(lines(rows, fields))
        f.pending_lines += len(rows)
        f.pending_offsets[partition] = offset
        return len(rows)

    def flush(self) -> int:
        """Rotate what is due, append and fsync every buffered line, then record the new state;
        lines written."""
        written = 0
        now = self._clock()
        for f in self._files.values():
            data = b"".join(f.pending)
            if f.size and (
                (self.max_age and now - f.started >= self.max_age)
                or (self.max_bytes and data and f.size + len(data) > self.max_bytes)
            ):
                self._rotate(f)
            if not f.pending_offsets:
                continue
            if not f.size:
                f.started = now
            f.path.parent.mkdir(parents=True, exist_ok=True)
            with open(f.path, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            f.size += len(data)
            f.offsets.update(f.pending_offsets)
            self._write_state(f)
            written += f.pending_lines
            f.pending.clear()
            f.pending_lines = 0
            f.pending_offsets.clear()
        self.lines_written += written
        return written

    def rotated(self, access_key: str, stream: str) -> list[Path]:
        """The rotated files of one stream of one key, oldest first."""
        return [p for _, p in self._rotated(self.root / access_key / f"{stream}.jsonl")]

    @staticmethod
    def _rotated(path: Path) -> list[tuple[int, Path]]:
        pattern = re.compile(re.escape(path.stem) + r"\.(\d{6,})\.jsonl")
        found = [(int(m.group(1)), p) for p in path.parent.glob("*.jsonl") if (m := pattern.fullmatch(p.name))]
        return sorted(found)

    def _rotate(self, f: _File) -> None:
        rotated = self._rotated(f.path)
        number = rotated[-1][0] + 1 if rotated else 1
        os.rename(f.path, f.path.with_name(f"{f.path.stem}.{number:06d}.jsonl"))
        f.size = 0
        self._write_state(f)
        for _, old in rotated[: max(0, len(rotated) + 1 - self.keep)]:
            old.unlink()
        self.rotations += 1

    @staticmethod
    def _write_state(f: _File) -> None:
        tmp = f.state_path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            offsets = {str(p): o for p, o in sorted(f.offsets.items())}
            json.dump({"size": f.size, "offsets": offsets, "started": f.started}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, f.state_path)
