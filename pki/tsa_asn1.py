"""RFC 3161 and RFC 5652 structures for the TSA's hot path, in cryptography's declarative ASN.1
(``cryptography.hazmat.asn1``: Rust encoder and strict DER decoder, ~1 µs a structure).

asn1crypto builds a token in ~1 ms, most of it re-encoding values it was given as Python data;
here every value is encoded once, by the library. Constant parts (the signer identifier, the
ESS signing-certificate-v2 attribute, the TSA's name, its certificate) are built once by
asn1crypto in ``pki.tsa`` and carried as ``TLV`` values. ``tests/pki/test_tsa.py`` checks the
tokens with openssl and against asn1crypto's decoding.
"""

from __future__ import annotations

from typing import Annotated

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat import asn1

ObjectIdentifier = x509.ObjectIdentifier

ID_CONTENT_TYPE = ObjectIdentifier("1.2.840.113549.1.9.3")  # RFC 5652 §11.1
ID_MESSAGE_DIGEST = ObjectIdentifier("1.2.840.113549.1.9.4")  # RFC 5652 §11.2
ID_CT_TST_INFO = ObjectIdentifier("1.2.840.113549.1.9.16.1.4")  # RFC 3161 §2.4.2
ID_SIGNED_DATA = ObjectIdentifier("1.2.840.113549.1.7.2")  # RFC 5652 §5.1
ID_SHA256 = ObjectIdentifier("2.16.840.1.101.3.4.2.1")
ECDSA_WITH_SHA256 = ObjectIdentifier("1.2.840.10045.4.3.2")  # RFC 5758 §3.2

# -- what a request carries (RFC 3161 §2.4.1), decoded strictly -----------------------------------


@asn1.sequence
class AlgorithmIdentifierView:
    algorithm: ObjectIdentifier
    parameters: asn1.Null | None  # hash algorithms: absent or NULL (RFC 5754 §2)


@asn1.sequence
class MessageImprintView:
    hash_algorithm: AlgorithmIdentifierView
    hashed_message: bytes


@asn1.sequence
class TimeStampReqView:
    version: int
    message_imprint: asn1.TLV  # kept as sent: the token carries the same (§2.4.2)
    req_policy: ObjectIdentifier | None
    nonce: int | None
    cert_req: Annotated[bool, asn1.Default(False)]
    extensions: Annotated[list[asn1.TLV] | None, asn1.Implicit(0)]


# -- what a token is (RFC 3161 §2.4.2, RFC 5652 §5) ------------------------------------------------


@asn1.sequence
class AlgorithmIdentifier:
    algorithm: ObjectIdentifier  # no parameters: SHA-2 (RFC 5754 §2), ECDSA (RFC 5758 §3.2)


@asn1.sequence
class Accuracy:
    seconds: int


@asn1.sequence
class TSTInfo:
    version: int
    policy: ObjectIdentifier
    message_imprint: asn1.TLV
    serial_number: int
    gen_time: asn1.GeneralizedTime
    accuracy: Accuracy
    nonce: int | None
    tsa: Annotated[asn1.TLV, asn1.Explicit(0)]


@asn1.sequence
class Attribute:
    attr_type: ObjectIdentifier
    attr_values: asn1.SetOf[bytes | ObjectIdentifier]


@asn1.sequence
class SignedAttributesHolder:
    attrs: asn1.SetOf[Attribute | asn1.TLV]


@asn1.sequence
class EncapsulatedContentInfo:
    content_type: ObjectIdentifier
    content: Annotated[bytes, asn1.Explicit(0)]


@asn1.sequence
class SignerInfo:
    version: int
    sid: asn1.TLV  # IssuerAndSerialNumber, built once
    digest_algorithm: AlgorithmIdentifier
    signed_attrs: Annotated[asn1.SetOf[Attribute | asn1.TLV], asn1.Implicit(0)]
    signature_algorithm: AlgorithmIdentifier
    signature: bytes


@asn1.sequence
class SignedData:
    version: int
    digest_algorithms: asn1.SetOf[AlgorithmIdentifier]
    encap_content_info: EncapsulatedContentInfo
    certificates: Annotated[asn1.SetOf[asn1.TLV] | None, asn1.Implicit(0)]
    signer_infos: asn1.SetOf[SignerInfo]


@asn1.sequence
class ContentInfo:
    content_type: ObjectIdentifier
    content: Annotated[SignedData, asn1.Explicit(0)]


@asn1.sequence
class PKIStatusInfo:
    status: int  # granted(0): no statusString, no failInfo


@asn1.sequence
class TimeStampResp:
    status: PKIStatusInfo
    time_stamp_token: ContentInfo


# -- carrying DER made elsewhere ---------------------------------------------------------------


class _AnyList(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.Any


@asn1.sequence
class _One:
    value: asn1.TLV


def tlv(der: bytes) -> asn1.TLV:
    """``der`` (one complete DER value) as a TLV that the encoder copies as is. Made once per
    constant: asn1crypto puts it in a SEQUENCE, cryptography reads it back out."""
    value: asn1.TLV = asn1.decode_der(_One, _AnyList([core.Any.load(der)]).dump()).value
    return value


def set_of_der(attrs: asn1.SetOf[Attribute | asn1.TLV]) -> bytes:
    """The DER of a SET OF on its own (RFC 5652 §5.4: the signature covers the signed attributes
    encoded as a SET OF, not with the [0] tag they have in the SignerInfo)."""
    holder = asn1.encode_der(SignedAttributesHolder(attrs=attrs))
    return asn1.encode_der(asn1.decode_der(_One, holder).value)
