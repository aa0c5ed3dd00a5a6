"""Who the console lets see what: the local operator on loopback, else the credential's scope."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from sluice.ingress.auth import issue_token
from sluice.keys.models import AccessKeyConfig
from sluice.settings import Settings
from sluice.streams.console.access import ConsoleAccess, is_loopback
from sluice.streams.query_api import ADMIN, QueryApi, Refused

ADMIN_TOKEN = "admin-" + secrets.token_hex(32)
KEYS = {"ak_a": AccessKeyConfig(access_key="ak_a")}


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(
        data_dir=tmp_path, auth={"jwt_secret": "unit-secret-" + secrets.token_hex(32)},
        query={"admin_token": ADMIN_TOKEN},
    )


def access(settings: Settings, host: str) -> ConsoleAccess:
    return ConsoleAccess(QueryApi(settings, None, KEYS.get), host)  # type: ignore[arg-type]


def test_loopback_hosts() -> None:
    assert [is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost")] == [True] * 4
    assert [is_loopback(h) for h in ("0.0.0.0", "", "10.1.2.3", "example.org")] == [False] * 4


def test_loopback_without_a_credential_is_the_admin_and_a_credential_is_always_checked(settings: Settings) -> None:
    local = access(settings, "127.0.0.1")
    assert local.caller({}) is ADMIN
    assert local.caller({"authorization": f"Bearer {issue_token(settings.auth, 'ak_a', 60)}"}) == "ak_a"
    with pytest.raises(Refused) as refused:
        local.caller({"authorization": "Bearer not-a-token"})
    assert refused.value.status == 401


def test_elsewhere_a_credential_is_required(settings: Settings) -> None:
    remote = access(settings, "0.0.0.0")
    with pytest.raises(Refused) as refused:
        remote.caller({})
    assert (refused.value.status, refused.value.outcome) == (401, "unauthenticated")
    assert remote.caller({"authorization": f"Bearer {ADMIN_TOKEN}"}) is ADMIN


def test_a_key_reads_only_itself_and_not_the_pipeline() -> None:
    ConsoleAccess.admit(ADMIN, "ak_b")
    ConsoleAccess.admit("ak_a", "ak_a")
    with pytest.raises(Refused, match="the token of key 'ak_a' may not read key 'ak_b'") as refused:
        ConsoleAccess.admit("ak_a", "ak_b")
    assert refused.value.status == 403
    ConsoleAccess.admin_only(ADMIN, "the pipeline page")
    with pytest.raises(Refused, match="the pipeline page needs the admin credential") as refused:
        ConsoleAccess.admin_only("ak_a", "the pipeline page")
    assert refused.value.status == 403
