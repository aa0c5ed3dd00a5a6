"""`sluice query` arguments → scoped specs and SQL with bound parameters; the raw SQL forms; the
credentials it sends."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from sluice.cli.main import build_parser
from sluice.cli.query import run, scoped_query, scoped_spec
from sluice.exceptions import SluiceError
from sluice.settings import Settings
from sluice.streams import scoped
from sluice.streams.query import DEV_QUERY_TOKEN_FILE, admin_credential

NOW = 1_700_000_000.0
EVIL = "k' OR 1=1 --"


def query(*argv: str) -> scoped.Query:
    return scoped_query("sluice", build_parser().parse_args(["query", *argv]), now=NOW)


def test_metrics_bind_every_user_value() -> None:
    q = query("metrics", "--key", EVIL, "--name", EVIL, "--since", "1h", "--window", "1m",
              "--tag", f"x'y={EVIL}", "--tag", "env=prod", "--group-by", EVIL)
    assert EVIL not in q.sql and "FROM sluice.metrics_1m " in q.sql
    assert q.parameters == {
        "key": EVIL, "name": EVIL, "since": int(NOW) - 3600, "tk0": "env", "tv0": "prod",
        "tk1": "x'y", "tv1": EVIL, "group": EVIL,
    }
    assert (q.group_column, q.quantiles) == (EVIL, True)


def test_logs_default_to_five_minutes_and_bind_the_grep() -> None:
    q = query("logs", "--key", "k1", "--grep", EVIL)
    assert EVIL not in q.sql and "FROM sluice.logs FINAL " in q.sql
    assert q.parameters == {"key": "k1", "since": int((NOW - 300) * 1e9), "limit": 1000, "grep": EVIL}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["metrics", "--name", "n"], "needs --key"),
        (["metrics", "--key", "k"], "needs --name"),
        (["metrics", "--key", "k", "--name", "n", "--grep", "x"], "--grep does not apply"),
        (["logs", "--key", "k", "--group-by", "x"], "--group-by does not apply"),
        (["metrics", "--key", "k", "--name", "n", "--tag", "novalue"], "is not KEY=VALUE"),
        (["logs", "extra", "--key", "k"], "unexpected 'extra'"),
        (["logs", "--key", "k", "--limit", "0"], "--limit must be >= 1"),
    ],
)
def test_bad_scoped_queries(argv: list[str], message: str) -> None:
    with pytest.raises(SluiceError, match=message):
        query(*argv)


def test_present_turns_sketches_into_quantiles_and_names_the_group() -> None:
    q = query("metrics", "--key", "k", "--name", "n", "--group-by", "route")
    columns = ["window_start", "tag_value", "kind", "count", "sketch"]
    rows = [[1, "/", "timer", 2, {"-2147483648": 1, "0": 1}], [1, "/a", "counter", 1, {}]]
    assert scoped.present(q, columns, rows) == (
        ["window_start", "route", "kind", "count", "p50", "p90", "p99"],
        [[1, "/", "timer", 2, 0.0, 0.0, 0.0], [1, "/a", "counter", 1, None, None, None]],
    )


def test_the_spec_is_what_the_query_api_builds_the_same_query_from() -> None:
    args = build_parser().parse_args(["query", "logs", "--key", "k1", "--grep", EVIL, "--limit", "7"])
    spec = scoped_spec(args, now=NOW)
    assert spec == {"stream": "logs", "key": "k1", "since_ns": int((NOW - 300) * 1e9), "grep": EVIL, "limit": 7}
    assert json.loads(json.dumps(spec)) == spec  # it travels as JSON
    assert scoped.build("sluice", spec) == scoped_query("sluice", args, now=NOW)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"stream": "logs", "key": "", "since_ns": 0, "limit": 1}, "'key' must not be empty"),
        ({"stream": "logs", "key": "k", "since_ns": "0", "limit": 1}, "'since_ns' must be an integer, got '0'"),
        ({"stream": "logs", "key": "k", "since_ns": 0, "limit": 0}, "'limit' must be >= 1, got 0"),
        ({"stream": "logs", "key": "k", "since_ns": 0, "limit": True}, "'limit' must be an integer, got True"),
        ({"stream": "metrics", "key": "k", "name": "n", "window": "1h", "since": 0}, "window must be one of"),
        ({"stream": "metrics", "key": "k", "name": "n", "window": "1s", "since": 0, "tags": {"a": 1}},
         "'tags' must map strings to strings"),
        ({"stream": "metrics", "key": ["k"], "name": "n"}, "'key' must be a string, got ['k']"),
    ],
)
def test_a_bad_spec_names_its_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        scoped.build("sluice", spec)


def test_raw_sql_takes_no_key_token(tmp_path: Path) -> None:
    args = build_parser().parse_args(["query", "SELECT 1", "--token", "t"])
    with pytest.raises(SluiceError, match="--token applies to metrics, logs and events"):
        run(Settings(data_dir=tmp_path), args)


def test_the_admin_credential_is_the_setting_else_the_dev_file(tmp_path: Path) -> None:
    assert admin_credential(Settings(data_dir=tmp_path)) is None
    (tmp_path / DEV_QUERY_TOKEN_FILE).write_text("from-dev\n")
    assert admin_credential(Settings(data_dir=tmp_path)) == "from-dev"
    token = secrets.token_urlsafe(32)
    configured = Settings(data_dir=tmp_path, query={"admin_token": token})
    assert admin_credential(configured) == token
