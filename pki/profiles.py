"""Certificate profiles as data: what a CSR may ask for, and what the CA puts in the certificate.

In the manner of step-ca's sign options, a profile is a list of *validators* (each refuses one
thing with a typed error) and a list of *extension modifiers* (each contributes one extension).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

from pki.ca import CertificateAuthority
from pki.certpolicy import (
    POLICY_CREDENTIAL_ISSUER,
    POLICY_DEVICE_AUTH,
    POLICY_DOCUMENT_SEAL,
    POLICY_OCSP_SIGNER,
    POLICY_TIMESTAMPING,
    POLICY_TLS_SERVER,
)
from pki.errors import (
    BadRequest,
    ExtensionNotAllowed,
    KeySizeNotAllowed,
    KeyTypeNotAllowed,
    SanNotAllowed,
    SubjectNotAllowed,
)

ID_KP_DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")  # RFC 9336

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
DEVICE_URN_PREFIX = "urn:cityid:device:"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


@dataclass(frozen=True)
class Csr:
    """A parsed CSR with the parts validators read, each decoded once."""

    request: x509.CertificateSigningRequest
    public_key: PublicKey
    subject: x509.Name
    extensions: x509.Extensions
    spki_sha256: str  # hex, for finding certificates by key
    key_id: bytes  # RFC 5280 §4.2.1.2 (1): SHA-1 of the subjectPublicKey bits
    spki: bytes  # DER SubjectPublicKeyInfo, as cryptography encodes it (RFC 5280 §4.1.2.7)

    @classmethod
    def of(cls, request: x509.CertificateSigningRequest) -> Csr:
        public_key = request.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise KeyTypeNotAllowed(f"{type(public_key).__name__} not allowed")
        spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return cls(
            request,
            public_key,
            request.subject,
            request.extensions,
            hashlib.sha256(spki).hexdigest(),
            hashlib.sha1(_subject_public_key_bits(spki)).digest(),  # noqa: S324 (RFC 5280)
            spki,
        )


def _subject_public_key_bits(spki: bytes) -> bytes:
    """The BIT STRING contents of a DER SubjectPublicKeyInfo, without the unused-bits octet."""
    pos = _skip_header(spki, 0)  # SEQUENCE
    pos = _skip_header(spki, pos, whole=True)  # AlgorithmIdentifier
    if spki[pos] != 0x03:
        raise KeyTypeNotAllowed("malformed public key")
    start = _skip_header(spki, pos)
    return spki[start + 1 :]


def _skip_header(der: bytes, pos: int, *, whole: bool = False) -> int:
    """Offset of the contents of the TLV at ``pos`` (or of what follows it, if ``whole``)."""
    first = der[pos + 1]
    if first < 0x80:
        body, length = pos + 2, first
    else:
        n = first & 0x7F
        body, length = pos + 2 + n, int.from_bytes(der[pos + 2 : pos + 2 + n], "big")
    return body + length if whole else body


@dataclass(frozen=True)
class Subject:
    """What the certificate's subject will be, and the label the CA files it under."""

    name: x509.Name
    label: str
    san: tuple[x509.GeneralName, ...]


@dataclass(frozen=True)
class Draft:
    """Everything a modifier may look at while the certificate is being composed."""

    ca: CertificateAuthority
    csr: Csr
    subject: Subject
    shard: int


Validator = Callable[[Csr], None]
SubjectRule = Callable[[Csr, "str | None"], Subject]
Modifier = Callable[[Draft], x509.Extension[x509.ExtensionType]]


@dataclass(frozen=True)
class Profile:
    name: str
    default_validity: dt.timedelta
    max_validity: dt.timedelta
    validators: tuple[Validator, ...]
    subject: SubjectRule
    extensions: tuple[Modifier, ...]
    takes_device_id: bool = False
    internal: bool = False  # only the CA itself issues it (the OCSP signer)


# -- validators ----------------------------------------------------------------------------


def keys(*, curves: tuple[type[ec.EllipticCurve], ...], rsa_bits: tuple[int, ...] = ()) -> Validator:
    def check(csr: Csr) -> None:
        key = csr.public_key
        if isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(key.curve, curves):
                raise KeySizeNotAllowed(f"curve {key.curve.name} not allowed")
            return
        if isinstance(key, rsa.RSAPublicKey) and rsa_bits:
            if key.key_size not in rsa_bits:
                raise KeySizeNotAllowed(f"RSA-{key.key_size} not allowed")
            if key.public_numbers().e != 65537:  # RFC 8017 §3.1 allows any odd e; we pin F4
                raise KeyTypeNotAllowed("RSA public exponent must be 65537")
            return
        raise KeyTypeNotAllowed(f"{type(key).__name__} not allowed")

    return check


def csr_extensions_only(*allowed: ObjectIdentifier) -> Validator:
    """RFC 2986 §4.1 extensionRequest: the CSR may ask only for these extensions."""

    def check(csr: Csr) -> None:
        for ext in csr.extensions:
            if ext.oid not in allowed:
                raise ExtensionNotAllowed(f"extension {ext.oid.dotted_string} not allowed")

    return check


def key_usage_within(**granted: bool) -> Validator:
    """A requested keyUsage (RFC 5280 §4.2.1.3) must not exceed what the profile grants."""

    def check(csr: Csr) -> None:
        try:
            ku = csr.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return
        for bit in (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
        ):
            if getattr(ku, bit) and not granted.get(bit, False):
                raise ExtensionNotAllowed(f"keyUsage {bit} not allowed")

    return check


def extended_key_usage_within(*granted: ObjectIdentifier) -> Validator:
    """A requested extKeyUsage (RFC 5280 §4.2.1.12) must be a subset of the profile's."""

    def check(csr: Csr) -> None:
        try:
            eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return
        for oid in eku:
            if oid not in granted:
                raise ExtensionNotAllowed(f"extKeyUsage {oid.dotted_string} not allowed")

    return check


def _csr_san(csr: Csr) -> list[x509.GeneralName]:
    try:
        return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


# -- subjects ------------------------------------------------------------------------------


def device_subject(csr: Csr, device_id: str | None) -> Subject:
    """No personal data: an empty subject and the device URN as the only SAN (RFC 5280 §4.1.2.6)."""
    if device_id is None or not _DEVICE_ID.match(device_id):
        raise BadRequest("device-auth needs a device id of 8-64 characters [A-Za-z0-9_-]")
    if len(csr.subject) != 0:
        raise SubjectNotAllowed("a device CSR must have an empty subject")
    urn = DEVICE_URN_PREFIX + device_id
    for name in _csr_san(csr):
        if not isinstance(name, x509.UniformResourceIdentifier) or name.value != urn:
            raise SanNotAllowed(f"only {urn} may be asked for")
    return Subject(_EMPTY_NAME, urn, (x509.UniformResourceIdentifier(urn),))


_EMPTY_NAME = x509.Name([])


def named_subject(
    *, allowed: frozenset[ObjectIdentifier], required: frozenset[ObjectIdentifier]
) -> SubjectRule:
    def rule(csr: Csr, device_id: str | None) -> Subject:
        if device_id is not None:
            raise BadRequest("only device-auth takes a device id")
        for attr in csr.subject:
            if attr.oid not in allowed:
                raise SubjectNotAllowed(f"subject attribute {attr.oid.dotted_string} not allowed")
        for oid in required:
            if not csr.subject.get_attributes_for_oid(oid):
                raise SubjectNotAllowed(f"subject attribute {oid.dotted_string} required")
        if any(len(rdn) != 1 for rdn in csr.subject.rdns):
            raise SubjectNotAllowed("multi-valued RDNs not allowed")
        if _csr_san(csr):
            raise SanNotAllowed("this profile takes no subject alternative names")
        return Subject(csr.subject, csr.subject.rfc4514_string(), ())

    return rule


def dns_subject(csr: Csr, device_id: str | None) -> Subject:
    """TLS server: dNSName SANs only (RFC 6125 §6.4.4), the CN (if any) one of them."""
    if device_id is not None:
        raise BadRequest("only device-auth takes a device id")
    names = _csr_san(csr)
    if not names:
        raise SanNotAllowed("a TLS server certificate needs at least one dNSName")
    dns: list[str] = []
    for name in names:
        if not isinstance(name, x509.DNSName):
            raise SanNotAllowed(f"{type(name).__name__} not allowed; only dNSName")
        if not _is_hostname(name.value):
            raise SanNotAllowed(f"not a host name: {name.value!r}")
        dns.append(name.value)
    for attr in csr.subject:
        if attr.oid not in _TLS_SUBJECT:
            raise SubjectNotAllowed(f"subject attribute {attr.oid.dotted_string} not allowed")
    for cn in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if cn.value not in dns:  # CA/B BR §7.1.4.3: a CN repeats a SAN
            raise SubjectNotAllowed("the common name must be one of the dNSNames")
    return Subject(csr.subject, ",".join(dns), tuple(x509.DNSName(d) for d in dict.fromkeys(dns)))


_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TLS_SUBJECT = frozenset(
    {NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.LOCALITY_NAME, NameOID.COUNTRY_NAME}
)


def _is_hostname(value: str) -> bool:
    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2:
        return False
    if labels[0] == "*":  # one left-most wildcard label, RFC 6125 §6.4.3
        labels = labels[1:]
    return all(_HOST_LABEL.match(label) for label in labels)


# -- extension modifiers -------------------------------------------------------------------


def _ext(value: x509.ExtensionType, critical: bool) -> x509.Extension[x509.ExtensionType]:
    return x509.Extension(value.oid, critical, value)


def encoded(ext: x509.Extension[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    """``ext`` with its value as ready DER (RFC 5280 §4.1: extnValue), for extensions shared by
    many certificates: cryptography re-encodes a typed value for every certificate it signs,
    but copies an ``UnrecognizedExtension``'s bytes. The certificate is byte-identical
    (``tests/pki/test_issuance.py``)."""
    der = ext.value.public_bytes()
    return x509.Extension(ext.oid, ext.critical, x509.UnrecognizedExtension(ext.oid, der))


def constant(value: x509.ExtensionType, *, critical: bool) -> Modifier:
    ext = encoded(_ext(value, critical))
    return lambda _draft: ext


def end_entity() -> Modifier:
    # RFC 5280 §4.2.1.9: cA FALSE; MAY be critical in end-entity certificates
    return constant(x509.BasicConstraints(ca=False, path_length=None), critical=True)


def key_usage(**bits: bool) -> Modifier:
    flags = {
        "digital_signature": False,
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "key_cert_sign": False,
        "crl_sign": False,
        "encipher_only": False,
        "decipher_only": False,
    }
    flags.update(bits)
    # RFC 5280 §4.2.1.3: conforming CAs SHOULD mark this extension as critical
    return constant(x509.KeyUsage(**flags), critical=True)


def extended_key_usage(*oids: ObjectIdentifier, critical: bool = False) -> Modifier:
    return constant(x509.ExtendedKeyUsage(list(oids)), critical=critical)


def policy(name: str) -> Modifier:
    """certificatePolicies with the one OID ``name`` under the CA's configured policy arc."""

    def modify(draft: Draft) -> x509.Extension[x509.ExtensionType]:
        # RFC 5280 §4.2.1.4; a plain OID, no qualifiers (§4.2.1.4 RECOMMENDS none)
        return draft.ca.policy_extension(name)

    return modify


def subject_key_identifier(draft: Draft) -> x509.Extension[x509.ExtensionType]:
    # RFC 5280 §4.2.1.2: SHOULD be included in end-entity certificates; method (1), SHA-1 of
    # the subjectPublicKey BIT STRING
    return _ext(x509.SubjectKeyIdentifier(draft.csr.key_id), False)


def authority_key_identifier(draft: Draft) -> x509.Extension[x509.ExtensionType]:
    # RFC 5280 §4.2.1.1: MUST be included, MUST NOT be critical
    return draft.ca.authority_key_identifier()


def authority_info_access(*, ocsp: bool) -> Modifier:
    # RFC 5280 §4.2.2.1: caIssuers (DER certificate over HTTP) and the OCSP responder
    return lambda draft: draft.ca.authority_info_access(ocsp=ocsp)


def crl_distribution_point(draft: Draft) -> x509.Extension[x509.ExtensionType]:
    # RFC 5280 §4.2.1.13: the shard CRL that will list this certificate (SHOULD be non-critical)
    return draft.ca.crl_distribution_point(draft.shard)


def subject_alt_name(draft: Draft) -> x509.Extension[x509.ExtensionType]:
    # RFC 5280 §4.2.1.6: critical when the subject is empty
    return _ext(x509.SubjectAlternativeName(list(draft.subject.san)), len(draft.subject.name) == 0)


def ocsp_no_check(_draft: Draft) -> x509.Extension[x509.ExtensionType]:
    # RFC 6960 §4.2.2.2.1: the responder's certificate is not itself checked
    return _ext(x509.OCSPNoCheck(), False)


# -- the profiles --------------------------------------------------------------------------

DAY = dt.timedelta(days=1)
SAN = ExtensionOID.SUBJECT_ALTERNATIVE_NAME
KU = ExtensionOID.KEY_USAGE
EKU = ExtensionOID.EXTENDED_KEY_USAGE
_COMMON_TAIL: tuple[Modifier, ...] = (subject_key_identifier, authority_key_identifier)

# RFC 5280 §4.2.1.12: clientAuth for PKI-2FA and mTLS; emailProtection because PDF validators
# built on NSS (Poppler's pdfsig) check a signer under the S/MIME signer usage and refuse a
# certificate whose extKeyUsage lacks it; id-kp-documentSigning (RFC 9336 §3) names the use
DEVICE_EKUS = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION, ID_KP_DOCUMENT_SIGNING)

DEVICE_AUTH = Profile(
    name="device-auth",
    default_validity=90 * DAY,
    max_validity=365 * DAY,
    takes_device_id=True,
    validators=(
        keys(curves=(ec.SECP256R1,)),
        csr_extensions_only(SAN, KU, EKU),
        key_usage_within(digital_signature=True, content_commitment=True),
        extended_key_usage_within(*DEVICE_EKUS),
    ),
    subject=device_subject,
    extensions=(
        end_entity(),
        # one certificate for login and signature (docs/pki.md, "Device certificates sign"):
        # RFC 5280 §4.2.1.3 contentCommitment for the citizen's PAdES signature
        key_usage(digital_signature=True, content_commitment=True),
        extended_key_usage(*DEVICE_EKUS),
        subject_alt_name,
        policy(POLICY_DEVICE_AUTH),
        authority_info_access(ocsp=True),
        crl_distribution_point,
        *_COMMON_TAIL,
    ),
)

OCSP_SIGNER = Profile(
    name="ocsp-signer",
    internal=True,
    default_validity=30 * DAY,
    max_validity=90 * DAY,
    validators=(
        keys(curves=(ec.SECP256R1,)),
        csr_extensions_only(),
    ),
    subject=named_subject(
        allowed=frozenset({NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.COUNTRY_NAME}),
        required=frozenset({NameOID.COMMON_NAME}),
    ),
    extensions=(
        end_entity(),
        key_usage(digital_signature=True),
        # RFC 6960 §4.2.2.2: a delegated responder carries id-kp-OCSPSigning
        extended_key_usage(ExtendedKeyUsageOID.OCSP_SIGNING),
        ocsp_no_check,
        policy(POLICY_OCSP_SIGNER),
        authority_info_access(ocsp=False),
        *_COMMON_TAIL,
    ),
)

TLS_SERVER = Profile(
    name="tls-server",
    default_validity=90 * DAY,
    max_validity=397 * DAY,
    validators=(
        keys(curves=(ec.SECP256R1, ec.SECP384R1), rsa_bits=(2048, 3072, 4096)),
        csr_extensions_only(SAN, KU, EKU),
        key_usage_within(digital_signature=True),
        extended_key_usage_within(ExtendedKeyUsageOID.SERVER_AUTH),
    ),
    subject=dns_subject,
    extensions=(
        end_entity(),
        key_usage(digital_signature=True),
        extended_key_usage(ExtendedKeyUsageOID.SERVER_AUTH),
        subject_alt_name,
        policy(POLICY_TLS_SERVER),
        authority_info_access(ocsp=True),
        crl_distribution_point,
        *_COMMON_TAIL,
    ),
)

DOCUMENT_SEAL = Profile(
    name="document-seal",
    default_validity=730 * DAY,
    max_validity=1095 * DAY,
    validators=(
        keys(curves=(ec.SECP256R1, ec.SECP384R1), rsa_bits=(3072, 4096)),
        csr_extensions_only(KU, EKU),
        key_usage_within(digital_signature=True, content_commitment=True),
        extended_key_usage_within(ID_KP_DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION),
    ),
    subject=named_subject(
        allowed=frozenset(
            {
                NameOID.COMMON_NAME,
                NameOID.ORGANIZATION_NAME,
                NameOID.ORGANIZATIONAL_UNIT_NAME,
                NameOID.ORGANIZATION_IDENTIFIER,
                NameOID.LOCALITY_NAME,
                NameOID.COUNTRY_NAME,
            }
        ),
        required=frozenset({NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME}),
    ),
    extensions=(
        end_entity(),
        key_usage(digital_signature=True, content_commitment=True),
        # RFC 9336 documentSigning, and emailProtection because NSS — which Poppler's pdfsig,
        # LibreOffice and Firefox's PDF viewer validate PDF signatures with — checks a PDF
        # signer's certificate for certificateUsageEmailSigner and refuses an extKeyUsage
        # without emailProtection ("Certificate type not approved"); see docs/pki.md
        extended_key_usage(ID_KP_DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION),
        policy(POLICY_DOCUMENT_SEAL),
        authority_info_access(ocsp=True),
        crl_distribution_point,
        *_COMMON_TAIL,
    ),
)

TIMESTAMPING = Profile(
    name="timestamping",
    internal=True,  # only the CA issues it, to its own TSA key (pki/tsa.py)
    default_validity=365 * DAY,
    max_validity=1095 * DAY,
    validators=(
        keys(curves=(ec.SECP256R1,)),
        csr_extensions_only(),
    ),
    subject=named_subject(
        allowed=frozenset({NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.COUNTRY_NAME}),
        required=frozenset({NameOID.COMMON_NAME}),
    ),
    extensions=(
        end_entity(),
        key_usage(digital_signature=True),
        # RFC 3161 §2.3: exactly one extKeyUsage, id-kp-timeStamping only, critical
        extended_key_usage(ExtendedKeyUsageOID.TIME_STAMPING, critical=True),
        policy(POLICY_TIMESTAMPING),
        authority_info_access(ocsp=True),
        crl_distribution_point,
        *_COMMON_TAIL,
    ),
)

CREDENTIAL_ISSUER = Profile(
    name="credential-issuer",
    internal=True,  # only the CA issues it, to its own credential issuer key (pki/credential_issuer.py)
    default_validity=730 * DAY,
    max_validity=1095 * DAY,
    validators=(
        keys(curves=(ec.SECP256R1,)),  # ES256 (HAIP 1.0)
        csr_extensions_only(),
    ),
    subject=named_subject(
        allowed=frozenset({NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.COUNTRY_NAME}),
        required=frozenset({NameOID.COMMON_NAME}),
    ),
    extensions=(
        end_entity(),
        # SD-JWT VC §3.5 (x5c): the key signs credentials and status lists, nothing else
        key_usage(digital_signature=True),
        policy(POLICY_CREDENTIAL_ISSUER),
        authority_info_access(ocsp=True),
        crl_distribution_point,
        *_COMMON_TAIL,
    ),
)

PROFILES: Mapping[str, Profile] = {
    p.name: p for p in (DEVICE_AUTH, OCSP_SIGNER, TLS_SERVER, DOCUMENT_SEAL, TIMESTAMPING, CREDENTIAL_ISSUER)
}
