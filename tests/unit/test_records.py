"""The raw-topic record contract: the headers the gateway writes and how every reader reads a record."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import SecretStr

from sluice.client import log_envelope
from sluice.crypto import Keyring, generate_master_key
from sluice.records import CONTENT_TYPE_BATCH, Headers, decode_record, header, raw_headers
from sluice.settings import EncryptionSettings
from sluice.streams.exceptions import DecodeError
from sluice.v1.envelope_pb2 import EnvelopeBatch

KEYRING = Keyring(EncryptionSettings(keys={"k1": SecretStr(generate_master_key())}))
VALUE = EnvelopeBatch(batch=[log_envelope("hello", source_id="web", timestamp=7)]).SerializeToString()
ROW = ["ak_rec", 7, "web", "", "OUT", "hello", {}, 3, 41, 0]


@dataclass(frozen=True)
class Raw:
    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int = 3
    offset: int = 41


def test_a_plain_record_carries_its_content_type_and_a_batch_id_only() -> None:
    first, second = raw_headers(), raw_headers()
    assert [name for name, _ in first] == ["content-type", "batch-id"]
    assert header(first, "content-type") == CONTENT_TYPE_BATCH == b"application/x-sluice-batch+proto"
    ids = [header(first, "batch-id"), header(second, "batch-id")]
    assert all(i is not None and len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids[0] != ids[1]


def test_an_encrypted_record_names_its_algorithm_and_master_key() -> None:
    headers = raw_headers("k1")
    assert [(n, v) for n, v in headers if n != "batch-id"] == [
        ("content-type", CONTENT_TYPE_BATCH), ("encryption", b"aes-256-gcm"), ("key-id", b"k1"),
    ]


def test_decode_record_decrypts_then_decodes() -> None:
    kid, blob = KEYRING.encrypt("ak_rec", VALUE)
    assert decode_record(Raw(b"ak_rec:1", blob, raw_headers(kid)), KEYRING).logs == [ROW]
    assert decode_record(Raw(b"ak_rec", VALUE, raw_headers()), KEYRING).logs == [ROW]


def test_records_of_earlier_gateways_read_the_same() -> None:
    old = [("content-type", CONTENT_TYPE_BATCH), ("schema-version", b"1"), ("batch-id", b"0" * 32),
           ("access-key", b"ak_rec")]
    assert decode_record(Raw(b"ak_rec", VALUE, old), KEYRING).logs == [ROW]
    assert decode_record(Raw(b"ak_rec", VALUE, ()), KEYRING).logs == [ROW]  # no content type: a batch


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([("content-type", b"text/plain")], "no decoder for content type b'text/plain'"),
        ([("key-id", b"k9")], "cannot decrypt: unknown encryption key id 'k9'"),
        ([("encryption", b"rot13"), ("key-id", b"k1")], "cannot decrypt: unknown encryption algorithm b'rot13'"),
        ([("encryption", b"aes-256-gcm"), ("key-id", b"k1")], "cannot decrypt for access key 'ak_rec' with key id 'k1'"),
    ],
)
def test_a_record_that_cannot_be_read_says_why(headers: Headers, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_record(Raw(b"ak_rec", VALUE, headers), KEYRING)
    assert str(caught.value) == reason


def test_a_record_encrypted_for_another_key_does_not_decrypt() -> None:
    kid, blob = KEYRING.encrypt("ak_other", VALUE)
    with pytest.raises(DecodeError, match="^cannot decrypt for access key 'ak_rec' with key id 'k1'$"):
        decode_record(Raw(b"ak_rec", blob, raw_headers(kid)), KEYRING)
