"""DPoP — RFC 9449: proof-of-possession of a client key, bound into access tokens.

Authlib has no DPoP; this module checks proofs (§4.3), issues server nonces (§8), remembers
seen ``jti`` values in the database (§11.1), and binds tokens to the key's thumbprint
(``cnf.jkt``, §6). Refresh tokens of public clients are bound to the key too (§5).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from sqlalchemy import Table
from sqlalchemy.orm import Session

from idp.crypto import equal
from idp.models import SeenJti
from idp.oauth.errors import safe_description
from smartcard import replay

ALGORITHMS = ["ES256", "ES384", "RS256", "PS256", "Ed25519", "EdDSA"]  # Ed25519: RFC 9864
IAT_WINDOW = 60  # seconds either side (§11.1)
NONCE_PERIOD = 300
MAX_PROOF = 4096
# A proof's header carries its public key: 2,048 bytes hold an RSA-4096 key (joserfc's default of
# 512 refused every RSA-2048 proof); MAX_PROOF still bounds the whole proof.
REGISTRY = jws.JWSRegistry(algorithms=ALGORITHMS)
REGISTRY.max_header_length = 2048
_SEEN = cast(Table, SeenJti.__table__)
_KEY_TYPES: dict[str, type[ECKey] | type[RSAKey] | type[OKPKey]] = {"EC": ECKey, "RSA": RSAKey, "OKP": OKPKey}


class DpopError(Exception):
    """A proof that must be refused. ``error`` is the RFC 9449 error code."""

    error = "invalid_dpop_proof"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class UseDpopNonce(DpopError):
    """§8: the server requires a (fresh) nonce; the response carries one in DPoP-Nonce."""

    error = "use_dpop_nonce"


@dataclass(frozen=True)
class DpopProof:
    jkt: str  # RFC 7638 thumbprint of the proof key, base64url SHA-256
    jti: str
    iat: int


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token_hash(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii")).digest())  # §4.2 ath


@functools.lru_cache(maxsize=16)
def _nonce_of(key: bytes, bucket: int) -> str:
    """§8: the server's nonce for one period, an HMAC of it (computed once per period)."""
    mac = hmac.new(key, f"dpop-nonce:{bucket}".encode(), hashlib.sha256).digest()[:18]
    return f"{bucket}.{b64url(mac)}"


def make_nonce(key: bytes, now: float | None = None) -> str:
    return _nonce_of(key, int((now or time.time()) // NONCE_PERIOD))


def nonce_valid(key: bytes, nonce: str, now: float | None = None) -> bool:
    current = int((now or time.time()) // NONCE_PERIOD)
    sent = nonce.encode()
    ok = False
    for bucket in (current, current - 1):  # the previous period stays valid for a while
        # constant time, and both compared every time
        ok |= hmac.compare_digest(sent, _nonce_of(key, bucket).encode())
    return ok


@functools.lru_cache(maxsize=1024)
def _public_key(members: tuple[tuple[str, Any], ...]) -> tuple[ECKey | RSAKey | OKPKey, str]:
    """A public JWK imported once, with its RFC 7638 thumbprint (keys are immutable values)."""
    jwk = dict(members)
    key = _KEY_TYPES[jwk.get("kty", "")].import_key(jwk)
    return key, key.thumbprint()  # RFC 7638, SHA-256, base64url


def _import(jwk: dict[str, Any]) -> tuple[ECKey | RSAKey | OKPKey, str]:
    members = tuple(sorted(jwk.items()))
    try:
        hash(members)
    except TypeError:  # a member that is not a plain value (list, object): not cacheable
        return _public_key.__wrapped__(members)
    return _public_key(members)


@functools.lru_cache(maxsize=256)
def _normalise_htu(url: str) -> str:
    # §4.3 (9): compare without query and fragment (RFC 3986 §6.2.2 normalisation: lower-case
    # scheme and host, default ports removed).
    p = urlsplit(url)
    host = (p.hostname or "").lower()
    port = p.port
    if port and not ((p.scheme == "https" and port == 443) or (p.scheme == "http" and port == 80)):
        host = f"{host}:{port}"
    return urlunsplit((p.scheme.lower(), host, p.path or "/", "", ""))


def verify_proof(
    session: Session,
    proof: str | None,
    *,
    method: str,
    url: str,
    nonce_key: bytes,
    require_nonce: bool,
    access_token: str | None = None,
    now: float | None = None,
) -> DpopProof:
    """Check a DPoP proof JWT, RFC 9449 §4.3, and record its jti (single use)."""
    now = now or time.time()
    # (1) exactly one DPoP header: the caller passes the only value, or None.
    if not proof or len(proof) > MAX_PROOF:
        raise DpopError("missing or oversized DPoP proof")
    try:
        compact = jws.extract_compact(proof.encode("ascii"), registry=REGISTRY)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise DpopError("DPoP proof is not a well-formed JWS") from exc  # (2)
    header = compact.headers()
    if header.get("typ") != "dpop+jwt":  # (4) typ
        raise DpopError("typ must be dpop+jwt")
    alg = header.get("alg")
    if alg not in ALGORITHMS:  # (5) asymmetric, supported, not none
        raise DpopError("unsupported DPoP algorithm")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise DpopError("jwk header missing")
    if any(k in jwk for k in ("d", "p", "q", "dp", "dq", "qi", "k")):  # (6) no private key
        raise DpopError("jwk must be a public key")
    try:
        key, jkt = _import(jwk)
        valid = jws.validate_compact(compact, key, registry=REGISTRY)  # (7) signature
    except (JoseError, KeyError, ValueError, TypeError) as exc:
        raise DpopError("DPoP proof signature does not verify") from exc
    if not valid:
        raise DpopError("DPoP proof signature does not verify")
    try:
        claims = json.loads(compact.payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise DpopError("DPoP payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise DpopError("DPoP payload is not an object")
    jti, htm, htu, iat = (claims.get(k) for k in ("jti", "htm", "htu", "iat"))
    # (8) required claims
    if not (
        isinstance(jti, str)
        and 0 < len(jti) <= 200
        and isinstance(htm, str)
        and isinstance(htu, str)
        and isinstance(iat, int)
        and not isinstance(iat, bool)
    ):
        raise DpopError("DPoP proof lacks jti, htm, htu or iat")
    if htm != method:  # (9) htm
        raise DpopError("htm does not match the request method")
    try:
        same_uri = _normalise_htu(htu) == _normalise_htu(url)
    except ValueError:  # e.g. a port out of range: urlsplit refuses it
        raise DpopError("htu is not a valid URI") from None
    if not same_uri:  # (10) htu
        raise DpopError("htu does not match the request URI")
    nonce = claims.get("nonce")
    if require_nonce and not (isinstance(nonce, str) and nonce_valid(nonce_key, nonce, now)):
        raise UseDpopNonce("a fresh DPoP nonce is required")  # (11) / §8
    # (12) iat window; in whole numbers: a float of `now - 10**400` overflows (a 500, not a refusal)
    if abs(int(now) - iat) > IAT_WINDOW:
        raise DpopError("iat outside the acceptable window")
    if access_token is not None:  # §4.3 (13): ath, when presenting an access token
        ath = claims.get("ath")
        if not isinstance(ath, str) or not equal(ath, access_token_hash(access_token)):
            raise DpopError("ath does not match the access token")
    # §11.1: a proof is used once within its window; remember jti per key, in the database
    # (shared by every process), decided by its unique key
    seen_key = f"dpop:{jkt}:{replay_digest(jti)}"
    expires = dt.datetime.fromtimestamp(now + 2 * IAT_WINDOW + 5, dt.UTC)
    if not replay.first_use(session, _SEEN, seen_key, expires):
        raise DpopError("DPoP proof replayed")
    return DpopProof(jkt=jkt, jti=jti, iat=iat)


def www_authenticate(error: str | None = None, description: str = "") -> str:
    """§7.1: the DPoP challenge, with the algorithms we accept."""
    parts = ['DPoP algs="' + " ".join(ALGORITHMS) + '"']
    if error:
        parts.append(f'error="{error}"')
        if description:
            parts.append(f'error_description="{safe_description(description)}"')  # RFC 6750 §3
    return ", ".join(parts)


def replay_digest(jti: str) -> str:
    """A fixed-length stand-in for a ``jti`` in a replay key: cutting long ones to fit the column
    would make distinct ones collide."""
    return hashlib.sha256(jti.encode()).hexdigest()


def pushed_proof(
    session: Session, headers: Any, *, url: str, nonce_key: bytes, require_nonce: bool
) -> DpopProof | None:
    """The verified proof of a POST to ``url`` (the token or PAR endpoint), or None without one:
    there a proof is optional and, when sent, binds what is issued to its key (§5, §10.1)."""
    proof = header_value(headers)
    if proof is None:
        return None
    return verify_proof(
        session, proof, method="POST", url=url, nonce_key=nonce_key, require_nonce=require_nonce
    )


def header_value(headers: Any) -> str | None:
    """The one DPoP header, or None; more than one is an error (§4.3 (1))."""
    values = headers.getlist("DPoP") if hasattr(headers, "getlist") else [headers.get("DPoP")]
    values = [v for v in values if v]
    if len(values) > 1:
        raise DpopError("more than one DPoP header")
    return values[0] if values else None
