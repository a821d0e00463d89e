"""X.509 path checks that fido2's ``verify_x509_chain`` leaves undone.

``validate_path`` takes a chain leaf first (with or without the root at its end) and a set of
trust anchors, and checks, at a given instant, every rule of RFC 5280 §6.1 that attestation
chains need: names chain, signatures verify, every certificate and the anchor are inside their
validity period, every issuer is a CA (basicConstraints), pathLenConstraint holds, keyUsage
allows certificate signing, no unknown critical extension. Pure: certificates in, path out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
_CACHE_MAX = 4096


def spki(cert: x509.Certificate) -> bytes:
    """The certificate's SubjectPublicKeyInfo, DER."""
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True, slots=True, eq=False)
class ParsedCert:
    """A certificate with every field the path checks read, parsed once."""

    cert: x509.Certificate
    der: bytes
    subject: bytes  # Name DER
    issuer: bytes  # Name DER
    key: bytes  # SubjectPublicKeyInfo DER
    not_before: datetime
    not_after: datetime
    ca: bool  # basicConstraints cA
    path_length: int | None
    key_cert_sign: bool | None  # None: no keyUsage extension
    extension_oids: frozenset[str]
    unknown_critical: str | None  # dotted OID of an unrecognised critical extension


def parse_cert(der: object, index: int = 0) -> ParsedCert:
    """Parse one DER certificate completely; anything malformed is ``MalformedEvidence``."""
    if not isinstance(der, bytes | bytearray):
        raise MalformedEvidence(f"certificate {index} is not a byte string")
    der = bytes(der)
    try:
        # cryptography parses lazily: read every field now, so that a malformed one fails
        # here as MalformedEvidence rather than later as ValueError
        cert = x509.load_der_x509_certificate(der)
        extensions = cert.extensions
        bc = ku = None
        unknown = None
        for ext in extensions:
            if isinstance(ext.value, x509.BasicConstraints):
                bc = ext.value
            elif isinstance(ext.value, x509.KeyUsage):
                ku = ext.value
            if ext.critical and ext.oid not in _KNOWN_CRITICAL and unknown is None:
                unknown = ext.oid.dotted_string
        parsed = ParsedCert(
            cert=cert,
            der=der,
            subject=cert.subject.public_bytes(),
            issuer=cert.issuer.public_bytes(),
            key=spki(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            ca=bool(bc is not None and bc.ca),
            path_length=bc.path_length if bc is not None else None,
            key_cert_sign=ku.key_cert_sign if ku is not None else None,
            extension_oids=frozenset(e.oid.dotted_string for e in extensions),
            unknown_critical=unknown,
        )
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as e:
        raise MalformedEvidence(f"certificate {index} is not valid X.509: {e}") from None
    return parsed


def load_der_chain(ders: Sequence[object]) -> list[x509.Certificate]:
    """Parse DER certificates; anything unparsable is ``MalformedEvidence``."""
    if not ders:
        raise MalformedEvidence("empty certificate chain")
    return [parse_cert(der, i).cert for i, der in enumerate(ders)]


class AnchorSet:
    """Trust anchors indexed for path building, with two bounded caches for warm use.

    Immutable in what it trusts. The caches hold parsed intermediate certificates (keyed by
    their DER) and the fact that an issuer's signature over a CA certificate verified (keyed by
    both DER encodings), so warm verifications skip re-parsing and re-checking the same
    intermediates. Validity and constraints are still checked on every call.
    """

    __slots__ = ("_by_subject", "_edges", "_parsed", "certs")

    def __init__(self, certs: Iterable[x509.Certificate]) -> None:
        self.certs: tuple[x509.Certificate, ...] = tuple(certs)
        by_subject: dict[bytes, list[ParsedCert]] = {}
        for c in self.certs:
            parsed = parse_cert(c.public_bytes(Encoding.DER))
            by_subject.setdefault(parsed.subject, []).append(parsed)
        self._by_subject = {k: tuple(v) for k, v in by_subject.items()}
        self._edges: dict[tuple[bytes, bytes], bool] = {}
        self._parsed: dict[bytes, ParsedCert] = {}

    def __len__(self) -> int:
        return len(self.certs)

    def parse(self, der: object, index: int) -> ParsedCert:
        """Parse a chain element; intermediates (index > 0) are cached by their DER."""
        if index > 0 and isinstance(der, bytes):
            hit = self._parsed.get(der)
            if hit is not None:
                return hit
        parsed = parse_cert(der, index)
        if index > 0:
            if len(self._parsed) >= _CACHE_MAX:
                self._parsed.clear()
            self._parsed[parsed.der] = parsed
        return parsed

    def matching(self, cert: ParsedCert) -> tuple[ParsedCert, ...]:
        """Anchors that *are* ``cert`` (same subject and key), e.g. a root copy in the chain."""
        return tuple(a for a in self._by_subject.get(cert.subject, ()) if a.key == cert.key)

    def issuers_of(self, cert: ParsedCert) -> tuple[ParsedCert, ...]:
        return self._by_subject.get(cert.issuer, ())

    def verify_edge(self, child: ParsedCert, issuer: ParsedCert, cache: bool) -> None:
        key = (child.der, issuer.der)
        if cache and self._edges.get(key):
            return
        _verify_signature(child.cert, issuer.cert)
        if cache:
            if len(self._edges) >= _CACHE_MAX:
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


def _check_validity(cert: ParsedCert, now: datetime, role: str) -> None:
    # RFC 5280 §6.1.3 (a)(2): the certificate validity period includes the current time
    if not cert.not_before <= now <= cert.not_after:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        raise CertificateExpired(
            f"{role} {cert.cert.subject.rfc4514_string()!r} valid "
            f"{cert.not_before:{fmt}}..{cert.not_after:{fmt}}, not at {now:{fmt}}"
        )


def _check_issuer_constraints(issuer: ParsedCert, below: int) -> None:
    """``below``: number of intermediate CA certificates between this issuer and the leaf."""
    name = issuer.cert.subject.rfc4514_string()
    # RFC 5280 §6.1.4 (k): an issuer must be a CA (basicConstraints cA TRUE)
    if not issuer.ca:
        raise ChainInvalid(f"issuer {name!r} is not a CA (basicConstraints)")
    # RFC 5280 §6.1.4 (l)/(m): pathLenConstraint bounds the intermediates below it
    if issuer.path_length is not None and below > issuer.path_length:
        raise ChainInvalid(f"issuer {name!r} pathLen {issuer.path_length} < {below} intermediates")
    # RFC 5280 §6.1.4 (n): if keyUsage is present, keyCertSign must be set
    if issuer.key_cert_sign is False:
        raise ChainInvalid(f"issuer {name!r} keyUsage lacks keyCertSign")


@dataclass(frozen=True, slots=True)
class ValidPath:
    """A validated path: the chain as presented and the path used (leaf → anchor)."""

    chain: tuple[ParsedCert, ...]
    path: tuple[ParsedCert, ...]

    @property
    def leaf(self) -> ParsedCert:
        return self.chain[0]

    @property
    def path_der(self) -> tuple[bytes, ...]:
        return tuple(p.der for p in self.path)


def validate_path(chain_der: Sequence[object], anchors: AnchorSet, now: datetime) -> ValidPath:
    """Validate a DER chain (leaf first) up to one of ``anchors`` at ``now``.

    The path used is the chain's certificates up to (excluding) the first one that is a trust
    anchor, followed by that configured anchor. A chain that reaches no anchor raises
    ``UntrustedRoot``.
    """
    if not chain_der:
        raise MalformedEvidence("empty certificate chain")
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime (UTC)")
    chain = tuple(anchors.parse(der, i) for i, der in enumerate(chain_der))
    if not len(anchors):
        raise UntrustedRoot("no trust anchors configured for this format")

    # RFC 5280 §6.1.1 (d): the path starts at a trust anchor; find where the chain meets one.
    # A copy of a root inside the chain is replaced by the configured anchor (same name and key).
    path: list[ParsedCert] | None = None
    candidates: tuple[ParsedCert, ...] = ()
    for i, cert in enumerate(chain):
        candidates = anchors.matching(cert)
        if candidates:
            path = list(chain[:i])
            break
    if path is None:
        candidates = anchors.issuers_of(chain[-1])
        if not candidates:
            raise UntrustedRoot(f"no trusted root issued {chain[-1].cert.issuer.rfc4514_string()!r}")
        path = list(chain)

    # Several configured anchors may share a name and key (Google re-issued its RSA root):
    # use one that is valid now and, if the chain does not contain it, actually signed the top.
    anchor: ParsedCert | None = None
    expired: CertificateExpired | None = None
    for candidate in candidates:
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
        # RFC 5280 §4.2: a certificate with an unrecognised critical extension MUST be rejected
        if cert.unknown_critical is not None:
            raise ChainInvalid(f"unknown critical extension {cert.unknown_critical}")
        issuer = full[i + 1]
        _check_issuer_constraints(issuer, below=i)
        if i + 1 < len(path):
            # leaf edges change with every key, so only CA→CA edges are cached
            anchors.verify_edge(cert, issuer, cache=i > 0)
    return ValidPath(chain=chain, path=full)
