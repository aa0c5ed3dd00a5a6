"""TLS and mutual TLS of the gateway, and JWT key rotation, through real gRPC against Tansu.

Handshakes that must fail are asserted to fail with UNAVAILABLE (the call never reaches the
gateway) and to publish nothing; those that must succeed send envelopes and read them back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import jwt
import pytest
import pytest_asyncio
from pydantic import SecretStr

from sluice.certs import TlsFiles, generate_self_signed, issue_client_cert
from sluice.client.retry import RetryPolicy
from sluice.client import ClientError, SluiceClient
from sluice.client.tls import tls_credentials
from sluice.exceptions import ConfigurationError
from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from tests.integration.gateway_helpers import add_key, counters, envelopes_of, read_topic

KEY = "ak_tls"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return generate_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Another CA, with a server and a client certificate nobody here trusts."""
    return generate_self_signed(tmp_path_factory.mktemp("stranger"))


async def started(settings: Settings) -> Gateway:
    gateway = Gateway(settings)
    await gateway.start()
    await add_key(gateway.keys, KEY)
    return gateway


@pytest_asyncio.fixture
async def tls_gateway(settings: Settings, certs: TlsFiles) -> AsyncIterator[Gateway]:
    settings.tls.cert_file, settings.tls.key_file = certs.server_cert, certs.server_key
    gateway = await started(settings)
    assert gateway.transport == "TLS"
    yield gateway
    await gateway.stop()


@pytest_asyncio.fixture
async def mtls_gateway(settings: Settings, certs: TlsFiles) -> AsyncIterator[Gateway]:
    settings.tls.cert_file, settings.tls.key_file = certs.server_cert, certs.server_key
    settings.tls.client_ca_file = certs.ca_cert
    gateway = await started(settings)
    assert gateway.transport == "mutual TLS"
    yield gateway
    await gateway.stop()


async def send(gateway: Gateway, credentials: grpc.ChannelCredentials | None, n: int = 3) -> int:
    token = issue_token(gateway.settings.auth, KEY, 60)
    # A refused handshake is UNAVAILABLE, which the client would otherwise retry for a minute.
    async with SluiceClient(
        gateway.address, KEY, token, credentials=credentials, timeout=10, retry=RetryPolicy.never()
    ) as client:
        return await client.send(counters(n))


async def refused_handshake(gateway: Gateway, credentials: grpc.ChannelCredentials | None, reason: str) -> None:
    """The connection fails: the server closes it, or the client does not trust the server."""
    with pytest.raises(ClientError) as info:
        await send(gateway, credentials)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE, info.value
    assert info.value.details.startswith("failed to connect to all addresses; last error: ")
    assert info.value.details.endswith(reason), info.value.details
    assert info.value.accepted is None


async def published(gateway: Gateway) -> int:
    kafka = gateway.settings.kafka
    return len(envelopes_of(await read_topic(kafka.bootstrap, kafka.raw_topic)))


async def test_tls_handshake_and_send(tls_gateway: Gateway, certs: TlsFiles) -> None:
    assert await send(tls_gateway, tls_credentials(certs.ca_cert)) == 3
    assert await published(tls_gateway) == 3


async def test_plaintext_client_is_refused_by_a_tls_gateway(tls_gateway: Gateway) -> None:
    await refused_handshake(tls_gateway, None, ": Socket closed")
    assert await published(tls_gateway) == 0


async def test_client_that_does_not_trust_the_ca_is_refused(tls_gateway: Gateway, stranger: TlsFiles) -> None:
    await refused_handshake(
        tls_gateway, tls_credentials(stranger.ca_cert), "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK"
    )
    assert await published(tls_gateway) == 0


async def test_mtls_with_a_client_certificate(mtls_gateway: Gateway, certs: TlsFiles) -> None:
    cert, key = issue_client_cert(certs, "agent-1")
    assert await send(mtls_gateway, tls_credentials(certs.ca_cert, cert, key)) == 3
    assert await published(mtls_gateway) == 3


async def test_mtls_refuses_a_client_without_a_certificate(mtls_gateway: Gateway, certs: TlsFiles) -> None:
    await refused_handshake(mtls_gateway, tls_credentials(certs.ca_cert), ": Socket closed")
    assert await published(mtls_gateway) == 0


async def test_mtls_refuses_a_certificate_of_another_ca(
    mtls_gateway: Gateway, certs: TlsFiles, stranger: TlsFiles
) -> None:
    cert, key = issue_client_cert(stranger, "intruder")
    await refused_handshake(mtls_gateway, tls_credentials(certs.ca_cert, cert, key), ": Socket closed")
    assert await published(mtls_gateway) == 0


# --- JWT key rotation by kid ------------------------------------------------------------

OLD = "rotation-old-ac325b7f9fa10085b6e0a50e960a9ed1a9f4fab98913eeeb"
NEW = "rotation-new-6b0b77b282606c636ff97b55951b2c9585eece3ca5a13c5a"


async def test_token_rotation_by_kid(settings: Settings) -> None:
    """Add the new key and issue with it; old tokens pass until the old key id is removed."""
    settings.auth.jwt_secret = None
    settings.auth.jwt_secrets = {"k-old": SecretStr(OLD), "k-new": SecretStr(NEW)}
    old_auth = settings.auth.model_copy(update={"jwt_kid": "k-old"})
    settings.auth.jwt_kid = "k-new"
    old_token = issue_token(old_auth, KEY, 600)
    new_token = issue_token(settings.auth, KEY, 600)
    assert jwt.get_unverified_header(new_token)["kid"] == "k-new"

    async def send_with(gateway: Gateway, token: str) -> int:
        async with SluiceClient(gateway.address, KEY, token, timeout=10) as client:
            return await client.send(counters(2))

    gateway = await started(settings)
    try:
        assert await send_with(gateway, old_token) == 2
        assert await send_with(gateway, new_token) == 2
    finally:
        await gateway.stop()

    settings.auth.jwt_secrets = {"k-new": SecretStr(NEW)}
    gateway = await started(settings)
    try:
        with pytest.raises(ClientError) as info:
            await send_with(gateway, old_token)
        assert (info.value.code, info.value.details) == (grpc.StatusCode.UNAUTHENTICATED, "unknown key id 'k-old'")
        assert await send_with(gateway, new_token) == 2
        assert await published(gateway) == 6
    finally:
        await gateway.stop()


def test_tls_misconfiguration_is_refused_at_construction(settings: Settings, certs: TlsFiles) -> None:
    settings.tls.cert_file = certs.server_cert
    with pytest.raises(ConfigurationError) as info:
        Gateway(settings)
    assert str(info.value) == (
        "tls.cert_file is set but tls.key_file is not (hint: set SLUICE_TLS_KEY_FILE to its PEM private key)"
    )
