"""The ClickHouse schema for one server and for a cluster: every statement equals the reviewed
golden file (tests/golden/) and parses in ClickHouse's own parser (chDB's formatQuery).
Regenerate the golden files after a reviewed change with SLUICE_UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sluice.settings import Settings
from sluice.streams import schema
from sluice.streams.clickhouse import migrations

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
LAYOUTS = {
    "clickhouse_single.sql": schema.Layout("sluice"),
    "clickhouse_cluster.sql": schema.Layout("sluice", "sluice", 10_000),
}


def rendered(layout: schema.Layout) -> list[str]:
    found = schema.bootstrap(layout)
    for _, _, sql in migrations():
        found += schema.statements(sql, layout)
    return found


def formatted(statements: list[str]) -> list[str]:
    """Each statement as ClickHouse's parser formats it (it fails on any syntax error)."""
    program = (
        "import chdb, json, sys\n"
        "for s in json.load(sys.stdin):\n"
        "    q = \"SELECT formatQuery('\" + s.replace('\\\\', '\\\\\\\\').replace(\"'\", \"\\\\'\") + \"') AS f\"\n"
        "    print(chdb.query(q, 'JSONEachRow'), end='')\n"
    )
    run = subprocess.run([sys.executable, "-c", program], input=json.dumps(statements),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return [json.loads(line)["f"] for line in run.stdout.splitlines()]


@pytest.mark.parametrize("golden", sorted(LAYOUTS))
def test_statements_equal_the_golden_file_and_parse(golden: str) -> None:
    statements = rendered(LAYOUTS[golden])
    text = "".join(f"{s};\n\n" for s in statements)
    if os.environ.get("SLUICE_UPDATE_GOLDEN"):
        (GOLDEN / golden).write_text(text)
    assert text == (GOLDEN / golden).read_text(), f"{golden} differs: review, then SLUICE_UPDATE_GOLDEN=1"
    parsed = formatted(statements)
    assert len(parsed) == len(statements) == (8 if "single" in golden else 14)
    # The parser read each statement whole: its formatting keeps the names and the engine.
    for statement, out in zip(statements, parsed):
        assert out.split()[:3] == statement.split()[:3]
        assert ("ON CLUSTER" in out) == bool(LAYOUTS[golden].cluster)


def test_cluster_tables_are_replicated_local_tables_read_through_distributed_ones() -> None:
    statements = rendered(LAYOUTS["clickhouse_cluster.sql"])
    created = [s.split()[5] for s in statements if s.startswith("CREATE TABLE")]
    assert created == ["sluice.schema_migrations"] + [
        f"sluice.{t}{suffix}" for t in ("logs", "events", "metrics_1s", "metrics_1m", "spans")
        for suffix in ("_local", "")
    ]
    for s in statements:
        assert " IF NOT EXISTS " in s  # every statement can run again, by another worker too
        assert "non_replicated" not in s
        if s.startswith("CREATE TABLE") and "_local ON CLUSTER" in s:
            assert "ENGINE = Replicated" in s and "replicated_deduplication_window = 10000" in s
            assert "'/clickhouse/tables/{shard}/sluice/" in s
        elif s.startswith("CREATE TABLE") and "schema_migrations" not in s:
            assert "ENGINE = Distributed('sluice', 'sluice', '" in s  # no sharding key: no inserts


def test_the_single_server_schema_is_the_migration_files_as_written() -> None:
    for _, name, sql in migrations():
        for statement in schema.statements(sql, LAYOUTS["clickhouse_single.sql"]):
            assert statement.replace("sluice.", "{db}.") in sql, name


def test_a_statement_the_cluster_form_does_not_know_is_refused() -> None:
    layout = LAYOUTS["clickhouse_cluster.sql"]
    with pytest.raises(ValueError, match="not CREATE TABLE or ADD COLUMN"):
        schema.statements("ALTER TABLE {db}.logs DROP COLUMN payload;\n", layout)
    with pytest.raises(ValueError, match="engine or deduplication window"):
        schema.statements("CREATE TABLE IF NOT EXISTS {db}.x (a UInt8\n) ENGINE = Log;\n", layout)
    assert schema.statements("ALTER TABLE {db}.logs DROP COLUMN payload;\n", schema.Layout("db")) == [
        "ALTER TABLE db.logs DROP COLUMN payload"
    ]


def test_names_that_would_break_a_statement_are_refused() -> None:
    with pytest.raises(ValueError, match="database name"):
        schema.Layout("sluice; DROP TABLE x")
    with pytest.raises(ValueError, match="cluster name"):
        schema.Layout("sluice", "c' x")


def test_a_partition_always_goes_to_the_same_shard() -> None:
    assert [schema.shard_of(p, 3) for p in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert [schema.shard_of(p, 1) for p in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError, match="at least one shard"):
        schema.shard_of(0, 0)


def test_a_cluster_needs_shard_urls_and_a_url_for_reads() -> None:
    urls = ["http://ch-0:8123", "http://ch-1:8123"]
    ok = Settings(clickhouse={"cluster": "sluice", "shard_urls": urls, "url": "http://ch:8123"}).clickhouse
    assert (ok.cluster, ok.shard_urls, ok.deduplication_window) == ("sluice", urls, 10_000)
    for wrong, message in [
        ({"cluster": "sluice", "url": "http://ch:8123"}, "needs clickhouse.shard_urls"),
        ({"cluster": "sluice", "shard_urls": urls}, "needs clickhouse.url"),
        ({"shard_urls": urls, "url": "http://ch:8123"}, "only for a cluster"),
        ({"cluster": "a' b", "shard_urls": urls, "url": "http://ch:8123"}, "is not a cluster name"),
    ]:
        with pytest.raises(ValueError, match=message):
            Settings(clickhouse=wrong)
