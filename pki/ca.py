"""A loaded issuing CA: its certificate, its root, where its key lives, and its URLs."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AuthorityInformationAccessOID
from sqlalchemy import select
from sqlalchemy.orm import Session

from pki.certpolicy import policy_oid
from pki.errors import CaNotInitialised
from pki.keystore import KeyStore, Signer
from pki.models import CaAuthority
from pki.settings import CaSettings
from pki.urls import CaUrls

ROOT = "root"
ISSUING = "issuing"
OCSP_SIGNER = "ocsp-signer"
TSA = "tsa"  # the time-stamping certificate (pki/tsa.py)
SEAL = "document-seal"  # the city seal (pki/seal.py)
CREDENTIAL_ISSUER = "credential-issuer"  # the wallet credential issuer's key (pki/credential_issuer.py)


@dataclass(frozen=True)
class CertificateAuthority:
    id: str
    certificate: x509.Certificate
    root_id: str
    root_certificate: x509.Certificate
    key_ref: str
    key_store: KeyStore
    urls: CaUrls
    settings: CaSettings

    def signer(self) -> Signer:
        return self.key_store.signer(self.key_ref)

    def chain_pem(self) -> bytes:
        """Issuing CA then root, PEM (RFC 7468), for ``/pki/chain.pem``."""
        return self.certificate.public_bytes(serialization.Encoding.PEM) + self.root_certificate.public_bytes(
            serialization.Encoding.PEM
        )

    @property
    def crl_shards(self) -> int:
        return max(1, self.settings.crl_shards)

    @functools.cached_property
    def _extensions(self) -> dict[object, x509.Extension[x509.ExtensionType]]:
        return {}  # extensions every certificate of this CA shares, built once

    def _cached(self, key: object, value: x509.ExtensionType) -> x509.Extension[x509.ExtensionType]:
        ext = self._extensions.get(key)
        if ext is None:
            # encoded once (as ``profiles.encoded``): cryptography copies the DER per certificate
            der = value.public_bytes()
            ext = x509.Extension(value.oid, False, x509.UnrecognizedExtension(value.oid, der))
            self._extensions[key] = ext
        return ext

    def policy_extension(self, policy: str) -> x509.Extension[x509.ExtensionType]:
        """certificatePolicies (RFC 5280 §4.2.1.4) naming ``policy`` under the configured arc."""
        ext = self._extensions.get(("policy", policy))
        if ext is not None:
            return ext
        oid = policy_oid(self.settings.policy_arc, policy)
        return self._cached(("policy", policy), x509.CertificatePolicies([x509.PolicyInformation(oid, None)]))

    def authority_key_identifier(self) -> x509.Extension[x509.ExtensionType]:
        """RFC 5280 §4.2.1.1: keyIdentifier = the issuing CA's subjectKeyIdentifier."""
        ext = self._extensions.get("aki")
        if ext is not None:
            return ext
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return self._cached("aki", x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value))

    def authority_info_access(self, *, ocsp: bool) -> x509.Extension[x509.ExtensionType]:
        """RFC 5280 §4.2.2.1: the OCSP responder (if asked) and caIssuers (DER over HTTP)."""
        ext = self._extensions.get(("aia", ocsp))
        if ext is not None:
            return ext
        issuers = x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS,
            x509.UniformResourceIdentifier(self.urls.issuing_cert),
        )
        responder = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(self.urls.ocsp)
        )
        access = [responder, issuers] if ocsp else [issuers]
        return self._cached(("aia", ocsp), x509.AuthorityInformationAccess(access))

    def crl_distribution_point(self, shard: int) -> x509.Extension[x509.ExtensionType]:
        """RFC 5280 §4.2.1.13: the shard CRL that will list the certificate; non-critical."""
        ext = self._extensions.get(("crldp", shard))
        if ext is not None:
            return ext
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(self.urls.shard_crl(shard))],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        return self._cached(("crldp", shard), x509.CRLDistributionPoints([point]))

    @functools.cached_property
    def ocsp_issuer_hashes(self) -> dict[str, tuple[bytes, bytes]]:
        """RFC 6960 §4.1.1 CertID: hash of the issuer's DER name and of its public key bits."""
        name = self.certificate.subject.public_bytes()
        key = self.certificate.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        out = {}
        # SHA-1 CertIDs are what most clients send (RFC 5019 §2.1.1); matching is not a security use
        for algorithm in (hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):  # noqa: S303
            name_hash, key_hash = hashes.Hash(algorithm), hashes.Hash(algorithm)
            name_hash.update(name)
            key_hash.update(key)
            out[algorithm.name] = (name_hash.finalize(), key_hash.finalize())
        return out


def load_ca(
    session: Session, settings: CaSettings, key_store: KeyStore, base_url: str
) -> CertificateAuthority:
    """The active issuing CA; :class:`CaNotInitialised` before ``cityid ca init``."""
    row = session.execute(
        select(CaAuthority)
        .where(CaAuthority.kind == ISSUING, CaAuthority.active.is_(True))
        .order_by(CaAuthority.created_at.desc())
        .limit(1)
    ).scalar()
    if row is None or row.parent_id is None:
        raise CaNotInitialised()
    root = session.get(CaAuthority, row.parent_id)
    if root is None:
        raise CaNotInitialised("issuing CA without root")
    return CertificateAuthority(
        id=row.id,
        certificate=x509.load_der_x509_certificate(row.der),
        root_id=root.id,
        root_certificate=x509.load_der_x509_certificate(root.der),
        key_ref=row.key_ref,
        key_store=key_store,
        urls=CaUrls(base_url),
        settings=settings,
    )
