"""Property-based: whatever bytes or fields arrive, the gateway's checks answer with their own
error (a precise status) and never with anything else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from google.protobuf.message import DecodeError

from sluice.ingress.auth import TokenVerifier
from sluice.ingress.exceptions import InvalidEnvelope, Unauthenticated
from sluice.ingress.validate import EnvelopeValidator
from sluice.settings import AuthSettings, GatewaySettings
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch

NOW = 1_700_000_000_000_000_000
VALIDATOR = EnvelopeValidator(GatewaySettings(max_tags=8, max_envelope_bytes=2048), clock=lambda: NOW)
FUZZ_SECRET = "fuzz-secret-d45d4496a16a22b08f0ece455e40e447faf200fe8185024a"
VERIFIER = TokenVerifier(AuthSettings(jwt_secret=FUZZ_SECRET))  # type: ignore[arg-type]

texts = st.text(max_size=40)
numbers = st.floats(allow_nan=True, allow_infinity=True)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    env = Envelope(timestamp=draw(int64), source_id=draw(texts), instance_id=draw(texts))
    for k, v in draw(st.dictionaries(texts, texts, max_size=12)).items():
        env.tags[k] = v
    kind = draw(st.sampled_from(["log", "counter", "gauge", "timer", "event", "none"]))
    if kind == "log":
        env.log.payload = draw(st.binary(max_size=3000))
    elif kind == "counter":
        env.counter.name = draw(texts)
        env.counter.delta = draw(st.integers(min_value=0, max_value=2**64 - 1))
    elif kind == "gauge":
        for name, value in draw(st.dictionaries(texts, numbers, max_size=4)).items():
            env.gauge.metrics[name].value = value
    elif kind == "timer":
        env.timer.name, env.timer.start, env.timer.stop = draw(texts), draw(int64), draw(int64)
    elif kind == "event":
        env.event.title, env.event.body = draw(texts), draw(texts)
    return env


@settings(max_examples=400, deadline=None)
@given(st.lists(envelopes(), max_size=5))
def test_any_envelopes_are_accepted_or_refused_as_invalid(batch: list[Envelope]) -> None:
    try:
        encoded = VALIDATOR.validate(batch, "ak_fuzz")
    except InvalidEnvelope as exc:
        assert str(exc).startswith("envelope[") and exc.reason != "invalid"
        return
    assert [Envelope.FromString(e) for e in encoded] == batch  # stamped in place, encoded as is
    assert all(0 < e.timestamp for e in batch)


@st.composite
def spliced_batches(draw: st.DrawFn) -> bytes:
    """A serialized batch of envelopes() with random bytes spliced in: mostly a batch still."""
    data = EnvelopeBatch(batch=draw(st.lists(envelopes(), max_size=3))).SerializeToString()
    at = draw(st.integers(min_value=0, max_value=len(data)))
    cut = draw(st.integers(min_value=0, max_value=4))
    return data[:at] + draw(st.binary(max_size=6)) + data[at + cut:]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=512), spliced_batches()))
def test_random_bytes_never_get_past_decoding_and_validation_unchecked(data: bytes) -> None:
    forwarded = VALIDATOR.forward(data)  # the fast path, on the bytes as received
    try:
        batch, received = EnvelopeBatch.FromString(data), EnvelopeBatch.FromString(data)
    except DecodeError:
        assert forwarded is None  # gRPC answers INTERNAL "failed to deserialize" before any handler runs
        return
    try:
        encoded = VALIDATOR.validate(batch.batch, "ak_fuzz")
    except InvalidEnvelope as exc:
        assert forwarded is None, "the fast path forwarded an invalid batch"
        assert str(exc).startswith("envelope[") and exc.reason != "invalid"
        return
    assert [Envelope.FromString(e) for e in encoded] == list(batch.batch)
    assert all(e.timestamp > 0 and e.source_id for e in batch.batch)
    if forwarded is not None:  # only what needs no stamping, envelope for envelope
        assert list(batch.batch) == list(received.batch)
        assert [Envelope.FromString(e) for e in forwarded] == list(received.batch)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))),
       st.sampled_from(["Bearer ", "bearer ", "", "Basic "]))
def test_any_authorization_is_refused_as_unauthenticated(token: str, scheme: str) -> None:
    try:
        VERIFIER.verify(scheme + token, "ak_fuzz")
    except Unauthenticated as exc:
        assert str(exc)
    else:
        raise AssertionError(f"accepted {token!r}")


# Any JSON value, NaN and the infinities included (Python's json reads them), and times near now
# as numbers and as strings (which PyJWT's own checks take).
near_now = st.integers(min_value=-120, max_value=120).map(lambda d: int(time.time()) + d)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=12)
    | near_now | near_now.map(str) | near_now.map(float),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
CLAIMS = ("exp", "iat", "nbf", "sub", "aud", "iss", "jti")


def signed(header: dict[str, object], payload: object) -> str:
    """A token correctly signed with the verifier's secret, whatever its header and payload hold."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(payload).encode())
    signature = hmac.new(FUZZ_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(st.sampled_from(CLAIMS), json_values, max_size=4),
       st.dictionaries(st.sampled_from(["kid", "typ", "crit", "cty"]), json_values, max_size=2),
       st.sets(st.sampled_from(CLAIMS), max_size=3))
def test_signed_tokens_with_any_claim_values_are_accepted_or_unauthenticated(
    overrides: dict[str, object], header: dict[str, object], removed: set[str]
) -> None:
    now = int(time.time())
    payload: dict[str, object] = {"sub": "ak_fuzz", "iat": now, "exp": now + 60} | overrides
    token = signed({"alg": "HS256"} | header, {k: v for k, v in payload.items() if k not in removed})
    try:
        assert VERIFIER.verify(f"Bearer {token}", "ak_fuzz") == "ak_fuzz"
    except Unauthenticated as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_signed_tokens_whose_payload_is_any_json_are_unauthenticated(payload: object) -> None:
    try:
        VERIFIER.verify(f"Bearer {signed({'alg': 'HS256'}, payload)}", "ak_fuzz")
    except Unauthenticated as exc:
        assert str(exc)
    else:
        raise AssertionError(f"accepted {payload!r}")
