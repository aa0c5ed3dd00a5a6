"""Placeholder and made-up secrets are refused at start; random ones pass."""

from __future__ import annotations

import base64
import os
import secrets

import pytest
from pydantic import SecretStr, ValidationError

from sluice.exceptions import ConfigurationError
from sluice.ingress.jwt_keys import verification_keys
from sluice.secret_strength import MIN_BITS, check_secret, estimated_bits, weakness
from sluice.settings import AuthSettings, Settings

WEAK = [
    "replace-with-32-or-more-random-bytes",
    "changeme-changeme-changeme-changeme",
    "your-256-bit-secret-goes-here-xxxxx",
    "a" * 40,
    "0123456789abcdef0123456789abcdef",
    "passwordpasswordpasswordpassword",
    "my-super-secret-jwt-signing-key-for-production-2024",
    "super_secret_key_for_hs256_tokens_do_not_share",
    "deadbeef" * 8,
    base64.b64encode(bytes(32)).decode(),
]


def random_secrets() -> list[str]:
    """What the documentation and `sluice dev` make: openssl rand -base64/-hex 32, token_urlsafe(32)."""
    return [
        base64.b64encode(os.urandom(32)).decode(),
        os.urandom(32).hex(),
        secrets.token_urlsafe(32),
    ]


@pytest.mark.parametrize("secret", WEAK)
def test_placeholders_and_patterns_are_weak(secret: str) -> None:
    assert estimated_bits(secret) < 110
    assert weakness(secret) == (
        f"looks like a placeholder or a made-up string (about {estimated_bits(secret):.0f} bits of "
        f"randomness, at least {MIN_BITS} are needed)"
    )


def test_random_secrets_pass_with_a_wide_margin() -> None:
    for _ in range(2000):
        for secret in random_secrets():
            assert estimated_bits(secret) > 180, secret
            assert weakness(secret) is None


def test_check_secret_names_the_setting_and_how_to_make_one() -> None:
    with pytest.raises(ValueError) as info:
        check_secret(SecretStr("replace-with-32-or-more-random-bytes"), "query.admin_token")
    assert str(info.value) == (
        "query.admin_token looks like a placeholder or a made-up string (about 74 bits of randomness, at "
        "least 128 are needed): use 32 random bytes, e.g. `openssl rand -base64 32` or "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
    )


def test_the_gateway_refuses_a_weak_jwt_secret_by_kid_too() -> None:
    with pytest.raises(ConfigurationError) as info:
        verification_keys(AuthSettings(jwt_secrets={"k1": SecretStr("changeme-changeme-changeme-changeme")}))
    assert str(info.value).startswith("auth.jwt_secrets['k1'] looks like a placeholder or a made-up string (about 20 bits")
    assert str(info.value).endswith("(hint: use 32 random bytes, e.g. `openssl rand -base64 32` or "
                                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    for secret in random_secrets():
        assert verification_keys(AuthSettings(jwt_secret=SecretStr(secret))) == {None: secret.encode()}


def test_settings_refuse_a_weak_admin_token_or_encryption_key_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(query={"admin_token": "passwordpasswordpasswordpassword"})  # type: ignore[arg-type]
    assert "query.admin_token looks like a placeholder or a made-up string (about 14 bits" in str(info.value)
    assert "passwordpassword" not in str(info.value)
    zeros = base64.b64encode(bytes(32)).decode()
    with pytest.raises(ValidationError, match=r"encryption.keys\['k1'\] looks like a placeholder"):
        Settings(encryption={"keys": {"k1": zeros}})  # type: ignore[arg-type]
    token, key = secrets.token_urlsafe(32), base64.b64encode(os.urandom(32)).decode()
    settings = Settings(query={"admin_token": token}, encryption={"keys": {"k1": key}})  # type: ignore[arg-type]
    assert settings.query.admin_token is not None and settings.query.admin_token.get_secret_value() == token
