"""The file sink: ``<data>/files/<access_key>/<stream>.jsonl``, one JSON object per line.

Each file has a sidecar ``.<stream>.jsonl.state`` holding the file's durable size and, per
Kafka partition, the last source offset written. Lines are appended and fsynced before the
sidecar is replaced, so after a crash the file is cut back to the size the sidecar names and
replayed records at or below its offsets are skipped: every line is written exactly once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.streams.exceptions import SinkError


@dataclass
class _File:
    path: Path
    size: int = 0
    offsets: dict[int, int] = field(default_factory=dict)
    pending: list[bytes] = field(default_factory=list)
    pending_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.state")


class FileSink:
    """Buffered, exactly-once writers of the per-key JSON-lines files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._files: dict[tuple[str, str], _File] = {}
        self.lines_written = 0

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

    def add(self, access_key: str, stream: str, partition: int, offset: int, lines: Iterable[dict[str, Any]]) -> int:
        """Buffer the lines of one record; 0 if that record was already written."""
        f = self._file(access_key, stream)
        if offset <= f.offsets.get(partition, -1) or offset <= f.pending_offsets.get(partition, -1):
            return 0
        encoded = [json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for line in lines]
        f.pending += encoded
        f.pending_offsets[partition] = offset
        return len(encoded)

    def flush(self) -> int:
        """Append and fsync every buffered line, then record the new state; lines written."""
        written = 0
        for f in self._files.values():
            if not f.pending_offsets:
                continue
            data = b"".join(f.pending)
            f.path.parent.mkdir(parents=True, exist_ok=True)
            with open(f.path, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            f.size += len(data)
            f.offsets.update(f.pending_offsets)
            self._write_state(f)
            written += len(f.pending)
            f.pending.clear()
            f.pending_offsets.clear()
        self.lines_written += written
        return written

    @staticmethod
    def _write_state(f: _File) -> None:
        tmp = f.state_path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump({"size": f.size, "offsets": {str(p): o for p, o in sorted(f.offsets.items())}}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, f.state_path)
