"""A TEST PID provider: a root, an issuer certificate, SD-JWT VC PIDs and a Token Status List."""

from __future__ import annotations

import base64
import json
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwcrypto import jwk, jws
from sd_jwt.common import SDObj
from sd_jwt.issuer import SDJWTIssuer

PID_VCT = "urn:eudi:pid:1"

ERIKA: dict[str, Any] = {
    "given_name": "Erika",
    "family_name": "Mustermann",
    "birthdate": "1964-08-12",
    "place_of_birth": {"locality": "Berlin", "country": "DE"},
    "nationalities": ["DE"],
    "issuing_country": "DE",
    "issuing_authority": "TEST PID provider (simulation)",
}


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]
    )


def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, cn: str, dns: str | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def jwk_of(key: ec.EllipticCurvePrivateKey) -> jwk.JWK:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwk.JWK.from_pem(pem)


def b64der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


class TestPidProvider:
    """Issues TEST PIDs (SD-JWT VC, ``vct`` urn:eudi:pid:1, issuer key in ``x5c``) and keeps a
    1-bit Token Status List at ``status_uri``. ``root_pem`` is its TEST trust anchor."""

    __test__ = False  # not a pytest class

    def __init__(
        self, issuer: str = "https://pid.test.example", status_uri: str = "", cn: str = "TEST PID Provider"
    ) -> None:
        self.issuer = issuer
        self.status_uri = status_uri
        self._root_key, self.root = make_ca(f"{cn} TEST Root")
        key, self.cert = make_leaf(self._root_key, self.root, cn)
        self._key = jwk_of(key)
        self._statuses = bytearray(1024)  # 8192 one-bit entries, all VALID
        self._next = 0

    def save(self, directory: Path) -> None:
        """Keep the TEST provider (keys unencrypted: TEST only) for the demo CLI."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "pid-root.pem").write_bytes(self.root_pem)
        (directory / "pid-issuer.pem").write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        (directory / "pid-issuer.key").write_bytes(self._key.export_to_pem(private_key=True, password=None))
        (directory / "pid-issuer.json").write_text(
            json.dumps({"issuer": self.issuer, "status_uri": self.status_uri})
        )

    @classmethod
    def load(cls, directory: Path) -> TestPidProvider:
        meta = json.loads((directory / "pid-issuer.json").read_text())
        self = cls.__new__(cls)
        self.issuer, self.status_uri = meta["issuer"], meta["status_uri"]
        self.root = x509.load_pem_x509_certificate((directory / "pid-root.pem").read_bytes())
        self.cert = x509.load_pem_x509_certificate((directory / "pid-issuer.pem").read_bytes())
        self._key = jwk.JWK.from_pem((directory / "pid-issuer.key").read_bytes())
        self._statuses = bytearray(1024)
        self._next = 0
        return self

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        holder: jwk.JWK,
        claims: dict[str, Any] | None = None,
        *,
        lifetime: timedelta = timedelta(days=90),
        iat: datetime | None = None,
        vct: str = PID_VCT,
        with_status: bool = True,
    ) -> tuple[str, int]:
        """An SD-JWT VC issuance (``<jwt>~<disclosure>~...~``) bound to ``holder``, and its
        status index. Every personal claim is selectively disclosable."""
        issued = iat or datetime.now(UTC)
        user: dict[Any, Any] = {
            "iss": self.issuer,
            "vct": vct,
            "iat": int(issued.timestamp()),
            "exp": int((issued + lifetime).timestamp()),
        }
        for name, value in (claims or ERIKA).items():
            user[SDObj(name)] = value
        idx = self._next
        self._next += 1
        if with_status and self.status_uri:
            user["status"] = {"status_list": {"idx": idx, "uri": self.status_uri}}
        made = SDJWTIssuer(
            user,
            self._key,
            holder_key=holder,
            sign_alg="ES256",
            add_decoy_claims=True,
            extra_header_parameters={"typ": "dc+sd-jwt", "x5c": [b64der(self.cert)]},
        )
        return made.sd_jwt_issuance, idx

    def revoke(self, idx: int) -> None:
        self._statuses[idx // 8] |= 1 << (idx % 8)

    def status_list_token(self) -> str:
        """Token Status List §5.1: a JWT of typ statuslist+jwt, signed with the issuer's key."""
        lst = base64.urlsafe_b64encode(zlib.compress(bytes(self._statuses), 9)).rstrip(b"=").decode()
        now = int(time.time())
        payload = {
            "sub": self.status_uri,
            "iat": now,
            "exp": now + 3600,
            "ttl": 60,
            "status_list": {"bits": 1, "lst": lst},
        }
        token = jws.JWS(json.dumps(payload))
        header = {"alg": "ES256", "typ": "statuslist+jwt", "x5c": [b64der(self.cert)]}
        token.add_signature(self._key, alg="ES256", protected=json.dumps(header))
        return str(token.serialize(compact=True))
