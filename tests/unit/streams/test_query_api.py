"""The query API's decisions: who a credential is, what it may read, how a request or a refused
read is answered; with a fake reader (the real one is in tests/integration/test_query_*.py)."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from sluice.ingress.auth import issue_token
from sluice.keys.models import AccessKeyConfig
from sluice.settings import QuerySettings, Settings
from sluice.streams.query_api import QueryApi
from sluice.streams.reader import ReadRefused, refusal, session_settings

ADMIN = "admin-" + secrets.token_hex(32)
KEYS = {"ak_a": AccessKeyConfig(access_key="ak_a"), "ak_off": AccessKeyConfig(access_key="ak_off", enabled=False)}


class FakeReader:
    """Records what it was asked and answers with one row, or raises ``refuse``."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, Any] | None]] = []
        self.refuse: ReadRefused | None = None

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> tuple[list[str], list[list[Any]]]:
        self.asked.append((sql, parameters))
        if self.refuse is not None:
            raise self.refuse
        return ["n"], [[1]]


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(
        data_dir=tmp_path, auth={"jwt_secret": "unit-secret-" + secrets.token_hex(32)},
        query={"admin_token": ADMIN},
    )


def api(settings: Settings, reader: FakeReader) -> QueryApi:
    return QueryApi(settings, reader, KEYS.get)  # type: ignore[arg-type]


def logs(key: str, **extra: Any) -> bytes:
    return json.dumps({"scoped": {"stream": "logs", "key": key, "since_ns": 0, "limit": 5} | extra}).encode()


async def test_the_admin_credential_runs_raw_sql_and_any_key_s_scoped_query(settings: Settings) -> None:
    reader = FakeReader()
    q = api(settings, reader)
    auth = {"authorization": f"Bearer {ADMIN}"}
    assert await q.answer(auth, b'{"sql": "SELECT 1", "parameters": {"x": [1, "a"]}}') == (
        200, {"columns": ["n"], "rows": [[1]]}
    )
    assert await q.answer(auth, logs("ak_other")) == (200, {"columns": ["n"], "rows": [[1]]})
    assert reader.asked[0] == ("SELECT 1", {"x": [1, "a"]})
    assert "FROM sluice.logs FINAL" in reader.asked[1][0] and reader.asked[1][1] == {
        "key": "ak_other", "since": 0, "limit": 5
    }
    assert q.counters()["queries_ok"] == 2


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ({}, b'{"sql": "SELECT 1"}', 401, "missing or malformed 'Authorization' header"),
        ({"authorization": ADMIN}, b'{"sql": "SELECT 1"}', 401, "missing or malformed 'Authorization' header"),
        ({"authorization": f"Basic {ADMIN}"}, b"{}", 401, "missing or malformed 'Authorization' header"),
        ({"authorization": f"Bearer {ADMIN}x"}, b"{}", 401, "malformed token: Not enough segments"),
        ({"authorization": f"Bearer {ADMIN}"}, b"not json", 400, "expected a JSON object"),
        ({"authorization": f"Bearer {ADMIN}"}, b'{"sql": "x", "scoped": {}}', 400, "expected a JSON object"),
        ({"authorization": f"Bearer {ADMIN}"}, b'{"sql": " "}', 400, "'sql' must be a non-empty string"),
        ({"authorization": f"Bearer {ADMIN}"}, b'{"sql": "x", "parameters": {"a": {}}}', 400,
         "'parameters' must be an object of strings"),
        ({"authorization": f"Bearer {ADMIN}"}, b'{"sql": "x", "limit": 1}', 400, "unknown fields: ['limit']"),
        ({"authorization": f"Bearer {ADMIN}"}, b'{"scoped": {"stream": "spans", "key": "k"}}', 400,
         "scoped query field 'stream' must be one of ['metrics', 'logs', 'events'], got 'spans'"),
        ({"authorization": f"Bearer {ADMIN}"}, logs("ak_a", name="x"), 400,
         "unknown fields for a scoped logs query: ['name']"),
    ],
)
async def test_refusals_name_the_problem(
    settings: Settings, headers: dict[str, str], body: bytes, status: int, error: str
) -> None:
    reader = FakeReader()
    got_status, answer = await api(settings, reader).answer(headers, body)
    assert (got_status, answer["error"].startswith(error), reader.asked) == (status, True, []), answer


async def test_a_key_token_reads_only_its_own_key(settings: Settings) -> None:
    reader = FakeReader()
    q = api(settings, reader)
    token = {"authorization": f"Bearer {issue_token(settings.auth, 'ak_a', 60)}"}
    assert (await q.answer(token, logs("ak_a")))[0] == 200
    assert await q.answer(token, logs("ak_b")) == (403, {"error": "the token of key 'ak_a' may not read key 'ak_b'"})
    assert (await q.answer(token, b'{"sql": "SELECT 1"}'))[0] == 403
    off = {"authorization": f"Bearer {issue_token(settings.auth, 'ak_off', 60)}"}
    assert await q.answer(off, logs("ak_off")) == (403, {"error": "access key 'ak_off' is disabled"})
    unknown = {"authorization": f"Bearer {issue_token(settings.auth, 'ak_new', 60)}"}
    assert await q.answer(unknown, logs("ak_new")) == (403, {"error": "access key 'ak_new' is unknown"})
    assert len(reader.asked) == 1
    assert {k: v for k, v in q.counters().items() if v} == {"queries_ok": 1, "queries_forbidden": 4}


async def test_without_an_admin_token_raw_sql_is_refused_to_everyone(settings: Settings) -> None:
    settings.query.admin_token = None
    q = api(settings, FakeReader())
    status, answer = await q.answer({"authorization": f"Bearer {ADMIN}"}, b'{"sql": "SELECT 1"}')
    assert (status, answer["error"].startswith("malformed token")) == (401, True)


async def test_a_refused_read_is_answered_with_its_status_and_counted(settings: Settings) -> None:
    reader = FakeReader()
    reader.refuse = ReadRefused("busy: ...", 429, "busy")
    q = api(settings, reader)
    assert await q.answer({"authorization": f"Bearer {ADMIN}"}, b'{"sql": "SELECT 1"}') == (429, {"error": "busy: ..."})
    assert q.counters()["queries_busy"] == 1


@pytest.mark.parametrize(
    ("code", "status", "outcome", "message"),
    [
        (164, 403, "readonly", "refused: queries are read-only (readonly mode): Code: 164."),
        (159, 408, "timed_out", "the query ran longer than query.timeout (2.5s) and was stopped"),
        (396, 422, "too_large", "the result has more than query.max_result_rows (10) rows"),
        (241, 422, "too_large", "the query needs more than query.max_memory_bytes (1048576) of memory"),
        (394, 503, "cancelled", "the query was cancelled: the worker is stopping"),
        (60, 400, "failed", "query failed: Code: 60."),
    ],
)
def test_clickhouse_errors_become_precise_answers(code: int, status: int, outcome: str, message: str) -> None:
    limits = QuerySettings(timeout=2.5, max_result_rows=10, max_memory_bytes=1 << 20)
    refused = refusal(DatabaseError(f"Code: {code}. DB::Exception: ...", code=code), limits)
    assert (refused.status, refused.outcome, refused.message.startswith(message)) == (status, outcome, True)


def test_a_read_connection_is_made_read_only_after_its_limits() -> None:
    limits = QuerySettings(timeout=2.5, max_result_rows=10, max_memory_bytes=1 << 20)
    assert list(session_settings(limits).items()) == [
        ("max_execution_time", 2.5), ("max_result_rows", 10), ("result_overflow_mode", "throw"),
        ("max_memory_usage", 1 << 20), ("readonly", 1),
    ]


def test_a_short_admin_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        QuerySettings(admin_token="short")
