"""Regenerate the committed Python code of ``proto/`` (``make proto``), or check it is current.

``python -m sluice.cli.protogen`` rewrites ``proto/sluice/v1/*_pb2*.py[i]``;
``python -m sluice.cli.protogen --check`` exits 1 and names the stale files instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def sources(root: Path = PROTO_ROOT) -> list[Path]:
    """The .proto files under ``root``, relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def generate(out: Path, root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every .proto under ``root`` into ``out``; returns the generated files, relative."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    protos = [str(p) for p in sources(root)]
    args = ["protoc", f"-I{root}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + protos) != 0:
        raise RuntimeError(f"protoc failed on {protos}")
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.name.endswith(SUFFIXES))


def stale(root: Path = PROTO_ROOT) -> list[str]:
    """Generated files that differ from what the sources generate now (missing ones included)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp), root)
        committed = {p.relative_to(root) for p in root.rglob("*") if p.name.endswith(SUFFIXES)}
        differ = [
            str(rel) for rel in fresh
            if not (root / rel).is_file() or (root / rel).read_bytes() != (Path(tmp) / rel).read_bytes()
        ]
        return sorted(differ + [str(rel) for rel in committed - set(fresh)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale generated files")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for name in bad:
            print(f"stale: proto/{name} (run `make proto`)", file=sys.stderr)
        return 1 if bad else 0
    for rel in generate(PROTO_ROOT):
        print(f"generated proto/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
