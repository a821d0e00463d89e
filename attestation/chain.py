"""X.509 path checks that fido2's ``verify_x509_chain`` leaves undone.

``validate_path`` takes a chain leaf first (with or without the root at its end) and a set of
trust anchors, and checks, at a given instant, every rule of RFC 5280 §6.1 that attestation
chains need: names chain, signatures verify, every certificate and the anchor are inside their
validity period, every issuer is a CA (basicConstraints), pathLenConstraint holds, keyUsage
allows certificate signing, no unknown critical extension. Pure: certificates in, path out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtensionOID

from .errors import (
    CertificateExpired,
    ChainInvalid,
    MalformedEvidence,
    SignatureInvalid,
    UntrustedRoot,
)

# RFC 5280 §4.2: extensions this module understands (or that carry no path semantics).
_KNOWN_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    }
)
_EDGE_CACHE_MAX = 4096


def spki(cert: x509.Certificate) -> bytes:
    """The certificate's SubjectPublicKeyInfo, DER."""
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def load_der_chain(ders: Sequence[bytes]) -> list[x509.Certificate]:
    """Parse DER certificates; anything unparsable is ``MalformedEvidence``."""
    if not ders:
        raise MalformedEvidence("empty certificate chain")
    certs = []
    for i, der in enumerate(ders):
        if not isinstance(der, bytes | bytearray):
            raise MalformedEvidence(f"certificate {i} is not a byte string")
        try:
            cert = x509.load_der_x509_certificate(bytes(der))
            # cryptography parses lazily: touch every field the checks read, so that a
            # malformed one fails here, as MalformedEvidence, and not later as ValueError
            cert.subject.public_bytes()
            cert.issuer.public_bytes()
            cert.public_key()
            cert.extensions  # noqa: B018
            cert.not_valid_before_utc  # noqa: B018
            cert.not_valid_after_utc  # noqa: B018
        except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as e:
            raise MalformedEvidence(f"certificate {i} is not valid X.509: {e}") from None
        certs.append(cert)
    return certs


class AnchorSet:
    """Trust anchors indexed for path building, plus a bounded cache of verified CA→CA edges.

    Immutable in what it trusts; the cache only remembers that a given issuer certificate's
    signature over a given CA certificate verified (keyed by both DER encodings), so warm
    verifications skip re-checking the same intermediates. Validity is checked every time.
    """

    __slots__ = ("_by_subject", "_edges", "certs")

    def __init__(self, certs: Iterable[x509.Certificate]) -> None:
        self.certs: tuple[x509.Certificate, ...] = tuple(certs)
        by_subject: dict[bytes, list[tuple[x509.Certificate, bytes]]] = {}
        for c in self.certs:
            by_subject.setdefault(c.subject.public_bytes(), []).append((c, spki(c)))
        self._by_subject = {k: tuple(v) for k, v in by_subject.items()}
        self._edges: dict[tuple[bytes, bytes], bool] = {}

    def __len__(self) -> int:
        return len(self.certs)

    def matching(self, cert: x509.Certificate) -> tuple[x509.Certificate, ...]:
        """Anchors that *are* ``cert`` (same subject and key), e.g. a root copy in the chain."""
        candidates = self._by_subject.get(cert.subject.public_bytes(), ())
        if not candidates:
            return ()
        key = spki(cert)
        return tuple(a for a, a_key in candidates if a_key == key)

    def issuers_of(self, cert: x509.Certificate) -> tuple[x509.Certificate, ...]:
        return tuple(a for a, _ in self._by_subject.get(cert.issuer.public_bytes(), ()))

    def _edge_known(self, child: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, bytes]:
        return (child.public_bytes(Encoding.DER), issuer.public_bytes(Encoding.DER))

    def verify_edge(self, child: x509.Certificate, issuer: x509.Certificate, cache: bool) -> None:
        key = self._edge_known(child, issuer) if cache else None
        if key is not None and self._edges.get(key):
            return
        _verify_signature(child, issuer)
        if key is not None:
            if len(self._edges) >= _EDGE_CACHE_MAX:
                self._edges.clear()
            self._edges[key] = True


def _verify_signature(child: x509.Certificate, issuer: x509.Certificate) -> None:
    # RFC 5280 §6.1.3 (a)(1) and (a)(4): signature by, and name chaining to, the issuer
    try:
        child.verify_directly_issued_by(issuer)
    except InvalidSignature:
        name = child.subject.rfc4514_string()
        raise SignatureInvalid(f"signature of {name!r} does not verify") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        name = child.subject.rfc4514_string()
        raise ChainInvalid(f"{name!r} not issued by the next certificate: {e}") from None


def _check_validity(cert: x509.Certificate, now: datetime, role: str) -> None:
    # RFC 5280 §6.1.3 (a)(2): the certificate validity period includes the current time
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        raise CertificateExpired(
            f"{role} {cert.subject.rfc4514_string()!r} valid "
            f"{cert.not_valid_before_utc:{fmt}}..{cert.not_valid_after_utc:{fmt}}, "
            f"not at {now:{fmt}}"
        )


def _check_critical_extensions(cert: x509.Certificate) -> None:
    # RFC 5280 §4.2: a certificate with an unrecognised critical extension MUST be rejected
    try:
        extensions = cert.extensions
    except ValueError as e:
        name = cert.subject.rfc4514_string()
        raise MalformedEvidence(f"bad extensions in {name!r}: {e}") from None
    for ext in extensions:
        if ext.critical and ext.oid not in _KNOWN_CRITICAL:
            raise ChainInvalid(f"unknown critical extension {ext.oid.dotted_string}")


def _check_issuer_constraints(issuer: x509.Certificate, below: int) -> None:
    """``below``: number of intermediate CA certificates between this issuer and the leaf."""
    name = issuer.subject.rfc4514_string()
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    # RFC 5280 §6.1.4 (k): an issuer must be a CA (basicConstraints cA TRUE)
    if bc is None or not bc.ca:
        raise ChainInvalid(f"issuer {name!r} is not a CA (basicConstraints)")
    # RFC 5280 §6.1.4 (l)/(m): pathLenConstraint bounds the intermediates below it
    if bc.path_length is not None and below > bc.path_length:
        raise ChainInvalid(f"issuer {name!r} pathLen {bc.path_length} < {below} intermediates")
    # RFC 5280 §6.1.4 (n): if keyUsage is present, keyCertSign must be set
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.key_cert_sign:
        raise ChainInvalid(f"issuer {name!r} keyUsage lacks keyCertSign")


def validate_path(
    chain: Sequence[x509.Certificate], anchors: AnchorSet, now: datetime
) -> tuple[x509.Certificate, ...]:
    """Validate ``chain`` (leaf first) up to one of ``anchors`` at ``now``.

    Returns the path actually used: the chain's certificates up to (excluding) the first one
    that is a trust anchor, followed by that configured anchor. A chain that reaches no anchor
    raises ``UntrustedRoot``.
    """
    if not chain:
        raise MalformedEvidence("empty certificate chain")
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime (UTC)")
    if not len(anchors):
        raise UntrustedRoot("no trust anchors configured for this format")

    # RFC 5280 §6.1.1 (d): the path starts at a trust anchor; find where the chain meets one.
    # A copy of a root inside the chain is replaced by the configured anchor (same name and key).
    path: list[x509.Certificate] | None = None
    anchor_candidates: tuple[x509.Certificate, ...] = ()
    for i, cert in enumerate(chain):
        anchor_candidates = anchors.matching(cert)
        if anchor_candidates:
            path = list(chain[:i])
            break
    if path is None:
        last = chain[-1]
        anchor_candidates = anchors.issuers_of(last)
        if not anchor_candidates:
            raise UntrustedRoot(f"no trusted root issued {last.issuer.rfc4514_string()!r}")
        path = list(chain)

    # Several configured anchors may share a name and key (Google re-issued its RSA root):
    # use one that is valid now and, if the chain does not contain it, actually signed the top.
    anchor: x509.Certificate | None = None
    expired: CertificateExpired | None = None
    for candidate in anchor_candidates:
        try:
            _check_validity(candidate, now, "trust anchor")
        except CertificateExpired as e:
            expired = expired or e
            continue
        if path:
            try:
                anchors.verify_edge(path[-1], candidate, cache=len(path) > 1)
            except SignatureInvalid:
                continue
        anchor = candidate
        break
    if anchor is None:
        if expired is not None:
            raise expired
        raise UntrustedRoot("the chain's top certificate is not signed by a trusted root")

    full = (*path, anchor)
    for i, cert in enumerate(path):
        _check_validity(cert, now, "leaf" if i == 0 else "intermediate")
        _check_critical_extensions(cert)
        issuer = full[i + 1]
        _check_issuer_constraints(issuer, below=i)
        if i + 1 < len(path):
            # leaf edges change with every key, so only CA→CA edges are cached
            anchors.verify_edge(cert, issuer, cache=i > 0)
    return full
