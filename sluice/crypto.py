"""Encryption at rest of Kafka record values, for access keys configured with ``encrypt``.

Each access key gets its own data key, derived with HKDF-SHA256 from a master key and the
access key's name, so no data key is ever stored. Values are AES-256-GCM ciphertexts
``nonce (12) | ciphertext | tag (16)`` with the access key as associated data: a record moved
to another key's stream does not decrypt. The master key's id travels in the record's
``key-id`` header, so master keys can be rotated: encrypt with the current one, decrypt with
whichever the header names.
"""

from __future__ import annotations

import base64
import binascii
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sluice.exceptions import ConfigurationError, SluiceError
from sluice.settings import EncryptionSettings

ALGORITHM = b"aes-256-gcm"  # the value of a record's ``encryption`` header (sluice.records)
_NONCE = 12


class DecryptError(SluiceError):
    """A record cannot be decrypted (unknown key id, wrong key, tampered bytes)."""


def generate_master_key() -> str:
    """A new random master key, base64 as the settings take it."""
    return base64.b64encode(os.urandom(32)).decode()


class Keyring:
    """The master keys of the settings; encrypts with the current one."""

    def __init__(self, settings: EncryptionSettings) -> None:
        self._masters: dict[str, bytes] = {}
        for kid, secret in settings.keys.items():
            try:
                raw = base64.b64decode(secret.get_secret_value(), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigurationError(f"encryption key {kid!r} is not base64") from exc
            if len(raw) != 32:
                raise ConfigurationError(f"encryption key {kid!r} has {len(raw)} bytes; AES-256 needs 32")
            self._masters[kid] = raw
        self.current = settings.current or (next(iter(self._masters)) if self._masters else "")
        if self._masters and self.current not in self._masters:
            raise ConfigurationError(f"encryption.current {self.current!r} is not among encryption.keys")

    @property
    def enabled(self) -> bool:
        return bool(self._masters)

    @lru_cache(maxsize=4096)
    def _data_key(self, kid: str, access_key: str) -> AESGCM:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"sluice/v1/" + access_key.encode())
        return AESGCM(hkdf.derive(self._masters[kid]))

    def encrypt(self, access_key: str, plaintext: bytes) -> tuple[str, bytes]:
        """(key id, ciphertext) of ``plaintext`` for ``access_key``."""
        if not self.enabled:
            raise ConfigurationError(
                "access key is configured with encrypt=true but no encryption key is set",
                hint="set SLUICE_ENCRYPTION_KEYS='{\"k1\": \"<base64 of 32 bytes>\"}' on gateways and workers",
            )
        nonce = os.urandom(_NONCE)
        return self.current, nonce + self._data_key(self.current, access_key).encrypt(
            nonce, plaintext, access_key.encode()
        )

    def decrypt(self, access_key: str, kid: str, blob: bytes) -> bytes:
        """The plaintext of a value encrypted for ``access_key`` with master key ``kid``."""
        if kid not in self._masters:
            raise DecryptError(f"cannot decrypt: unknown encryption key id {kid!r}")
        try:
            return self._data_key(kid, access_key).decrypt(blob[:_NONCE], blob[_NONCE:], access_key.encode())
        except (InvalidTag, ValueError) as exc:
            raise DecryptError(f"cannot decrypt for access key {access_key!r} with key id {kid!r}") from exc
