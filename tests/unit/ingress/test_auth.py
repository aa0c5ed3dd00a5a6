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

SECRET = "unit-test-secret-4f8de291985e9f5748daa5d071870fdceb5e10c1d9908c07"
KEY = "ak_unit_me"
HEX_64 = "0b155127946717f3d3a3c47fd35cb15c33f135a326cc05299bcc0f211bdd4aa9"


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
    other = AuthSettings(jwt_secret="another-secret-fcb5036e6c4d0ed173bef170002104b6310cd5253acb4218")  # type: ignore[arg-type]
    assert reason(TokenVerifier(hs()), bearer(issue_token(other, KEY, 60))) == "token signature is invalid"


def test_expired_beyond_leeway() -> None:
    token = issue_token(hs(), KEY, 60, now=time.time() - 60 - 31)
    assert reason(TokenVerifier(hs(leeway=30)), bearer(token)) == "token has expired"


def test_expired_within_leeway_is_accepted() -> None:
    token = issue_token(hs(), KEY, 60, now=time.time() - 60 - 10)
    assert TokenVerifier(hs(leeway=30)).verify(bearer(token), KEY) == KEY


def test_issued_in_the_future() -> None:
    token = issue_token(hs(), KEY, 60, now=time.time() + 120)
    assert reason(TokenVerifier(hs(leeway=30)), bearer(token)) == "token was issued in the future ('iat')"


def test_issued_in_the_future_within_leeway_is_accepted() -> None:
    token = issue_token(hs(), KEY, 60, now=time.time() + 20)
    assert TokenVerifier(hs(leeway=30)).verify(bearer(token), KEY) == KEY


def test_not_before_is_honoured() -> None:
    verifier = TokenVerifier(hs(leeway=30))
    early = jwt.encode(claims(nbf=int(time.time()) + 60), SECRET, algorithm="HS256")
    assert reason(verifier, bearer(early)) == "token is not valid yet ('nbf')"
    within_leeway = jwt.encode(claims(nbf=int(time.time()) + 20), SECRET, algorithm="HS256")
    assert verifier.verify(bearer(within_leeway), KEY) == KEY


def test_lifetime_is_bounded() -> None:
    now = int(time.time())
    verifier = TokenVerifier(hs(max_token_lifetime=3600))
    too_long = jwt.encode(claims(iat=now, exp=now + 3601), SECRET, algorithm="HS256")
    assert reason(verifier, bearer(too_long)) == "token lifetime (exp - iat = 3601s) exceeds the limit of 3600s"
    just_right = jwt.encode(claims(iat=now, exp=now + 3600), SECRET, algorithm="HS256")
    assert verifier.verify(bearer(just_right), KEY) == KEY


def test_issue_token_refuses_a_lifetime_over_the_limit() -> None:
    with pytest.raises(ValueError, match=r"^ttl_seconds 7201 exceeds auth.max_token_lifetime \(7200s\)$"):
        issue_token(hs(max_token_lifetime=7200), KEY, 7201)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sub": 42}, "token 'sub' claim is not a string"),
        ({"iat": "yesterday"}, "malformed token: Issued At claim (iat) must be an integer."),
        ({"exp": "soon"}, "malformed token: Expiration Time claim (exp) must be an integer."),
    ],
)
def test_claims_of_the_wrong_type(overrides: dict[str, object], message: str) -> None:
    token = jwt.encode(claims(**overrides), SECRET, algorithm="HS256")
    assert reason(TokenVerifier(hs()), bearer(token)) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": "+60"}, "malformed token: its 'exp' claim is a string, not a number of seconds since the epoch"),
        ({"iat": "+0"}, "malformed token: its 'iat' claim is a string, not a number of seconds since the epoch"),
        ({"nbf": "+0"}, "malformed token: its 'nbf' claim is a string, not a number of seconds since the epoch"),
        ({"iat": True}, "malformed token: its 'iat' claim is a boolean, not a number of seconds since the epoch"),
        ({"exp": float("inf")}, "malformed token: Expiration Time claim (exp) must be an integer."),
        ({"nbf": [1]}, "malformed token: Not Before claim (nbf) must be an integer."),
    ],
)
def test_signed_time_claims_that_only_look_like_numbers(overrides: dict[str, object], message: str) -> None:
    """PyJWT takes what int() takes; the lifetime bound and the cache need numbers: refused, not a TypeError."""
    now = int(time.time())  # "+N": the time N seconds from now, as a string (made here: the run may be long)
    overrides = {k: str(now + int(v[1:])) if isinstance(v, str) and v.startswith("+") else v for k, v in overrides.items()}
    token = hmac_token(claims(**overrides), SECRET.encode())
    assert reason(TokenVerifier(hs()), bearer(token)) == message


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
    # A hand-made "none" token whose header also names a known key id changes nothing.
    forged = jwt.encode(claims(), None, algorithm="none", headers={"kid": "k1"})
    verifier = TokenVerifier(AuthSettings(jwt_secrets={"k1": SECRET}))  # type: ignore[dict-item]
    assert reason(verifier, bearer(forged)) == "token algorithm 'none' is not allowed (allowed: HS256)"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("a.b.c", "malformed token: Invalid header padding"),
        ("eyJhbGciOiJIUzI1NiJ9.e30", "malformed token: Not enough segments"),
        ("eyJhbGciOiJIUzI1NiJ9.%%%.c2ln", "malformed token: Invalid payload padding"),
        ("W10.e30.c2ln", "malformed token: Invalid header string: must be a json object"),
    ],
)
def test_garbage_tokens(token: str, message: str) -> None:
    assert reason(TokenVerifier(hs()), bearer(token)) == message


# --- key ids (kid) and rotation --------------------------------------------------------

OLD = "old-secret-ac325b7f9fa10085b6e0a50e960a9ed1a9f4fab98913eeeb"
NEW = "new-secret-6b0b77b282606c636ff97b55951b2c9585eece3ca5a13c5a"


def keyed(*kids: str, current: str | None = None, default: str | None = None) -> AuthSettings:
    secrets = {"k-old": OLD, "k-new": NEW}
    return AuthSettings(
        jwt_secret=default, jwt_secrets={k: secrets[k] for k in kids}, jwt_kid=current  # type: ignore[arg-type]
    )


def test_issued_token_carries_the_current_kid() -> None:
    token = issue_token(keyed("k-old", "k-new", current="k-new"), KEY, 60)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "k-new", "typ": "JWT"}
    assert jwt.decode(token, NEW, algorithms=["HS256"])["sub"] == KEY


def test_rotation_by_kid() -> None:
    """Tokens of the old key stay valid while it is configured, and only that long."""
    old_token = bearer(issue_token(keyed("k-old", current="k-old"), KEY, 60))
    new_token = bearer(issue_token(keyed("k-old", "k-new", current="k-new"), KEY, 60))
    during = TokenVerifier(keyed("k-old", "k-new", current="k-new"))
    assert during.verify(old_token, KEY) == KEY
    assert during.verify(new_token, KEY) == KEY
    after = TokenVerifier(keyed("k-new", current="k-new"))
    assert after.verify(new_token, KEY) == KEY
    assert reason(after, old_token) == "unknown key id 'k-old'"


def test_kid_selects_the_key() -> None:
    """A token signed with one key but naming another key's id is refused."""
    forged = jwt.encode(claims(), OLD, algorithm="HS256", headers={"kid": "k-new"})
    assert reason(TokenVerifier(keyed("k-old", "k-new")), bearer(forged)) == "token signature is invalid"


def test_token_without_kid_needs_the_default_key() -> None:
    plain = bearer(issue_token(hs(), KEY, 60))
    assert reason(TokenVerifier(keyed("k-new")), plain) == "token lacks a 'kid' header"
    both = AuthSettings(jwt_secret=SECRET, jwt_secrets={"k-new": NEW})  # type: ignore[arg-type, dict-item]
    assert TokenVerifier(both).verify(plain, KEY) == KEY
    assert reason(TokenVerifier(hs()), bearer(issue_token(keyed("k-new", current="k-new"), KEY, 60))) == (
        "unknown key id 'k-new'"
    )


def test_kid_of_the_wrong_type() -> None:
    token = hmac_token(claims(), NEW.encode(), kid=7)  # type: ignore[arg-type]
    assert reason(TokenVerifier(keyed("k-new")), bearer(token)) == (
        "malformed token: Key ID header parameter must be a string"
    )


def test_current_kid_must_have_a_secret() -> None:
    with pytest.raises(ConfigurationError) as info:
        issue_token(keyed("k-old", current="k-new"), KEY, 60)
    assert str(info.value) == (
        "auth.jwt_kid 'k-new' has no secret in auth.jwt_secrets (hint: add it to SLUICE_AUTH_JWT_SECRETS)"
    )


def test_short_hmac_secrets_are_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(AuthSettings(jwt_secrets={"k1": "x" * 31}))  # type: ignore[dict-item]
    assert str(info.value) == (
        "auth.jwt_secrets['k1'] is too weak for HS256: The HMAC key is 31 bytes long, which is below "
        "the minimum recommended length of 32 bytes for SHA256. See RFC 7518 Section 3.2."
    )
    with pytest.raises(ConfigurationError, match=r"^auth.jwt_secret is too weak for HS512: The HMAC key is 63"):
        TokenVerifier(AuthSettings(jwt_secret=HEX_64[:63], algorithms=["HS512"]))  # type: ignore[arg-type]
    assert TokenVerifier(AuthSettings(jwt_secret=HEX_64, algorithms=["HS512"]))  # type: ignore[arg-type]


def test_empty_kid_is_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match="a key id \\(kid\\) must not be empty"):
        AuthSettings(jwt_secrets={"": SECRET})  # type: ignore[dict-item]


# --- public-key algorithms ---------------------------------------------------------------


def write_keys(tmp_path: Path, private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    priv = tmp_path / "jwt.key"
    pub = tmp_path / "jwt.pub"
    priv.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    pub.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ))
    return priv, pub


def hmac_token(payload: dict[str, object], secret: bytes, kid: str | None = None) -> str:
    """An HS256 token built by hand (PyJWT refuses to use a PEM key as an HMAC secret)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header: dict[str, object] = {"alg": "HS256", "typ": "JWT"} | ({} if kid is None else {"kid": kid})
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(payload).encode())
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
    keyed_verifier = TokenVerifier(AuthSettings(algorithms=["RS256"], jwt_public_key_files={"r1": pub}))
    forged = hmac_token(claims(), pub.read_bytes(), kid="r1")
    assert reason(keyed_verifier, bearer(forged)) == "token algorithm 'HS256' is not allowed (allowed: RS256)"


def test_public_keys_by_kid(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    priv, pub = write_keys(tmp_path, rsa_key)
    other_priv, other_pub = write_keys(tmp_path / "other", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    verifier = TokenVerifier(AuthSettings(algorithms=["RS256"], jwt_public_key_files={"r1": pub, "r2": other_pub}))
    for kid, key in (("r1", priv), ("r2", other_priv)):
        token = issue_token(AuthSettings(algorithms=["RS256"], jwt_private_key_file=key, jwt_kid=kid), KEY, 60)
        assert jwt.get_unverified_header(token)["kid"] == kid
        assert verifier.verify(bearer(token), KEY) == KEY
    swapped = issue_token(AuthSettings(algorithms=["RS256"], jwt_private_key_file=priv, jwt_kid="r2"), KEY, 60)
    assert reason(verifier, bearer(swapped)) == "token signature is invalid"


def test_weak_rsa_key_is_refused(tmp_path: Path) -> None:
    _, pub = write_keys(tmp_path, rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(AuthSettings(algorithms=["RS256"], jwt_public_key_files={"r1": pub}))
    assert str(info.value) == (
        f"{pub} is too weak for RS256: The RSA key is 1024 bits long, which is below the minimum "
        "recommended size of 2048 bits. See NIST SP 800-131A."
    )


def test_ec_key_on_the_wrong_curve_is_refused(tmp_path: Path) -> None:
    _, pub = write_keys(tmp_path, ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(AuthSettings(algorithms=["ES256"], jwt_public_key_file=pub))
    assert str(info.value) == (
        f"{pub} cannot be used for ES256: The key's curve 'secp384r1' does not match the expected curve "
        "'secp256r1' for this algorithm"
    )


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


def test_keys_by_kid_pass_through_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`sluice dev` hands its settings to children as SLUICE_* variables: secrets and paths by kid too."""
    from sluice.settings import Settings

    settings = Settings(
        auth={"jwt_secrets": {"k1": OLD, "k2": NEW}, "jwt_kid": "k2", "jwt_public_key_files": {}},
    )  # type: ignore[arg-type]
    env = settings.to_env()
    assert json.loads(env["SLUICE_AUTH_JWT_SECRETS"]) == {"k1": OLD, "k2": NEW}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().auth == settings.auth
    rs = AuthSettings(algorithms=["RS256"], jwt_public_key_files={"r1": tmp_path / "r1.pem"})
    monkeypatch.setenv("SLUICE_AUTH_ALGORITHMS", '["RS256"]')
    monkeypatch.setenv("SLUICE_AUTH_JWT_PUBLIC_KEY_FILES", Settings(auth=rs).to_env()["SLUICE_AUTH_JWT_PUBLIC_KEY_FILES"])
    assert Settings().auth.jwt_public_key_files == {"r1": tmp_path / "r1.pem"}


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [time.time()]
    verifier = TokenVerifier(hs(leeway=5), clock=lambda: now[0])
    token = issue_token(hs(), KEY, 60, now=now[0])
    exp = jwt.decode(token, SECRET, algorithms=["HS256"])["exp"]
    decodes: list[str] = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda t, *a, **kw: decodes.append(t) or real_decode(t, *a, **kw))
    assert verifier.verify(bearer(token), KEY) == KEY
    assert verifier.verify(bearer(token), KEY) == KEY
    assert decodes == [token]  # the second call skipped the checks
    # The subject is still compared on every call.
    assert reason(verifier, bearer(token), "ak_other") == f"token subject {KEY!r} does not match x-access-key 'ak_other'"
    now[0] = exp + 5 - 0.001
    assert verifier.verify(bearer(token), KEY) == KEY and len(decodes) == 1
    now[0] = exp + 5  # past exp + leeway by this clock: checked again (pyjwt's own clock still accepts it)
    assert verifier.verify(bearer(token), KEY) == KEY and len(decodes) == 2


def test_a_refused_token_is_not_remembered_and_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(hs(leeway=0))
    early = jwt.encode(claims(nbf=int(time.time()) + 60), SECRET, algorithm="HS256")
    assert reason(verifier, bearer(early)) == "token is not valid yet ('nbf')"
    assert reason(verifier, bearer(early)) == "token is not valid yet ('nbf')"
    monkeypatch.setattr(TokenVerifier, "CACHE_TOKENS", 3)
    tokens = [issue_token(hs(), KEY, 60 + i) for i in range(4)]
    for token in tokens:
        assert verifier.verify(bearer(token), KEY) == KEY
    assert list(verifier._verified) == tokens[3:]


def test_a_remembered_token_expires_by_the_real_clock_too() -> None:
    verifier = TokenVerifier(hs(leeway=0))
    token = jwt.encode(claims(exp=int(time.time()) + 1), SECRET, algorithm="HS256")
    assert verifier.verify(bearer(token), KEY) == KEY
    time.sleep(max(0.0, jwt.decode(token, SECRET, algorithms=["HS256"])["exp"] - time.time()) + 0.05)
    assert reason(verifier, bearer(token)) == "token has expired"
