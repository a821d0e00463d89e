"""Build and sign the city's SD-JWT VCs and its Token Status List; verify key proofs.
No Flask, no database. Signing goes through the key store's signer (an HSM key never leaves the
token), so the JWS is assembled here and the signature made by ``cryptography``."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

LIBRARY_CARD_VCT = "urn:cityid:library-card:1"
PROOF_TYP = "openid4vci-proof+jwt"  # OpenID4VCI 1.0 Appendix F.1
PROOF_MAX_AGE = timedelta(minutes=5)
_PROOF_REGISTRY = jws.JWSRegistry(algorithms=["ES256"])


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64u_json(obj: Any) -> str:
    return b64u(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def sign_jws(
    signer: ec.EllipticCurvePrivateKey, header: Mapping[str, Any], payload: Mapping[str, Any]
) -> str:
    """RFC 7515 §5.1 compact JWS, ES256 (RFC 7518 §3.4: r || s, 32 octets each)."""
    signing_input = f"{_b64u_json(dict(header))}.{_b64u_json(dict(payload))}"
    der = signer.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def sd_jwt_vc(
    signer: ec.EllipticCurvePrivateKey,
    x5c: list[str],
    *,
    plain: Mapping[str, Any],
    disclosable: Mapping[str, Any],
    holder_jwk: Mapping[str, Any],
) -> str:
    """SD-JWT VC (``typ`` dc+sd-jwt, SD-JWT VC §3.2) with each of ``disclosable`` an object
    property disclosure (RFC 9901 §4.2.1: [salt, name, value], 128-bit salt), ``cnf.jwk``
    (RFC 7800) for key binding. Returns ``<jwt>~<disclosure>~...~``."""
    disclosures: list[str] = []
    digests: list[str] = []
    for name, value in disclosable.items():
        d = _b64u_json([b64u(secrets.token_bytes(16)), name, value])
        disclosures.append(d)
        digests.append(b64u(hashlib.sha256(d.encode("ascii")).digest()))  # RFC 9901 §4.2.3
    payload = {**plain, "_sd": sorted(digests), "_sd_alg": "sha-256", "cnf": {"jwk": dict(holder_jwk)}}
    token = sign_jws(signer, {"alg": "ES256", "typ": "dc+sd-jwt", "x5c": x5c}, payload)
    return "~".join([token, *disclosures]) + "~"


def status_list_token(
    signer: ec.EllipticCurvePrivateKey,
    x5c: list[str],
    *,
    uri: str,
    revoked: Iterable[int],
    size: int,
    now: datetime,
    ttl: int,
) -> str:
    """Token Status List §5.1 (JWT, ``typ`` statuslist+jwt) with a 1-bit list (§4.1: bit ``idx %
    8`` of byte ``idx // 8``, ZLIB-compressed, base64url)."""
    lst = bytearray((max(size, 1) + 7) // 8)
    for idx in revoked:
        lst[idx // 8] |= 1 << (idx % 8)
    iat = int(now.timestamp())
    payload = {
        "sub": uri,
        "iat": iat,
        "exp": iat + 24 * 3600,
        "ttl": ttl,
        "status_list": {"bits": 1, "lst": b64u(zlib.compress(bytes(lst), 9))},
    }
    return sign_jws(signer, {"alg": "ES256", "typ": "statuslist+jwt", "x5c": x5c}, payload)


class ProofError(Exception):
    """OpenID4VCI 1.0 §8.3.1.2: ``invalid_proof`` or ``invalid_nonce``."""

    def __init__(self, error: str, description: str) -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}")


@dataclass(frozen=True)
class Proof:
    jwk: dict[str, Any]
    nonce: str


def verify_proof(token: str, *, audience: str, now: datetime) -> Proof:
    """OpenID4VCI 1.0 Appendix F.1/F.4: a JWT key proof — ``typ`` openid4vci-proof+jwt, ES256,
    the key in the ``jwk`` header (public only), ``aud`` the credential issuer, a fresh ``iat``,
    and a ``nonce`` (checked by the caller against the nonce endpoint's)."""
    if not isinstance(token, str) or len(token) > 8192 or token.count(".") != 2:
        raise ProofError("invalid_proof", "not a compact JWT")
    try:
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    except ValueError as exc:
        raise ProofError("invalid_proof", "header unreadable") from exc
    if not isinstance(header, dict) or header.get("typ") != PROOF_TYP:
        raise ProofError("invalid_proof", f"typ must be {PROOF_TYP}")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or "d" in jwk or jwk.get("kty") != "EC":
        raise ProofError("invalid_proof", "a public EC jwk header is needed")
    try:
        key = ECKey.import_key(jwk)
        obj = jws.deserialize_compact(token, key, registry=_PROOF_REGISTRY)
        claims = json.loads(obj.payload)
    except (JoseError, ValueError, TypeError) as exc:
        raise ProofError("invalid_proof", f"signature: {exc}") from exc
    if not isinstance(claims, dict) or claims.get("aud") != audience:
        raise ProofError("invalid_proof", "aud is not this credential issuer")
    iat = claims.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise ProofError("invalid_proof", "iat missing")
    at = datetime.fromtimestamp(iat, now.tzinfo)
    if at > now + timedelta(seconds=60) or at < now - PROOF_MAX_AGE:
        raise ProofError("invalid_proof", "iat is not fresh")
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise ProofError("invalid_nonce", "the proof has no c_nonce")  # §7: the issuer asks for one
    public = {k: jwk[k] for k in ("kty", "crv", "x", "y")}
    return Proof(public, nonce)
