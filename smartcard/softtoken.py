"""The reference device: a soft token that behaves like the city app's virtual smartcard.

Its P-256 key lives in a PEM file or on a PKCS#11 token (SoftHSM2 in tests; generated there as
sensitive, non-extractable). It produces Android-style key attestation from a TEST root given
to it (``smartcard.evidence``): such evidence is trusted only by a server configured with that
root. The HTTP client (``DeviceClient``) speaks the device API (docs/device-api.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jws
from joserfc.jwk import ECKey

from attestation import AndroidKeyEvidence, Evidence
from smartcard.evidence import TestCa, make_android_key_attestation, make_test_root
from smartcard.proof import TYP
from smartcard.wire import evidence_to_json

STATE_FILE = "token.json"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def es256_jws(key: ec.EllipticCurvePrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """RFC 7515 compact JWS, ES256 (RFC 7518 §3.4: r || s, 32 bytes each). Signed here rather
    than by joserfc so that a PKCS#11 key (sign() only) works the same as a file key."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# --------------------------------------------------------------------------- attestation root


def write_test_root(directory: Path) -> tuple[Path, Path]:
    """Create a TEST attestation root (certificate + key, PEM). Trust it on a server only by
    configuration (``smartcard.extra_android_roots_file``)."""
    directory.mkdir(parents=True, exist_ok=True)
    root = make_test_root("cityid TEST device attestation root")
    cert = directory / "attestation-root.pem"
    key = directory / "attestation-root-key.pem"
    cert.write_bytes(root.certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        root.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key.chmod(0o600)
    return cert, key


def load_test_root(directory: Path) -> TestCa:
    key = serialization.load_pem_private_key((directory / "attestation-root-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = x509.load_pem_x509_certificate((directory / "attestation-root.pem").read_bytes())
    return TestCa(key, cert)


@dataclass(frozen=True)
class AttestationProfile:
    """What the soft token claims about itself in its (TEST) attestation."""

    root_dir: Path
    package: str = "de.musterstadt.cityapp"
    signing_digest: bytes = hashlib.sha256(b"cityid test app signing certificate").digest()
    security_level: str = "tee"  # software | tee | strongbox


# --------------------------------------------------------------------------- the token


class SoftToken:
    """A device key, its certificate and where the server is, kept in a state directory."""

    def __init__(self, directory: Path, state: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> None:
        self.directory = directory
        self.state = state
        self.key = key

    # -- creation and loading ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        server: str,
        pkcs11: dict[str, str] | None = None,
    ) -> SoftToken:
        directory.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {"server": server.rstrip("/")}
        key = cls._new_key(directory, state, pkcs11)
        token = cls(directory, state, key)
        token.save()
        return token

    @staticmethod
    def _new_key(
        directory: Path, state: dict[str, Any], pkcs11: dict[str, str] | None
    ) -> ec.EllipticCurvePrivateKey:
        if pkcs11 is not None:
            from pki.pkcs11_store import Pkcs11KeyStore

            store = Pkcs11KeyStore(pkcs11["module"], pkcs11["token"], pkcs11["pin"])
            label = f"device-{secrets.token_hex(6)}"
            ref = store.generate(label)
            state["key"] = {"pkcs11": {"module": pkcs11["module"], "token": pkcs11["token"], "ref": ref}}
            signer = store.signer(ref)
            assert isinstance(signer, ec.EllipticCurvePrivateKey)
            return signer
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"device-key-{secrets.token_hex(4)}.pem"
        path = directory / name
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
        state["key"] = {"file": name}
        return key

    @classmethod
    def load(cls, directory: Path, *, pkcs11_pin: str | None = None) -> SoftToken:
        state = json.loads((directory / STATE_FILE).read_text())
        ref = state["key"]
        if "pkcs11" in ref:
            from pki.pkcs11_store import Pkcs11KeyStore

            p = ref["pkcs11"]
            store = Pkcs11KeyStore(p["module"], p["token"], pkcs11_pin or "")
            signer = store.signer(p["ref"])
            assert isinstance(signer, ec.EllipticCurvePrivateKey)
            return cls(directory, state, signer)
        key = serialization.load_pem_private_key((directory / ref["file"]).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(directory, state, key)

    def save(self) -> None:
        """Write the state whole or not at all (a new file renamed over the old one)."""
        path = self.directory / STATE_FILE
        fresh = path.with_name(f".{STATE_FILE}.{secrets.token_hex(4)}")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(self.state, indent=2, sort_keys=True))
            out.flush()
            os.fsync(out.fileno())
        os.replace(fresh, path)

    def rotate_key(self, pkcs11: dict[str, str] | None = None) -> ec.EllipticCurvePrivateKey:
        """A new key for a renewal with a new key (the old one stays until the renewal works)."""
        pending: dict[str, Any] = {}
        key = self._new_key(self.directory, pending, pkcs11)
        self.state["next_key"] = pending["key"]
        return key

    # -- what the device makes --------------------------------------------------------------

    @property
    def server(self) -> str:
        return str(self.state["server"])

    @property
    def certificate_der(self) -> bytes:
        cert = x509.load_pem_x509_certificate(self.state["certificate"].encode())
        return cert.public_bytes(serialization.Encoding.DER)

    def csr(self, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        """PKCS#10 with an empty subject; the CA names the device (RFC 2986)."""
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
        return builder.sign(key or self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def attestation(
        self, challenge: bytes, profile: AttestationProfile, key: ec.EllipticCurvePrivateKey | None = None
    ) -> Evidence:
        chain = make_android_key_attestation(
            (key or self.key).public_key(),
            challenge,
            profile.package,
            profile.signing_digest,
            profile.security_level,
            root=load_test_root(profile.root_dir),
        )
        return AndroidKeyEvidence(tuple(chain))

    def proof(self, method: str, url: str, **claims: Any) -> str:
        """A device proof (``device-proof+jwt``) over this request, with the certificate."""
        header = {"typ": TYP, "alg": "ES256", "x5c": [base64.b64encode(self.certificate_der).decode()]}
        body = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
            **claims,
        }
        return es256_jws(self.key, header, body)


# --------------------------------------------------------------------------- DPoP for the app


class DpopSigner:
    """The app's DPoP key (RFC 9449 §4.2), separate from the device key, with its nonce."""

    def __init__(self, key: ECKey | None = None) -> None:
        self.key = key or ECKey.generate_key("P-256", private=True)
        self.nonce: str | None = None

    @classmethod
    def load(cls, path: Path) -> DpopSigner:
        return cls(ECKey.import_key(json.loads(path.read_text())))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.key.as_dict(private=True)))
        path.chmod(0o600)

    @property
    def jkt(self) -> str:
        return str(self.key.thumbprint())

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
        }
        if self.nonce:
            claims["nonce"] = self.nonce
        if access_token is not None:
            claims["ath"] = b64url(hashlib.sha256(access_token.encode()).digest())
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        return str(jws.serialize_compact(header, json.dumps(claims).encode(), self.key))


# --------------------------------------------------------------------------- HTTP client


class DeviceApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('error')}: {body.get('error_description')}")
        self.status = status
        self.error = str(body.get("error", ""))
        self.body = body


class DeviceClient:
    """The device API as the city app calls it."""

    def __init__(self, token: SoftToken, http: requests.Session | None = None) -> None:
        self.token = token
        self.http = http or requests.Session()

    def _url(self, path: str) -> str:
        return f"{self.token.server}{path}"

    @staticmethod
    def _json(resp: requests.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = resp.json()
        except ValueError:
            body = {"error": "bad_response", "error_description": resp.text[:200]}
        if resp.status_code >= 400:
            raise DeviceApiError(resp.status_code, body)
        return body

    def _with_dpop(
        self, method: str, path: str, access_token: str, dpop: DpopSigner, **kw: Any
    ) -> dict[str, Any]:
        url = self._url(path)
        for _ in range(2):  # RFC 9449 §8: one retry with the server's nonce
            headers = {"Authorization": f"DPoP {access_token}", "DPoP": dpop.proof(method, url, access_token)}
            resp = self.http.request(method, url, headers=headers, timeout=10, **kw)
            if (
                resp.status_code == 401
                and "DPoP-Nonce" in resp.headers
                and dpop.nonce != resp.headers["DPoP-Nonce"]
            ):
                dpop.nonce = resp.headers["DPoP-Nonce"]
                continue
            return self._json(resp)
        return self._json(resp)

    def enrol(
        self,
        access_token: str,
        dpop: DpopSigner,
        *,
        name: str,
        attestation: AttestationProfile | None,
    ) -> dict[str, Any]:
        ch = self._with_dpop(
            "POST", "/api/smartcard/challenge", access_token, dpop, json={"purpose": "enroll"}
        )
        challenge = b64url_decode(ch["challenge"])
        evidence = self.token.attestation(challenge, attestation) if attestation else None
        body = {
            "challenge": ch["challenge"],
            "csr": b64url(self.token.csr()),
            "attestation": evidence_to_json(evidence),
            "name": name,
        }
        result = self._with_dpop("POST", "/api/smartcard/enroll", access_token, dpop, json=body)
        self.token.state.update(
            device_id=result["device_id"], certificate=result["certificate"], chain=result["chain"]
        )
        self.token.save()
        return result

    def pending(self) -> list[dict[str, Any]]:
        url = self._url("/api/smartcard/pending")
        resp = self.http.get(
            url, headers={"Authorization": f"Device {self.token.proof('GET', url)}"}, timeout=10
        )
        items: list[dict[str, Any]] = self._json(resp)["pending"]
        return items

    def answer(self, item: dict[str, Any], decision: str = "approve") -> dict[str, Any]:
        """Sign challenge + binding data (what the device showed) and send the decision."""
        url = self._url("/api/smartcard/approve")
        approval = self.token.proof(
            "POST",
            url,
            challenge=item["challenge"],
            binding_code=item["binding_code"],
            service_name=item["service_name"],
            amount=item.get("amount"),
            decision=decision,
        )
        return self._json(self.http.post(url, json={"approval": approval}, timeout=10))

    # -- document signatures (docs/device-api.md §7) --------------------------------------

    def signature_requests(self) -> list[dict[str, Any]]:
        """Signature requests waiting for this device's citizen, prepared for this key."""
        url = self._url("/api/signatures/pending")
        resp = self.http.get(
            url, headers={"Authorization": f"Device {self.token.proof('GET', url)}"}, timeout=30
        )
        items: list[dict[str, Any]] = self._json(resp)["pending"]
        return items

    def signature_approval(self, item: dict[str, Any], decision: str = "approve", **shown: Any) -> str:
        """After the citizen saw title, pages, SHA-256 and service: the device proof answering
        ``item``. For ``approve`` it carries the signature over the CMS signed attributes
        (RFC 5652 §5.4: ECDSA over SHA-256 of their DER). The device checks that
        ``to_be_signed`` is the digest of the attributes it signs, so the server cannot have it
        sign something else. ``shown`` overrides what the answer says was shown (tests)."""
        attributes = b64url_decode(item["signed_attributes"])
        if hashlib.sha256(attributes).digest() != b64url_decode(item["to_be_signed"]):
            raise DeviceApiError(0, {"error": "bad_request", "error_description": "digest mismatch"})
        claims: dict[str, Any] = {
            "request": item["id"],
            "document_sha256": item["document_sha256"],
            "title": item["title"],
            "pages": item["pages"],
            "service_name": item["service_name"],
            "decision": decision,
        }
        if decision == "approve":
            claims["to_be_signed"] = item["to_be_signed"]
            claims["signature"] = b64url(self.token.key.sign(attributes, ec.ECDSA(hashes.SHA256())))
        claims.update(shown)
        return self.token.proof("POST", self._url("/api/signatures/approve"), **claims)

    def send_signature_approval(self, approval: str) -> dict[str, Any]:
        url = self._url("/api/signatures/approve")
        return self._json(self.http.post(url, json={"approval": approval}, timeout=60))

    def sign_document(self, item: dict[str, Any], decision: str = "approve") -> dict[str, Any]:
        """Answer a signature request (see :meth:`signature_approval`)."""
        return self.send_signature_approval(self.signature_approval(item, decision))

    def renew(
        self, *, attestation: AttestationProfile | None = None, new_key: bool = False
    ) -> dict[str, Any]:
        url = self._url("/api/smartcard/challenge")
        ch = self._json(
            self.http.post(
                url, headers={"Authorization": f"Device {self.token.proof('POST', url)}"}, json={}, timeout=10
            )
        )
        challenge = b64url_decode(ch["challenge"])
        key = self.token.rotate_key() if new_key else self.token.key
        evidence = self.token.attestation(challenge, attestation, key) if attestation else None
        url = self._url("/api/smartcard/renew")
        renewal = self.token.proof(
            "POST",
            url,
            challenge=ch["challenge"],
            csr=b64url(self.token.csr(key)),
            attestation=evidence_to_json(evidence),
        )
        result = self._json(self.http.post(url, json={"renewal": renewal}, timeout=10))
        if new_key:
            self.token.state["key"] = self.token.state.pop("next_key")
            self.token.key = key
        self.token.state.update(certificate=result["certificate"], chain=result["chain"])
        self.token.save()
        return result


__all__ = [
    "AttestationProfile",
    "DeviceApiError",
    "DeviceClient",
    "DpopSigner",
    "SoftToken",
    "load_test_root",
    "make_test_root",
    "write_test_root",
]
