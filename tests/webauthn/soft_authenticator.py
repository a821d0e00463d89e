"""A software WebAuthn authenticator and client for tests, built on fido2's data classes.

It answers the server's JSON options with the JSON a browser would post, and has knobs to
break each property the relying party checks (origin, RP ID, flags, counter, challenge).
``packed`` attestation is signed by a batch certificate under a TEST root made at run time:
nothing here is real-device evidence, and it is trusted only where a test configures it so.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fido2 import cbor
from fido2.cose import ES256
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    CollectedClientData,
)

from smartcard.evidence import TestCa

FIDO_AAGUID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
UP, UV, AT = 0x01, 0x04, 0x40


def _batch_certificate(root: TestCa, key: ec.EllipticCurvePrivateKey, aaguid: bytes) -> bytes:
    """WebAuthn L2 §8.2.1: packed attestation certificate requirements."""
    now = datetime.now(UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cityid TEST"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
            x509.NameAttribute(NameOID.COMMON_NAME, "cityid TEST soft authenticator"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.UnrecognizedExtension(FIDO_AAGUID_OID, b"\x04\x10" + aaguid), critical=False)
        .sign(root.key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


@dataclass
class SoftAuthenticator:
    """One credential. ``root``: sign ``packed`` attestation under it; None: ``none`` format."""

    aaguid: bytes = bytes.fromhex("c17e0000c17e0000c17e0000c17e0000")
    root: TestCa | None = None
    counter: int = 0
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))

    @property
    def cose_key(self) -> ES256:
        return ES256.from_cryptography_key(self.key.public_key())

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str,
        rp_id: str | None = None,
        flags: int = UP | UV | AT,
        kind: str = "webauthn.create",
        challenge: bytes | None = None,
        fmt: str | None = None,
        tamper_signature: bool = False,
    ) -> dict[str, Any]:
        """A RegistrationResponseJSON for ``options`` (PublicKeyCredentialCreationOptions)."""
        pk = options["publicKey"]
        client_data = CollectedClientData.create(
            type=kind, challenge=challenge or websafe_decode(pk["challenge"]), origin=origin
        )
        auth_data = AuthenticatorData.create(
            hashlib.sha256((rp_id or pk["rp"]["id"]).encode()).digest(),
            AuthenticatorData.FLAG(flags),
            self.counter,
            AttestedCredentialData.create(self.aaguid, self.credential_id, self.cose_key)
            if flags & AT
            else b"",
        )
        fmt = fmt or ("packed" if self.root is not None else "none")
        stmt: dict[str, Any] = {}
        if fmt == "packed" and self.root is not None:
            batch_key = ec.generate_private_key(ec.SECP256R1())
            sig = batch_key.sign(bytes(auth_data) + client_data.hash, ec.ECDSA(hashes.SHA256()))
            if tamper_signature:
                sig = batch_key.sign(b"something else", ec.ECDSA(hashes.SHA256()))
            stmt = {"alg": -7, "sig": sig, "x5c": [_batch_certificate(self.root, batch_key, self.aaguid)]}
        elif fmt == "packed":  # WebAuthn L2 §8.2 self attestation: signed by the credential key
            stmt = {
                "alg": -7,
                "sig": self.key.sign(bytes(auth_data) + client_data.hash, ec.ECDSA(hashes.SHA256())),
            }
        att = AttestationObject.create(fmt, auth_data, stmt)
        return {
            "id": websafe_encode(self.credential_id),
            "rawId": websafe_encode(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": websafe_encode(bytes(client_data)),
                "attestationObject": websafe_encode(bytes(att)),
            },
            "clientExtensionResults": {},
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str,
        rp_id: str | None = None,
        flags: int = UP | UV,
        counter: int | None = None,
        kind: str = "webauthn.get",
        user_handle: bytes | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> dict[str, Any]:
        """An AuthenticationResponseJSON for ``options``; the counter grows by one unless given."""
        pk = options["publicKey"]
        self.counter = self.counter + 1 if counter is None else counter
        client_data = CollectedClientData.create(
            type=kind, challenge=websafe_decode(pk["challenge"]), origin=origin
        )
        auth_data = AuthenticatorData.create(
            hashlib.sha256((rp_id or pk["rpId"]).encode()).digest(),
            AuthenticatorData.FLAG(flags),
            self.counter,
        )
        signature = (key or self.key).sign(bytes(auth_data) + client_data.hash, ec.ECDSA(hashes.SHA256()))
        response: dict[str, Any] = {
            "clientDataJSON": websafe_encode(bytes(client_data)),
            "authenticatorData": websafe_encode(bytes(auth_data)),
            "signature": websafe_encode(signature),
        }
        if user_handle is not None:
            response["userHandle"] = websafe_encode(user_handle)
        return {
            "id": websafe_encode(self.credential_id),
            "rawId": websafe_encode(self.credential_id),
            "type": "public-key",
            "response": response,
            "clientExtensionResults": {},
        }


def cbor_dump(value: Any) -> bytes:
    return cbor.encode(value)
