"""The wallet as an ``EidConnector``: an OpenID4VP 1.0 verifier for the PID (SD-JWT VC), as the
High Assurance Interoperability Profile (HAIP 1.0) asks: a signed request object by reference
(RFC 9101, client identifier prefix ``x509_san_dns``), a DCQL query, ``direct_post.jwt``
(encrypted to an ephemeral key made for this request alone) and a fresh nonce. No Flask.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwe, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from idp.crypto import equal
from idp.eid.connector import EidAttribute, EidRequest, EidResponse, EidResult, EidStart, PendingEid
from idp.eid.wallet import errors
from idp.eid.wallet.verify import PID_VCT, StatusLists, TrustList, verify_presentation
from policies import Level

NAME = "wallet"
SOURCE = "urn:cityid:eid:wallet"  # scopes the wallet pseudonyms (one person, any PID provider)
CREDENTIAL_ID = "pid"  # the DCQL credential query id (OpenID4VP 1.0 §6.1)
# Only what the link needs (data minimisation, GDPR Art. 5(1)(c)): the recognition key's inputs.
PID_CLAIMS = ("given_name", "family_name", "birthdate", "place_of_birth", "issuing_country")
ENC_VALUES = ["A128GCM", "A256GCM"]  # HAIP 1.0 §5 (response encryption)
REQUEST_LIFETIME = timedelta(minutes=10)
MAX_RESPONSE = 128 * 1024
_JWE_REGISTRY = jwe.JWERegistry(algorithms=["ECDH-ES", *ENC_VALUES])


class Clock(Protocol):
    def __call__(self) -> datetime: ...


@dataclass(frozen=True)
class Verifier:
    """Our verifier identity: the key and chain whose leaf names our host (x509_san_dns)."""

    key: ECKey
    x5c: tuple[str, ...]
    client_id: str


def load_verifier(cfg: Any) -> Verifier:
    """Read the verifier key and chain; the leaf's dNSName SAN must be the issuer's host
    (OpenID4VP 1.0 §5.9.3) and its key the configured one. Raises ValueError."""
    w = cfg.wallet
    chain = x509.load_pem_x509_certificates(Path(w.verifier_cert_file).read_bytes())
    key_obj = serialization.load_pem_private_key(Path(w.verifier_key_file).read_bytes(), password=None)
    if not isinstance(key_obj, ec.EllipticCurvePrivateKey) or not isinstance(key_obj.curve, ec.SECP256R1):
        raise ValueError("verifier_key_file: an EC P-256 key is needed (ES256, HAIP 1.0)")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(*spki) != key_obj.public_key().public_bytes(*spki):
        raise ValueError("verifier_cert_file: the first certificate is not for verifier_key_file")
    prefix = getattr(w, "client_id_prefix", "x509_san_dns")
    leaf_der = chain[0].public_bytes(serialization.Encoding.DER)
    if prefix == "x509_hash":
        # OpenID4VP 1.0 §5.9.3: base64url SHA-256 of the DER leaf certificate
        client_id = (
            "x509_hash:" + base64.urlsafe_b64encode(hashlib.sha256(leaf_der).digest()).rstrip(b"=").decode()
        )
    elif prefix == "x509_san_dns":
        host = urlsplit(cfg.issuer).hostname or ""
        try:
            sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            sans = x509.SubjectAlternativeName([])
        if host not in sans.get_values_for_type(x509.DNSName):
            raise ValueError(f"verifier_cert_file: the leaf has no dNSName SAN {host!r} (x509_san_dns)")
        client_id = f"x509_san_dns:{host}"
    else:
        raise ValueError(f"client_id_prefix = {prefix!r}: use x509_san_dns or x509_hash")
    pem = key_obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    x5c = tuple(base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain)
    return Verifier(ECKey.import_key(pem), x5c, client_id)


@dataclass
class WalletConnector:
    """``start`` sends the browser to the idp's wallet page (QR code / same-device link); the
    wallet fetches ``request_object`` at ``request_uri`` and posts its encrypted answer to the
    ``response_uri`` (the eID callback), where ``finish`` verifies it."""

    verifier: Verifier
    trust: TrustList
    status: StatusLists
    base_url: str
    pseudonym_key: bytes
    vcts: tuple[str, ...] = (PID_VCT,)
    simulation: bool = False
    clock: Clock = field(default=lambda: datetime.now(UTC))
    name: str = NAME

    # ------------------------------------------------------------------ start

    def start(self, request: EidRequest) -> EidStart:
        state = secrets.token_urlsafe(32)
        # OpenID4VP 1.0 §8.3 / HAIP 1.0: an ephemeral key for this response alone; its private
        # half stays sealed in the pending state (PendingEid.code_verifier holds our secrets).
        enc = ECKey.generate_key("P-256", parameters={"use": "enc", "alg": "ECDH-ES"}, private=True)
        pending = PendingEid(
            connector=self.name,
            request_id=enc.thumbprint(),
            relay_state=state,
            minimum_level=request.minimum_level,
            created_at=self.clock(),
            nonce=secrets.token_urlsafe(32),  # OpenID4VP 1.0 §5.2 / §14.1: fresh per request
            code_verifier=json.dumps(enc.as_dict(private=True)),
        )
        return EidStart(
            method="GET",
            url=f"{self.base_url}/login/eid/wallet?{urlencode({'state': state})}",
            form=(),
            pending=pending,
        )

    def authorization_url(self, pending: PendingEid, flow: str) -> str:
        """OpenID4VP 1.0 §5.10: the request by reference; ``openid4vp://`` is the custom scheme
        wallets register (§13.1). ``flow``: ``same`` (this device) or ``cross`` (QR code)."""
        query = urlencode({"state": pending.relay_state, "flow": flow})
        request_uri = f"{self.base_url}/login/eid/wallet/request?{query}"
        return "openid4vp://?" + urlencode({"client_id": self.verifier.client_id, "request_uri": request_uri})

    def request_object(self, pending: PendingEid, flow: str) -> str:
        """RFC 9101 §4 with OpenID4VP 1.0 §5: the signed request (typ oauth-authz-req+jwt, x5c)."""
        enc = ECKey.import_key(json.loads(pending.code_verifier))
        public = enc.as_dict(private=False)
        public.update({"kid": pending.request_id, "use": "enc", "alg": "ECDH-ES"})
        now = int(self.clock().timestamp())
        response_uri = (
            f"{self.base_url}/login/eid/callback?{urlencode({'state': pending.relay_state, 'flow': flow})}"
        )
        claims = {
            "iss": self.verifier.client_id,
            "aud": "https://self-issued.me/v2",  # OpenID4VP 1.0 §5.8 (static wallet metadata)
            "iat": now,
            "exp": now + int(REQUEST_LIFETIME.total_seconds()),
            "client_id": self.verifier.client_id,  # §5.9.3 x509_san_dns or x509_hash prefix
            "response_type": "vp_token",
            "response_mode": "direct_post.jwt",  # §8.3.1
            "response_uri": response_uri,  # §8.2
            "nonce": pending.nonce,
            "state": pending.relay_state,
            "dcql_query": {  # §6: one PID in SD-JWT VC format, only the claims the link needs
                "credentials": [
                    {
                        "id": CREDENTIAL_ID,
                        "format": "dc+sd-jwt",
                        "meta": {"vct_values": list(self.vcts)},
                        "claims": [{"path": [name]} for name in PID_CLAIMS],
                    }
                ]
            },
            "client_metadata": {  # §5.1
                "jwks": {"keys": [public]},
                "encrypted_response_enc_values_supported": ENC_VALUES,
                "vp_formats_supported": {
                    "dc+sd-jwt": {"sd-jwt_alg_values": ["ES256"], "kb-jwt_alg_values": ["ES256"]}
                },
            },
        }
        header = {"alg": "ES256", "typ": "oauth-authz-req+jwt", "x5c": list(self.verifier.x5c)}
        return jwt.encode(header, claims, self.verifier.key)

    # ------------------------------------------------------------------ finish

    def finish(self, response: EidResponse) -> EidResult:
        params, pending = response.params, response.pending
        now = self.clock()
        if now - pending.created_at > REQUEST_LIFETIME:
            raise errors.WalletError("the request has expired")
        token = params.get("response", "")
        if not token and params.get("error") and "vp_token" not in params:
            # OpenID4VP 1.0 §8.5: the wallet's error response (e.g. access_denied: the citizen said no)
            raise errors.WalletDeclined(f"wallet error {params.get('error', '')[:60]!r}")
        if not token:
            # OpenID4VP 1.0 §8.3.1: direct_post.jwt was asked; a plain vp_token is refused.
            raise errors.NotEncrypted("response_mode direct_post.jwt asked, no encrypted response sent")
        if len(token) > MAX_RESPONSE or token.count(".") != 4:
            raise errors.NotEncrypted("the response is not a JWE in compact serialization")
        key = ECKey.import_key(json.loads(pending.code_verifier))
        try:
            obj = jwe.decrypt_compact(token, key, registry=_JWE_REGISTRY)
            body = json.loads(obj.plaintext or b"")
        except (JoseError, ValueError) as exc:
            raise errors.DecryptionFailed(f"{type(exc).__name__}: {exc}") from exc
        header = obj.headers()
        if header.get("alg") != "ECDH-ES" or header.get("enc") not in ENC_VALUES:  # HAIP 1.0 §5
            raise errors.DecryptionFailed(f"alg/enc {header.get('alg')}/{header.get('enc')}")
        if not isinstance(body, dict):
            raise errors.MalformedPresentation("response payload is not an object")
        # OpenID4VP 1.0 §8.2 / RFC 6749 §4.1.2: the state of this request.
        if not isinstance(body.get("state"), str) or not equal(body["state"], pending.relay_state):
            raise errors.StateMismatch("response state is not this request's")
        vp_token = body.get("vp_token")
        presentations = vp_token.get(CREDENTIAL_ID) if isinstance(vp_token, dict) else None
        # OpenID4VP 1.0 §8.1: vp_token maps the DCQL credential query id to presentations.
        if (
            not isinstance(presentations, list)
            or len(presentations) != 1
            or not isinstance(presentations[0], str)
        ):
            raise errors.MalformedPresentation("vp_token has no single PID presentation")
        verified = verify_presentation(
            presentations[0],
            trust=self.trust,
            nonce=pending.nonce,
            audience=self.verifier.client_id,
            now=now,
            status=self.status,
            vcts=self.vcts,
        )
        return self._result(verified.claims, verified.issuer, now)

    def _result(self, claims: Mapping[str, Any], issuer: str, now: datetime) -> EidResult:
        values = _attributes(claims)
        # Every input of the recognition key is required: without the place of birth, everyone of
        # the same name and birth date in the issuing country would share one key, and a login by
        # one's wallet would reach the account the other linked (PID Rulebook: place_of_birth
        # is a mandatory PID attribute).
        missing = [
            n
            for n in ("given_name", "family_name", "birthdate", "place_of_birth", "issuing_country")
            if not values.get(n)
        ]
        if missing:
            raise errors.ClaimMissing(f"PID lacks {', '.join(missing)}")
        level = Level.HIGH  # eIDAS 2 Art. 5a(11) / ARF: the PID is issued at LoA high
        source = f"{SOURCE}:{issuer}"[:200]
        return EidResult(
            pseudonym=recognition_key(self.pseudonym_key, values),
            level=level,
            acr=level.acr,
            issuer=SOURCE,
            auth_time=now,
            attributes=tuple(
                EidAttribute(name, values[name], source, level)
                for name in ("given_name", "family_name", "birthdate", "place_of_birth", "nationality")
                if values.get(name)
            ),
            authn_context=level.acr,
            simulation=self.simulation,
        )


def _norm(value: Any) -> str:
    return unicodedata.normalize("NFC", str(value)).strip()


def _attributes(claims: Mapping[str, Any]) -> dict[str, str]:
    """The PID Rulebook's claims as cityid's attribute names (place_of_birth: the locality)."""
    out: dict[str, str] = {}
    for name in ("given_name", "family_name", "birthdate", "issuing_country"):
        if isinstance(claims.get(name), str):
            out[name] = _norm(claims[name])[:200]
    place = claims.get("place_of_birth")
    if isinstance(place, dict) and isinstance(place.get("locality"), str):
        out["place_of_birth"] = _norm(place["locality"])[:200]
    elif isinstance(place, str):
        out["place_of_birth"] = _norm(place)[:200]
    nationalities = claims.get("nationalities")
    if isinstance(nationalities, list) and nationalities and isinstance(nationalities[0], str):
        out["nationality"] = _norm(nationalities[0])[:10]
    return out


def recognition_key(key: bytes, values: Mapping[str, str]) -> str:
    """PIDs carry no stable identifier: the same person is recognised by a keyed hash over given
    name, family name, birth date, birth place and issuing country (docs/wallet.md, privacy).
    Case-folded, NFC-normalised; the key is the instance's, so the value means nothing elsewhere."""
    parts = [
        values.get(n, "").casefold()
        for n in ("given_name", "family_name", "birthdate", "place_of_birth", "issuing_country")
    ]
    return hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()


def http_fetch(get: Callable[..., Any], limit: int = 1024 * 1024) -> Callable[[str], bytes]:
    """A status list fetcher over ``get`` (requests.get): Token Status List §8.1 media type,
    a timeout and a size limit. Redirects are not followed: the status list is at the URI the
    signed credential names (Token Status List §8.1), and a redirect (possibly to an internal
    address) is a failure to get the status, so the presentation is refused."""

    def fetch(uri: str) -> bytes:
        resp = get(
            uri,
            headers={"Accept": "application/statuslist+jwt"},
            timeout=5,
            stream=True,
            allow_redirects=False,
        )
        try:
            if resp.status_code != 200:
                raise ValueError(f"HTTP {resp.status_code}")
            body = resp.raw.read(limit + 1, decode_content=True)
            if len(body) > limit:
                raise ValueError("status list too large")
            return bytes(body)
        finally:
            resp.close()

    return fetch
