"""The deployment files say only what the code understands: every SLUICE_* variable is a
setting, every command a `sluice` subcommand, every file a manifest mounts is shipped."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from sluice.cli.main import build_parser
from sluice.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def setting_names() -> set[str]:
    names = set()
    for field, info in Settings.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= {f"SLUICE_{field}_{sub}".upper() for sub in kind.model_fields}
        else:
            names.add(f"SLUICE_{field}".upper())
    return names


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield str(path.relative_to(DEPLOY)), doc


def variables(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (name, value) that sets an environment variable, wherever it is in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("SLUICE_"):
                yield key, value
            if key == "env" and isinstance(value, list):
                yield from ((e["name"], e.get("value")) for e in value if isinstance(e, dict))
            yield from variables(value)
    elif isinstance(node, list):
        for item in node:
            yield from variables(item)


def commands(node: Any) -> Iterator[list[str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("command", "args") and isinstance(value, list) and all(isinstance(v, str) for v in value):
                yield value
            else:
                yield from commands(value)
    elif isinstance(node, list):
        for item in node:
            yield from commands(item)


def test_every_sluice_variable_is_a_setting_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    known = setting_names()
    found = [(where, name, value) for where, doc in documents() for name, value in variables(doc)]
    assert len(found) >= 20
    unknown = sorted({(where, name) for where, name, _ in found if name.startswith("SLUICE_") and name not in known})
    assert unknown == []
    for file in sorted({where for where, _, _ in found}):
        with monkeypatch.context() as env:
            for name in [n for n in os.environ if n.startswith("SLUICE_")]:
                env.delenv(name)
            for where, name, value in found:
                if where == file:
                    # compose interpolation (${VAR:?message}) stands for a value the operator gives
                    env.setenv(name, "x" * 40 if str(value).startswith("${") else str(value))
            try:
                Settings()  # what the file's processes read: it must parse
            except Exception as exc:
                pytest.fail(f"{file}: its SLUICE_* values do not parse: {exc}")


def test_every_command_is_a_sluice_subcommand() -> None:
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    found = [(where, cmd) for where, doc in documents() for cmd in commands(doc)]
    assert {cmd[0] for _, cmd in found} == {"gateway", "worker"}
    assert all(cmd[0] in subcommands for _, cmd in found)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["sluice"]' in dockerfile


def test_the_kubernetes_objects_are_there() -> None:
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for where, doc in documents() if where.startswith("k8s/"))
    assert kinds == [
        ("ConfigMap", "sluice-keys"), ("ConfigMap", "sluice-settings"),
        ("Deployment", "sluice-gateway"), ("HorizontalPodAutoscaler", "sluice-gateway"),
        ("PodDisruptionBudget", "sluice-gateway"), ("PodDisruptionBudget", "sluice-worker"),
        ("Secret", "sluice-secrets"), ("Service", "sluice-gateway"), ("Service", "sluice-worker"),
        ("StatefulSet", "sluice-worker"),
    ]


def test_grafana_dashboard_reads_sluice_tables() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sluice.json").read_text())
    sql = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    assert all("sluice." in q for q in sql) and len(sql) == 3
