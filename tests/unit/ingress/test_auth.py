"""Token verification and issuing, and access-key authorization: every reason, exact messages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sluice.exceptions import ConfigurationError
from sluice.ingress.auth import Authenticator, TokenVerifier, issue_token, metadata_value
from sluice.ingress.exceptions import PermissionDenied, Unauthenticated
from sluice.keys import AccessKeyConfig, InvalidAccessKey, JsonKeyStore
from sluice.settings import AuthSettings

SECRET = "unit-test-secret-" + "0123456789abcdef" * 4
KEY = "ak_unit_me"


def hs(**kw: object) -> AuthSettings:
    return AuthSettings(jwt_secret=SECRET, **kw)  # type: ignore[arg-type]


def bearer(token: str) -> str:
    return f"Bearer {token}"


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {"sub": KEY, "iat": now, "exp": now + 60}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def reason(verifier: TokenVerifier, authorization: str | None, access_key: str | None = KEY) -> str:
    with pytest.raises(Unauthenticated) as info:
        verifier.verify(authorization, access_key)
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    return str(info.value)


def test_issued_token_verifies_to_its_access_key() -> None:
    auth = hs()
    token = issue_token(auth, KEY, 60)
    assert TokenVerifier(auth).verify(bearer(token), KEY) == KEY
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert decoded["sub"] == KEY
    assert decoded["exp"] - decoded["iat"] == 60
    assert set(decoded) == {"sub", "iat", "exp"}


def test_issued_token_carries_configured_audience_and_issuer() -> None:
    auth = hs(audience="sluice-ingress", issuer="sluice-ca", algorithms=["HS512"])
    token = issue_token(auth, KEY, 30, now=1_000_000)
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    assert jwt.decode(token, options={"verify_signature": False}) == {
        "sub": KEY, "iat": 1_000_000, "exp": 1_000_030, "aud": "sluice-ingress", "iss": "sluice-ca",
    }
    assert TokenVerifier(auth).verify(bearer(issue_token(auth, KEY, 30)), KEY) == KEY


def test_missing_metadata() -> None:
    verifier = TokenVerifier(hs())
    assert reason(verifier, None) == "missing 'authorization' metadata: expected 'Bearer <JWT>'"
    assert reason(verifier, "") == "missing 'authorization' metadata: expected 'Bearer <JWT>'"
    token = bearer(issue_token(hs(), KEY, 60))
    assert reason(verifier, token, None) == "missing 'x-access-key' metadata"


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   ", "token-without-scheme"])
def test_malformed_authorization_header(header: str) -> None:
    assert reason(TokenVerifier(hs()), header) == (
        "malformed 'authorization' metadata: expected 'Bearer <JWT>'"
    )


def test_scheme_is_case_insensitive() -> None:
    token = issue_token(hs(), KEY, 60)
    assert TokenVerifier(hs()).verify(f"bearer {token}", KEY) == KEY


def test_malformed_token() -> None:
    assert reason(TokenVerifier(hs()), "Bearer not-a-jwt") == "malformed token: Not enough segments"


def test_bad_signature() -> None:
    other = AuthSettings(jwt_secret="another-secret-" + "0123456789abcdef" * 4)  # type: ignore[arg-type]
    assert reason(TokenVerifier(hs()), bearer(issue_token(other, KEY, 60))) == "token signature is invalid"


def test_expired_beyond_leeway() -> None:
    token = issue_token(hs(), KEY, 60, now=time.time() - 60 - 31)
    assert reason(TokenVerifier(hs(leeway=30)), bearer(token)) == "token has expired"


def test_expired_within_leeway_is_accepted() -> None:
    token = issue_token(hs(), KEY, 60, now=time.time() - 60 - 10)
    assert TokenVerifier(hs(leeway=30)).verify(bearer(token), KEY) == KEY


def test_issued_in_the_future() -> None:
    token = issue_token(hs(), KEY, 60, now=time.time() + 120)
    assert reason(TokenVerifier(hs(leeway=30)), bearer(token)) == "token is not valid yet"


@pytest.mark.parametrize("claim", ["exp", "sub", "iat"])
def test_required_claims(claim: str) -> None:
    token = jwt.encode(claims(**{claim: None}), SECRET, algorithm="HS256")
    assert reason(TokenVerifier(hs()), bearer(token)) == f"token lacks the {claim!r} claim"


def test_wrong_audience() -> None:
    token = issue_token(hs(audience="elsewhere"), KEY, 60)
    assert reason(TokenVerifier(hs(audience="sluice")), bearer(token)) == "token audience is not 'sluice'"


def test_missing_audience_when_configured() -> None:
    token = issue_token(hs(), KEY, 60)
    assert reason(TokenVerifier(hs(audience="sluice")), bearer(token)) == "token lacks the 'aud' claim"


def test_audience_when_none_is_expected() -> None:
    token = issue_token(hs(audience="sluice"), KEY, 60)
    assert reason(TokenVerifier(hs()), bearer(token)) == (
        "token has an audience but the gateway expects none"
    )


def test_wrong_and_missing_issuer() -> None:
    verifier = TokenVerifier(hs(issuer="sluice-ca"))
    assert reason(verifier, bearer(issue_token(hs(issuer="mallory"), KEY, 60))) == (
        "token issuer is not 'sluice-ca'"
    )
    assert reason(verifier, bearer(issue_token(hs(), KEY, 60))) == "token lacks the 'iss' claim"


def test_subject_must_be_the_access_key() -> None:
    token = issue_token(hs(), "ak_someone_else", 60)
    assert reason(TokenVerifier(hs()), bearer(token)) == (
        "token subject 'ak_someone_else' does not match x-access-key 'ak_unit_me'"
    )


def test_algorithm_not_allowed() -> None:
    token = issue_token(hs(algorithms=["HS512"]), KEY, 60)
    assert reason(TokenVerifier(hs(algorithms=["HS256", "HS384"])), bearer(token)) == (
        "token algorithm 'HS512' is not allowed (allowed: HS256, HS384)"
    )


def test_unsigned_token_is_refused() -> None:
    token = jwt.encode(claims(), None, algorithm="none")
    assert reason(TokenVerifier(hs()), bearer(token)) == (
        "token algorithm 'none' is not allowed (allowed: HS256)"
    )


# --- public-key algorithms ---------------------------------------------------------------


def write_keys(tmp_path: Path, private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    priv = tmp_path / "jwt.key"
    pub = tmp_path / "jwt.pub"
    priv.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    pub.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ))
    return priv, pub


def hmac_token(payload: dict[str, object], secret: bytes) -> str:
    """An HS256 token built by hand (PyJWT refuses to use a PEM key as an HMAC secret)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("algorithm", ["RS256", "PS256", "ES256"])
def test_public_key_algorithms(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, algorithm: str) -> None:
    private = ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256" else rsa_key
    priv, pub = write_keys(tmp_path, private)
    auth = AuthSettings(
        algorithms=[algorithm], jwt_private_key_file=priv, jwt_public_key_file=pub  # type: ignore[list-item]
    )
    token = issue_token(auth, KEY, 60)
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    assert TokenVerifier(auth).verify(bearer(token), KEY) == KEY


def test_hmac_token_signed_with_the_public_key_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """The key-confusion attack: an HS256 token whose secret is the server's public key."""
    _, pub = write_keys(tmp_path, rsa_key)
    verifier = TokenVerifier(AuthSettings(algorithms=["RS256"], jwt_public_key_file=pub))
    forged = hmac_token(claims(), pub.read_bytes())
    assert reason(verifier, bearer(forged)) == "token algorithm 'HS256' is not allowed (allowed: RS256)"


# --- configuration errors --------------------------------------------------------------


def test_no_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(AuthSettings())
    assert str(info.value) == (
        "no JWT key: auth.jwt_secret is not set but the allowed algorithms are ['HS256'] "
        "(hint: set SLUICE_AUTH_JWT_SECRET)"
    )


def test_no_public_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(AuthSettings(algorithms=["RS256"]))
    assert str(info.value) == (
        "no JWT key: auth.jwt_public_key_file is not set but the allowed algorithms are ['RS256'] "
        "(hint: set SLUICE_AUTH_JWT_PUBLIC_KEY_FILE to a PEM file)"
    )


def test_unreadable_and_invalid_key_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pub"
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(AuthSettings(algorithms=["RS256"], jwt_public_key_file=missing))
    assert str(info.value) == f"cannot read auth.jwt_public_key_file {missing}: No such file or directory"
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key")
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(AuthSettings(algorithms=["RS256"], jwt_public_key_file=garbage))
    assert str(info.value) == f"{garbage} is not a PEM public key"


def test_key_of_the_wrong_family(tmp_path: Path) -> None:
    _, pub = write_keys(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(AuthSettings(algorithms=["RS256"], jwt_public_key_file=pub))
    assert str(info.value) == f"{pub} holds an EC key, which cannot verify RS256 tokens"


def test_issue_token_validates_its_arguments() -> None:
    with pytest.raises(InvalidAccessKey):
        issue_token(hs(), "bad key!", 60)
    with pytest.raises(ValueError, match=r"^ttl_seconds must be > 0, got 0$"):
        issue_token(hs(), KEY, 0)
    with pytest.raises(ConfigurationError, match="jwt_private_key_file is not set"):
        issue_token(AuthSettings(algorithms=["ES256"]), KEY, 60)


# --- access keys ---------------------------------------------------------------------


@pytest.fixture
def authenticator(tmp_path: Path) -> Authenticator:
    store = JsonKeyStore(tmp_path / "keys.json")
    store.put(AccessKeyConfig(access_key=KEY))
    store.put(AccessKeyConfig(access_key="ak_disabled", enabled=False))
    return Authenticator(TokenVerifier(hs()), store)


def metadata(key: str, token_key: str | None = None) -> list[tuple[str, str]]:
    token = issue_token(hs(), token_key or key, 60)
    return [("user-agent", "test"), ("authorization", bearer(token)), ("x-access-key", key)]


def test_known_enabled_key(authenticator: Authenticator) -> None:
    assert authenticator.authenticate(metadata(KEY)).access_key == KEY


@pytest.mark.parametrize(
    ("key", "message"),
    [("ak_unknown", "unknown access key 'ak_unknown'"), ("ak_disabled", "access key 'ak_disabled' is disabled")],
)
def test_unknown_and_disabled_keys(authenticator: Authenticator, key: str, message: str) -> None:
    with pytest.raises(PermissionDenied) as info:
        authenticator.authenticate(metadata(key))
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert str(info.value) == message


def test_token_is_checked_before_the_key(authenticator: Authenticator) -> None:
    with pytest.raises(Unauthenticated, match="^token subject 'ak_x' does not match x-access-key 'ak_unknown'$"):
        authenticator.authenticate(metadata("ak_unknown", token_key="ak_x"))
    with pytest.raises(Unauthenticated, match="^missing 'authorization' metadata"):
        authenticator.authenticate(None)


def test_metadata_value_takes_the_first() -> None:
    md = [("a", "1"), ("b", b"2"), ("a", "3")]
    assert metadata_value(md, "a") == "1"
    assert metadata_value(md, "b") == "2"
    assert metadata_value(md, "c") is None
