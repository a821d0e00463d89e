"""Verify an SD-JWT VC presentation of the EU wallet's PID (no Flask, no I/O except through the
status list fetcher it is given).

Specifications: SD-JWT (RFC 9901, "Selective Disclosure for JWTs"), SD-JWT VC
(draft-ietf-oauth-sd-jwt-vc), Token Status List (draft-ietf-oauth-status-list), OpenID4VP 1.0
and the OpenID4VC High Assurance Interoperability Profile (HAIP) 1.0. Every check below names the
section it implements; each refusal is a typed ``WalletError``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from idp.crypto import equal
from idp.eid.wallet import errors

PID_VCT = "urn:eudi:pid:1"  # PID Rulebook (ARF Annex 3.01), SD-JWT VC encoding
ALGORITHMS = ["ES256", "ES384", "ES512"]  # HAIP 1.0 §7: ES256 at least; never "none" or HMAC
SD_JWT_TYP = "dc+sd-jwt"  # SD-JWT VC §3.2.1
KB_JWT_TYP = "kb+jwt"  # RFC 9901 §4.3
STATUS_LIST_TYP = "statuslist+jwt"  # Token Status List §5.1
MAX_PRESENTATION = 64 * 1024
# x5c makes the header large (a certificate chain): room for a few certificates (RFC 7515 §4.1.6).
_REGISTRY = jws.JWSRegistry(algorithms=ALGORITHMS)
_REGISTRY.max_header_length = 16 * 1024
CLOCK_SKEW = timedelta(seconds=60)
KB_MAX_AGE = timedelta(minutes=5)


@dataclass(frozen=True)
class TrustList:
    """The PID providers' trust anchors (root certificates) a presentation must chain to."""

    anchors: tuple[x509.Certificate, ...]

    @classmethod
    def from_pem(cls, pem: bytes) -> TrustList:
        return cls(tuple(x509.load_pem_x509_certificates(pem)))

    def leaf_key(self, x5c: Any, now: datetime) -> Any:
        """HAIP 1.0 §6.1.1 / SD-JWT VC §3.5: the issuer's key comes from the ``x5c`` header; the
        chain must end at a configured trust anchor (RFC 5280 §6 path validation)."""
        if not self.anchors:
            raise errors.UntrustedIssuer("no PID provider trust anchors are configured")
        if not isinstance(x5c, list) or not x5c or len(x5c) > 5 or not all(isinstance(c, str) for c in x5c):
            raise errors.UntrustedIssuer("x5c header missing or malformed")
        try:
            chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c]
        except ValueError as exc:
            raise errors.UntrustedIssuer(f"x5c certificate unreadable: {exc}") from exc
        # RFC 9110-free: an issuer certificate is no TLS server; any end-entity key usage is fine,
        # the path itself (signatures, validity, CA constraints) is what is checked.
        verifier = (
            PolicyBuilder()
            .store(Store(list(self.anchors)))
            .time(now.astimezone(UTC).replace(tzinfo=None))
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
            )
            .build_client_verifier()
        )
        try:
            verifier.verify(chain[0], chain[1:])
        except VerificationError as exc:
            raise errors.UntrustedIssuer(f"x5c does not chain to a trusted PID provider: {exc}") from exc
        return chain[0].public_key()


@dataclass(frozen=True)
class VerifiedPresentation:
    """A presentation that passed every check: the disclosed claims (and the always-visible
    ones), who issued it, and the key-binding key's thumbprint."""

    claims: Mapping[str, Any]
    issuer: str
    vct: str
    holder_jkt: str


def _b64d(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except ValueError as exc:
        raise errors.MalformedPresentation("bad base64url") from exc


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _ec_key(public_key: Any) -> ECKey:
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return ECKey.import_key(pem)


def _verify_jws(token: str, key: ECKey, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        obj = jws.deserialize_compact(token, key, registry=_REGISTRY)
        payload = json.loads(obj.payload)
    except (JoseError, ValueError) as exc:
        if what == "issuer":
            raise errors.BadSignature(f"{what}: {exc}") from exc
        raise errors.KeyBindingInvalid(f"{what}: {exc}") from exc
    if not isinstance(payload, dict):
        raise errors.MalformedPresentation(f"{what} payload is not an object")
    return obj.headers(), payload


def _header(token: str) -> dict[str, Any]:
    try:
        header = json.loads(_b64d(token.split(".", 1)[0]))
    except ValueError as exc:
        raise errors.MalformedPresentation("JWS header unreadable") from exc
    if not isinstance(header, dict):
        raise errors.MalformedPresentation("JWS header is not an object")
    return header


def _time(payload: Mapping[str, Any], name: str) -> datetime | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise errors.MalformedPresentation(f"{name} is not a NumericDate")
    return datetime.fromtimestamp(value, UTC)


def _check_validity(payload: Mapping[str, Any], now: datetime) -> None:
    """SD-JWT VC §3.2.2.2 with RFC 7519 §4.1.4/§4.1.5: ``exp`` and ``nbf``; an ``iat`` from the
    future is refused too."""
    exp, nbf, iat = _time(payload, "exp"), _time(payload, "nbf"), _time(payload, "iat")
    if exp is not None and now >= exp + CLOCK_SKEW:
        raise errors.CredentialExpired(f"expired at {exp.isoformat()}")
    if nbf is not None and now + CLOCK_SKEW < nbf:
        raise errors.CredentialNotYetValid(f"not before {nbf.isoformat()}")
    if iat is not None and now + CLOCK_SKEW < iat:
        raise errors.CredentialNotYetValid(f"issued in the future ({iat.isoformat()})")


def _disclose(payload: dict[str, Any], disclosures: Sequence[str]) -> dict[str, Any]:
    """RFC 9901 §7.1 (verification of the SD-JWT), steps 3-5: every disclosure's digest must
    appear exactly once in an ``_sd`` array or an ``{"...": digest}`` array element of the
    payload or of another disclosed value; names may not clash with plain claims."""
    if payload.get("_sd_alg", "sha-256") != "sha-256":  # RFC 9901 §4.1.1 (we accept sha-256)
        raise errors.MalformedPresentation(f"unsupported _sd_alg {payload.get('_sd_alg')!r}")
    by_digest: dict[str, list[Any]] = {}
    for d in disclosures:
        digest = _b64e(hashlib.sha256(d.encode("ascii")).digest())  # RFC 9901 §4.2.3
        try:
            decoded = json.loads(_b64d(d))
        except ValueError as exc:
            raise errors.MalformedPresentation("disclosure is not JSON") from exc
        if not isinstance(decoded, list) or len(decoded) not in (2, 3) or not isinstance(decoded[0], str):
            raise errors.MalformedPresentation("disclosure is not [salt, (name,) value]")
        if digest in by_digest:
            raise errors.MalformedPresentation("the same disclosure twice")
        by_digest[digest] = decoded
    used: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key in ("_sd", "_sd_alg"):
                    continue
                out[key] = walk(value)
            digests = node.get("_sd", [])
            if not isinstance(digests, list):
                raise errors.MalformedPresentation("_sd is not an array")
            for digest in digests:
                found = by_digest.get(digest) if isinstance(digest, str) else None
                if found is None:
                    continue  # undisclosed or decoy digest (RFC 9901 §4.2.5)
                if digest in used:
                    raise errors.MalformedPresentation("a digest is referenced twice")  # §7.1 step 4
                used.add(digest)
                if len(found) != 3 or not isinstance(found[1], str):
                    raise errors.MalformedPresentation("object disclosure without a claim name")
                name = found[1]
                if name in ("_sd", "...", "_sd_alg") or name in out:  # RFC 9901 §7.1 step 3.c
                    raise errors.MalformedPresentation(f"disclosed claim name {name!r} not allowed")
                out[name] = walk(found[2])
            return out
        if isinstance(node, list):
            items: list[Any] = []
            for element in node:
                if isinstance(element, dict) and set(element) == {"..."}:
                    digest = element["..."]
                    found = by_digest.get(digest) if isinstance(digest, str) else None
                    if found is None:
                        continue
                    if digest in used or len(found) != 2:
                        raise errors.MalformedPresentation("bad array element disclosure")
                    used.add(digest)
                    items.append(walk(found[1]))
                else:
                    items.append(walk(element))
            return items
        return node

    claims: dict[str, Any] = walk(payload)
    unused = set(by_digest) - used
    if unused:
        # RFC 9901 §7.1 step 5: a disclosure whose digest is not in the SD-JWT is refused.
        raise errors.DisclosureNotInCredential(
            f"{len(unused)} disclosure(s) not referenced by the credential"
        )
    return claims


def verify_presentation(
    presentation: str,
    *,
    trust: TrustList,
    nonce: str,
    audience: str,
    now: datetime,
    status: StatusLists | None,
    vcts: Sequence[str] = (PID_VCT,),
) -> VerifiedPresentation:
    """All checks of an SD-JWT VC presentation with key binding (RFC 9901 §7.1-§7.3)."""
    if not isinstance(presentation, str) or len(presentation) > MAX_PRESENTATION or "~" not in presentation:
        raise errors.MalformedPresentation("not an SD-JWT presentation")
    # RFC 9901 §4: <issuer-signed JWT>~<disclosure>~...~<KB-JWT>
    parts = presentation.split("~")
    issuer_jwt, disclosures, kb_jwt = parts[0], parts[1:-1], parts[-1]
    if not kb_jwt:
        raise errors.KeyBindingInvalid("no key-binding JWT")  # HAIP 1.0: key binding required
    header = _header(issuer_jwt)
    if header.get("typ") != SD_JWT_TYP:  # SD-JWT VC §3.2.1
        raise errors.MalformedPresentation(f"typ {header.get('typ')!r} is not {SD_JWT_TYP}")
    # SD-JWT VC §3.5 / HAIP 1.0 §6.1.1: the issuer key from x5c, chained to the trust list.
    issuer_key = trust.leaf_key(header.get("x5c"), now)
    _h, payload = _verify_jws(issuer_jwt, _ec_key(issuer_key), "issuer")
    _check_validity(payload, now)
    vct = payload.get("vct")
    if vct not in vcts:  # SD-JWT VC §3.2.2.1: the type; only the PID is accepted
        raise errors.WrongType(f"vct {vct!r}")
    claims = _disclose(payload, disclosures)
    # RFC 9901 §7.3: the KB-JWT, signed by the key in cnf (RFC 7800 §3.2).
    cnf = payload.get("cnf")
    if not isinstance(cnf, dict) or not isinstance(cnf.get("jwk"), dict):
        raise errors.KeyBindingInvalid("credential has no cnf.jwk")
    try:
        holder = ECKey.import_key(cnf["jwk"])
    except (JoseError, ValueError, TypeError) as exc:
        raise errors.KeyBindingInvalid(f"cnf.jwk unusable: {exc}") from exc
    if "d" in cnf["jwk"]:
        raise errors.KeyBindingInvalid("cnf.jwk holds a private key")
    kb_header = _header(kb_jwt)
    if kb_header.get("typ") != KB_JWT_TYP:  # RFC 9901 §4.3
        raise errors.KeyBindingInvalid(f"KB-JWT typ {kb_header.get('typ')!r}")
    _kh, kb = _verify_jws(kb_jwt, holder, "key-binding JWT")
    if not isinstance(kb.get("nonce"), str) or not equal(kb["nonce"], nonce):  # OpenID4VP 1.0 §14.1
        raise errors.NonceMismatch("KB-JWT nonce is not this request's")
    if kb.get("aud") != audience:  # OpenID4VP 1.0 §B.3.6: aud is the client_id with its prefix
        raise errors.AudienceMismatch(f"KB-JWT aud {kb.get('aud')!r}")
    iat = _time(kb, "iat")  # RFC 9901 §7.3 step 5.c: iat within an acceptable window
    if iat is None or iat > now + CLOCK_SKEW or iat < now - KB_MAX_AGE:
        raise errors.StaleKeyBinding(f"KB-JWT iat {iat.isoformat() if iat else None}")
    # RFC 9901 §4.3.1: sd_hash over the presentation up to and including the last "~".
    sd_hash = _b64e(hashlib.sha256(presentation[: len(presentation) - len(kb_jwt)].encode("ascii")).digest())
    if not isinstance(kb.get("sd_hash"), str) or not equal(kb["sd_hash"], sd_hash):
        raise errors.KeyBindingInvalid("sd_hash does not match the presentation")
    if status is not None:
        status.check(payload.get("status"), now)
    elif "status" in payload:
        raise errors.StatusUnavailable("no status checker configured")
    return VerifiedPresentation(
        claims=claims, issuer=str(payload.get("iss", "")), vct=str(vct), holder_jkt=holder.thumbprint()
    )


# --------------------------------------------------------------------------- status lists

VALID, INVALID, SUSPENDED = 0, 1, 2  # Token Status List §7.1


@dataclass
class StatusLists:
    """Fetch, verify and cache Status List Tokens (Token Status List §8). ``fetch(uri)`` returns the
    token's bytes (the idp gives one over HTTP with a timeout). A list is cached until its
    ``exp``, its ``ttl`` or ``max_cache``, whichever comes first (§8.5)."""

    trust: TrustList
    fetch: Callable[[str], bytes]
    max_cache: timedelta = timedelta(minutes=5)
    allow_loopback_http: bool = False  # TEST providers (walletsim) on this machine only
    _cache: dict[str, tuple[datetime, int, bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, status: Any, now: datetime) -> None:
        """Token Status List §6.2: ``status.status_list = {idx, uri}``; refuse unless VALID."""
        if status is None:
            return  # a PID without a status claim (short-lived PIDs need none: ARF Annex 2)
        ref = status.get("status_list") if isinstance(status, dict) else None
        if not isinstance(ref, dict):
            raise errors.MalformedPresentation("status claim without status_list")
        idx, uri = ref.get("idx"), ref.get("uri")
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0 or not isinstance(uri, str):
            raise errors.MalformedPresentation("status_list reference malformed")
        loopback = uri.startswith(("http://127.0.0.1:", "http://localhost:"))
        if not uri.startswith("https://") and not (self.allow_loopback_http and loopback):
            raise errors.MalformedPresentation("status list URI is not https")  # Token Status List §11
        bits, lst = self._list(uri, now)
        value = self.value(lst, bits, idx)
        if value != VALID:
            raise errors.Revoked(f"status {value} at index {idx} of {uri}")

    @staticmethod
    def value(lst: bytes, bits: int, idx: int) -> int:
        """Token Status List §4.1: entry ``idx`` of ``bits`` bits, least significant first."""
        byte, shift = divmod(idx * bits, 8)
        if byte >= len(lst):
            raise errors.MalformedPresentation("status index beyond the list")
        return (lst[byte] >> shift) & ((1 << bits) - 1)

    def _list(self, uri: str, now: datetime) -> tuple[int, bytes]:
        with self._lock:
            cached = self._cache.get(uri)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        try:
            token = self.fetch(uri).decode("ascii").strip()
        except Exception as exc:  # any fetch failure: the status is unknown
            raise errors.StatusUnavailable(f"{uri}: {exc}") from exc
        header = _header(token)
        if header.get("typ") != STATUS_LIST_TYP:  # Token Status List §5.1
            raise errors.StatusUnavailable(f"status list typ {header.get('typ')!r}")
        # §8.3: the Status List Token's signature, under the same trust as the referenced token.
        try:
            key = self.trust.leaf_key(header.get("x5c"), now)
            _h, payload = _verify_jws(token, _ec_key(key), "issuer")
        except errors.WalletError as exc:
            raise errors.StatusUnavailable(f"status list token not trusted: {exc.detail}") from exc
        if payload.get("sub") != uri:  # §5.1: sub is the URI it was fetched from
            raise errors.StatusUnavailable("status list sub is not its URI")
        exp = _time(payload, "exp")
        if exp is not None and now >= exp:
            raise errors.StatusUnavailable("status list token expired")
        sl = payload.get("status_list")
        if (
            not isinstance(sl, dict)
            or sl.get("bits") not in (1, 2, 4, 8)
            or not isinstance(sl.get("lst"), str)
        ):
            raise errors.StatusUnavailable("status_list malformed")
        try:
            # §4.1: DEFLATE in ZLIB format; bounded, against decompression bombs.
            lst = zlib.decompressobj().decompress(_b64d(sl["lst"]), 16 * 1024 * 1024)
        except zlib.error as exc:
            raise errors.StatusUnavailable(f"lst is not ZLIB: {exc}") from exc
        until = now + self.max_cache
        ttl = payload.get("ttl")
        if isinstance(ttl, int) and ttl >= 0:
            until = min(until, now + timedelta(seconds=ttl))
        if exp is not None:
            until = min(until, exp)
        with self._lock:
            self._cache[uri] = (until, int(sl["bits"]), lst)
        return int(sl["bits"]), lst
