"""The generated code in proto/ is what its .proto sources generate."""

from __future__ import annotations

import shutil
from pathlib import Path

from sluice.cli.protogen import PROTO_ROOT, sources, stale


def test_generated_code_is_current() -> None:
    assert [str(p) for p in sources()] == [
        "sluice/v1/config.proto", "sluice/v1/envelope.proto", "sluice/v1/ingress.proto"
    ]
    assert stale() == []


def test_a_changed_source_makes_its_code_stale(tmp_path: Path) -> None:
    root = tmp_path / "proto"
    shutil.copytree(PROTO_ROOT, root)
    envelope = root / "sluice/v1/envelope.proto"
    envelope.write_text(envelope.read_text().replace("string body = 2;", "string body = 2;\n  string extra = 3;"))
    (root / "sluice/v1/config_pb2.pyi").unlink()
    assert stale(root) == [
        "sluice/v1/config_pb2.pyi", "sluice/v1/envelope_pb2.py", "sluice/v1/envelope_pb2.pyi"
    ]
