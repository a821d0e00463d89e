"""A TEST wallet (holder): keeps SD-JWT VCs, answers OpenID4VP 1.0 requests (signed request
object by reference, DCQL, ``direct_post.jwt``). Knobs let tests send the answers an attacker
or a broken wallet would send."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store
from jwcrypto import jwe, jwk, jws
from sd_jwt.holder import SDJWTHolder


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Request:
    """A verified OpenID4VP request object."""

    client_id: str
    claims: dict[str, Any]


@dataclass
class Holder:
    """``verifier_roots``: the TEST trust anchors for verifier certificates (the access
    certificates a real wallet checks). ``http_get`` / ``http_post``: e.g. a requests.Session's."""

    verifier_roots: list[x509.Certificate]
    http_get: Callable[..., Any]
    http_post: Callable[..., Any]
    key: jwk.JWK = field(default_factory=lambda: jwk.JWK.generate(kty="EC", crv="P-256"))
    credentials: list[str] = field(default_factory=list)
    last_post: tuple[str, dict[str, str]] | None = None  # (response_uri, form): for replay tests
    last_presentation: str = ""

    # ------------------------------------------------------------------ request

    def fetch_request(self, url: str) -> Request:
        """OpenID4VP 1.0 §5.10 (request_uri) and RFC 9101: fetch and verify the request object."""
        q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        resp = self.http_get(q["request_uri"])
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("application/oauth-authz-req+jwt")
        token = resp.text
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        assert header["typ"] == "oauth-authz-req+jwt", header
        chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"]]
        verifier = (
            PolicyBuilder()
            .store(Store(self.verifier_roots))
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
            )
            .build_client_verifier()
        )
        verifier.verify(chain[0], chain[1:])
        pem = chain[0].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        obj = jws.JWS()
        obj.deserialize(token)
        obj.verify(jwk.JWK.from_pem(pem))
        claims: dict[str, Any] = json.loads(obj.payload)
        # OpenID4VP 1.0 §5.9.3: x509_san_dns:<dns> must be a dNSName SAN of the leaf.
        prefix, _, value = claims["client_id"].partition(":")
        if prefix == "x509_hash":  # OpenID4VP 1.0 §5.9.3: the hash of the leaf certificate
            assert value == _b64(hashlib.sha256(chain[0].public_bytes(Encoding.DER)).digest()), value
        else:
            assert prefix == "x509_san_dns", claims["client_id"]
            sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert value in sans.get_values_for_type(x509.DNSName), (value, sans)
            # §5.9.3: without a trusted list of verifiers, the response_uri's host is that name
            assert urlsplit(claims["response_uri"]).hostname == value, claims["response_uri"]
        assert claims["client_id"] == q["client_id"]
        assert claims["response_mode"] == "direct_post.jwt" and claims["response_type"] == "vp_token"
        return Request(claims["client_id"], claims)

    # ------------------------------------------------------------------ response

    def present(
        self,
        credential: str,
        names: list[str],
        *,
        nonce: str,
        aud: str,
        kb_key: jwk.JWK | None = None,
        extra_disclosures: tuple[str, ...] = (),
        iat: int | None = None,
    ) -> str:
        """SD-JWT presentation of ``names`` with a KB-JWT (RFC 9901 §4.3)."""
        h = SDJWTHolder(credential)
        h.create_presentation({n: True for n in names})  # selection by the reference implementation
        without_kb: str = h.sd_jwt_presentation
        if extra_disclosures:
            without_kb = without_kb + "~".join(extra_disclosures) + "~"
        sd_hash = _b64(hashlib.sha256(without_kb.encode("ascii")).digest())
        payload = {"nonce": nonce, "aud": aud, "iat": iat or int(time.time()), "sd_hash": sd_hash}
        kb = jws.JWS(json.dumps(payload))
        kb.add_signature(
            kb_key or self.key, alg="ES256", protected=json.dumps({"alg": "ES256", "typ": "kb+jwt"})
        )
        return without_kb + str(kb.serialize(compact=True))

    def answer(
        self,
        url: str,
        credential: str | None = None,
        *,
        encrypt: bool = True,
        nonce: str | None = None,
        aud: str | None = None,
        state: str | None = None,
        kb_key: jwk.JWK | None = None,
        extra_disclosures: tuple[str, ...] = (),
        presentation: str | None = None,
    ) -> Any:
        """Fetch the request, present what its DCQL query asks, post to ``response_uri``."""
        req = self.fetch_request(url)
        c = req.claims
        query = c["dcql_query"]["credentials"][0]
        assert query["format"] == "dc+sd-jwt", query
        names = [claim["path"][0] for claim in query.get("claims", [])]
        vp = presentation or self.present(
            credential or self.credentials[0],
            names,
            nonce=c["nonce"] if nonce is None else nonce,
            aud=req.client_id if aud is None else aud,
            kb_key=kb_key,
            extra_disclosures=extra_disclosures,
        )
        self.last_presentation = vp
        body = {"vp_token": {query["id"]: [vp]}, "state": c["state"] if state is None else state}
        if not encrypt:
            return self.http_post(
                c["response_uri"], data={"vp_token": json.dumps(body["vp_token"]), "state": body["state"]}
            )
        meta = c["client_metadata"]
        key = next(k for k in meta["jwks"]["keys"] if k.get("use", "enc") == "enc")
        enc = meta.get("encrypted_response_enc_values_supported", ["A128GCM"])[0]
        token = jwe.JWE(
            json.dumps(body).encode(),
            protected=json.dumps({"alg": key.get("alg", "ECDH-ES"), "enc": enc, "kid": key["kid"]}),
        )
        token.add_recipient(jwk.JWK(**key))
        self.last_post = (c["response_uri"], {"response": token.serialize(compact=True)})
        return self.http_post(c["response_uri"], data=self.last_post[1])


def forged_disclosure(name: str, value: Any) -> str:
    """A disclosure the issuer never signed (its digest is in no ``_sd``)."""
    return _b64(json.dumps([secrets.token_urlsafe(16), name, value]).encode())


def now() -> datetime:
    return datetime.now(UTC)


def _as_metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: /.well-known/oauth-authorization-server inserted before the path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{path}"


@dataclass
class Receiver:
    """The holder's OpenID4VCI 1.0 side: offers (pre-authorized code), nonce, key proof."""

    holder: Holder

    def metadata(self, issuer: str) -> dict[str, Any]:
        resp = self.holder.http_get(f"{issuer}/.well-known/openid-credential-issuer")
        assert resp.status_code == 200, resp.text
        meta: dict[str, Any] = resp.json()
        assert meta["credential_issuer"] == issuer  # OpenID4VCI 1.0 §12.2.3
        return meta

    def redeem_offer(self, offer_uri: str, tx_code: str) -> Any:
        """OpenID4VCI 1.0 §4.1 and §6.1: the offer's pre-authorized code at its AS's token endpoint."""
        offer = json.loads(parse_qs(urlsplit(offer_uri).query)["credential_offer"][0])
        grant = offer["grants"]["urn:ietf:params:oauth:grant-type:pre-authorized_code"]
        as_meta = self.holder.http_get(_as_metadata_url(grant["authorization_server"])).json()
        return self.holder.http_post(
            as_meta["token_endpoint"],
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:pre-authorized_code",
                "pre-authorized_code": grant["pre-authorized_code"],
                "tx_code": tx_code,
            },
        ), offer

    def proof(self, issuer: str, nonce: str, key: jwk.JWK | None = None, aud: str | None = None) -> str:
        """OpenID4VCI 1.0 Appendix F.1: the JWT key proof."""
        k = key or self.holder.key
        header = {"alg": "ES256", "typ": "openid4vci-proof+jwt", "jwk": json.loads(k.export_public())}
        token = jws.JWS(json.dumps({"aud": aud or issuer, "iat": int(time.time()), "nonce": nonce}))
        token.add_signature(k, alg="ES256", protected=json.dumps(header))
        return str(token.serialize(compact=True))

    def request(
        self, issuer: str, access_token: str, *, nonce: str | None = None, config_id: str = "library_card"
    ) -> Any:
        meta = self.metadata(issuer)
        c_nonce = nonce or self.holder.http_post(meta["nonce_endpoint"]).json()["c_nonce"]
        return self.holder.http_post(
            meta["credential_endpoint"],
            json={"credential_configuration_id": config_id, "proofs": {"jwt": [self.proof(issuer, c_nonce)]}},
            headers={"Authorization": f"Bearer {access_token}"},
        )
