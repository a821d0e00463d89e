"""Token-signing keys: ES256 by default, RS256 for legacy clients; rotation.

A new key is published in the JWKS ``publish_ahead`` before it signs, so that relying parties
that cache the JWKS already know it; a retired key stays published until every token it signed
has expired.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateNumbers, RSAPublicNumbers
from joserfc.jwk import ECKey, KeyParameters, KeySet, RSAKey
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from db import audit, utcnow
from idp.crypto import Sealer, derive_key, random_token
from idp.models import SigningKey

ALGORITHMS = ("ES256", "RS256")


def _sealer(passphrase: str) -> Sealer:
    return Sealer(derive_key(passphrase, "signing-key-encryption"))


def _b64_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _own_rsa_key(private: dict[str, Any], params: KeyParameters) -> RSAKey:
    """One of our RSA signing keys from its private JWK (RFC 7518 §6.3.2), without cryptography's
    key consistency check (``unsafe_skip_rsa_key_validation``): ~40 ms for 2048 bits, ~130 ms for
    3072, on every worker start and key reload. The check guards against a malformed key from
    an untrusted source; ours was generated here and comes back from AES-GCM, whose tag
    proves it is the JWK we sealed, byte for byte."""
    public = RSAPublicNumbers(_b64_int(private["e"]), _b64_int(private["n"]))
    numbers = RSAPrivateNumbers(
        p=_b64_int(private["p"]),
        q=_b64_int(private["q"]),
        d=_b64_int(private["d"]),
        dmp1=_b64_int(private["dp"]),
        dmq1=_b64_int(private["dq"]),
        iqmp=_b64_int(private["qi"]),
        public_numbers=public,
    )
    return RSAKey(numbers.private_key(unsafe_skip_rsa_key_validation=True), private, params)


def _generate(alg: str) -> ECKey | RSAKey:
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "RS256":
        return RSAKey.generate_key(2048, private=True)
    raise ValueError(f"unsupported signing algorithm {alg}")


def create_key(
    session: Session,
    passphrase: str,
    alg: str,
    *,
    active_from: dt.datetime | None = None,
    key: ECKey | RSAKey | None = None,
) -> SigningKey:
    """A new signing key row (``key``: one made before, e.g. by the tests, which reuse their
    RSA keys across test databases instead of spending 40 ms of CPU on each)."""
    key = key or _generate(alg)
    kid = random_token(16)
    public = key.as_dict(private=False)
    public.update({"kid": kid, "alg": alg, "use": "sig"})
    private = key.as_dict(private=True)
    row = SigningKey(
        kid=kid,
        alg=alg,
        public_jwk=json.dumps(public),
        private_enc=_sealer(passphrase).seal(json.dumps(private).encode(), f"jwk:{kid}"),
        active_from=active_from or utcnow(),
    )
    session.add(row)
    return row


def ensure_keys(session: Session, passphrase: str) -> list[str]:
    """Create a key per algorithm where none is active. Returns the new kids."""
    created = []
    for alg in ALGORITHMS:
        exists = session.execute(
            select(SigningKey.kid).where(SigningKey.alg == alg, SigningKey.retired_at.is_(None))
        ).first()
        if not exists:
            created.append(create_key(session, passphrase, alg).kid)
    return created


def rotate(
    session: Session,
    passphrase: str,
    *,
    alg: str,
    publish_ahead: dt.timedelta,
    max_token_lifetime: dt.timedelta,
    actor: str = "admin",
) -> SigningKey:
    """Publish a new key now; it signs from ``now + publish_ahead``; old keys retire then."""
    now = utcnow()
    new = create_key(session, passphrase, alg, active_from=now + publish_ahead)
    retire_at, expire_at = new.active_from, new.active_from + max_token_lifetime
    for old in session.execute(
        select(SigningKey).where(
            SigningKey.alg == alg,
            SigningKey.kid != new.kid,
            # not yet retired, or due to retire later than the new key starts (an earlier rotation
            # scheduled further ahead: an emergency rotation must not leave it signing longer)
            SigningKey.retired_at.is_(None) | (SigningKey.retired_at > retire_at),
        )
    ).scalars():
        old.retired_at = retire_at
        old.expires_at = min(old.expires_at, expire_at) if old.expires_at is not None else expire_at
    audit.record(
        session,
        action="keys.rotate",
        outcome="success",
        actor=actor,
        subject=new.kid,
        reason=f"new {alg} key",
        details={"active_from": new.active_from.isoformat()},
    )
    return new


@dataclass(frozen=True)
class KeyMaterial:
    jwks: dict[str, list[dict[str, str]]]  # public, for /jwks.json
    verify_set: KeySet  # public keys, to verify our own tokens
    signing: dict[str, ECKey | RSAKey]  # alg -> current private key (with kid)
    loaded_at: float
    # /jwks.json as served (RFC 7517 §5): the bytes and their strong ETag (RFC 9110 §8.8.3), a
    # digest of the bytes, so that every worker that loaded the same key set names it alike
    jwks_body: bytes = b""
    jwks_etag: str = ""


class KeyCache:
    """Loads keys from the database, decrypted, for ``ttl`` seconds (one per process)."""

    def __init__(self, passphrase: str, ttl: float = 30.0) -> None:
        self._passphrase = passphrase
        self._ttl = ttl
        self._lock = threading.Lock()
        self._material: KeyMaterial | None = None

    def invalidate(self) -> None:
        self._material = None

    def fresh(self) -> KeyMaterial | None:
        """The loaded key material while it is still fresh (no database access), else None."""
        m = self._material
        if m is not None and time.monotonic() - m.loaded_at < self._ttl:
            return m
        return None

    def get(self, session: Session) -> KeyMaterial:
        m = self._material
        if m is not None and time.monotonic() - m.loaded_at < self._ttl:
            return m
        with self._lock:
            m = self._load(session)
            self._material = m
            return m

    def _load(self, session: Session) -> KeyMaterial:
        now = utcnow()
        rows = (
            session.execute(
                select(SigningKey)
                .where(or_(SigningKey.expires_at.is_(None), SigningKey.expires_at > now))
                .order_by(SigningKey.active_from)
            )
            .scalars()
            .all()
        )
        published = [json.loads(r.public_jwk) for r in rows]
        signing: dict[str, ECKey | RSAKey] = {}
        sealer = _sealer(self._passphrase)
        for r in rows:
            usable = r.active_from <= now and (r.retired_at is None or r.retired_at > now)
            if usable:  # rows are ordered: the newest usable key wins
                private = json.loads(sealer.open(r.private_enc, f"jwk:{r.kid}"))
                params: KeyParameters = {"kid": r.kid, "alg": r.alg, "use": "sig"}
                if r.alg == "ES256":
                    signing[r.alg] = ECKey.import_key(private, params)
                else:
                    signing[r.alg] = _own_rsa_key(private, params)
        ttl = self._ttl
        # Do not cache past the moment a pending key becomes active.
        for r in rows:
            if r.active_from > now:
                ttl = min(ttl, (r.active_from - now).total_seconds())
        body = json.dumps({"keys": published}, separators=(",", ":")).encode()
        return KeyMaterial(
            jwks={"keys": published},
            jwks_body=body,
            jwks_etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            verify_set=KeySet.import_key_set({"keys": published}),
            signing=signing,
            loaded_at=time.monotonic() - (self._ttl - ttl),
        )
