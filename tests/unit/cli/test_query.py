"""`sluice query` arguments → scoped SQL with bound parameters; the raw SQL forms."""

from __future__ import annotations

import pytest

from sluice.cli.main import build_parser
from sluice.cli.query import scoped_query
from sluice.exceptions import SluiceError
from sluice.streams import scoped

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
