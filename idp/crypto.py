"""Keys derived from the instance secrets; digests, sealing, password hashing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(secret: str, purpose: str) -> bytes:
    """A 256-bit key for one purpose, derived from an instance secret (RFC 5869 HKDF)."""
    if not secret:
        raise ValueError("instance secret is empty: run `cityid init` or set CITYID_SECRET_KEY")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"cityid-v1", info=purpose.encode()).derive(
        secret.encode()
    )


def equal(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison of two secrets, text or bytes (text as UTF-8).

    ``hmac.compare_digest`` refuses text with non-ASCII characters (TypeError): for a value from
    the network that would be a 500 instead of a refusal."""
    return hmac.compare_digest(
        a.encode() if isinstance(a, str) else a, b.encode() if isinstance(b, str) else b
    )


def keyed_digest(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def random_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Sealer:
    """AES-256-GCM with a random 96-bit nonce; the associated data names the field."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], context.encode())


# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
ARGON2_PARAMETERS = {"time_cost": 2, "memory_cost": 19456, "parallelism": 1}
PASSWORD_HASHER = PasswordHasher(
    time_cost=ARGON2_PARAMETERS["time_cost"],
    memory_cost=ARGON2_PARAMETERS["memory_cost"],
    parallelism=ARGON2_PARAMETERS["parallelism"],
)
# A hash to verify against when no account exists, so that timing does not tell.
_DUMMY_HASH = PASSWORD_HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return PASSWORD_HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return PASSWORD_HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
