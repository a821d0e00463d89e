"""Certificates of a batch assembled from parts cryptography encodes, signed in the key store.

``CertificateBuilder.sign`` re-encodes every field and extension from Python objects for each
certificate: ~130 µs per device certificate here, of which the ECDSA signature is ~55 µs. The
issuance target (3,000 certificates/s on one core, CSR signature checks included) leaves no room
for that. So ``issue_batch`` lets cryptography encode every *value* (names, the CSR's public key,
each extension's extnValue; the constant ones once per batch) and only the frame is written here:
the ``TBSCertificate`` SEQUENCE (RFC 5280 §4.1), version, serial, validity, the ``Extension``
wrappers, and the outer ``Certificate`` with its signature. The signer is the key store's
(``Signer.sign``), so a PKCS#11 key signs exactly as before.

Guard rails: ``tests/pki/test_issuance.py`` proves the result byte-identical to cryptography's
for every profile; and ``issue_batch`` has cryptography build the first certificate of each
profile in every batch and compares its ``tbsCertificate`` with this module's, byte for byte,
using the library for the whole batch on any difference.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pki.crl_der import encode_time, tlv
from pki.keystore import Signer

_VERSION_3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2 (RFC 5280 §4.1.2.1)
# RFC 5758 §3.2: ecdsa-with-SHA256, parameters absent (the issuing CA's key is P-256)
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
_SIGNATURE = ec.ECDSA(hashes.SHA256())
_CRITICAL = b"\x01\x01\xff"  # BOOLEAN TRUE; FALSE is the DEFAULT and therefore absent (X.690 §11.5)


def encode_oid(oid: x509.ObjectIdentifier) -> bytes:
    """OBJECT IDENTIFIER (X.690 §8.19): first two arcs as 40*a+b, then base-128 groups."""
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        group = [arc & 0x7F]
        arc >>= 7
        while arc:
            group.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(group))
    return tlv(0x06, bytes(out))


def encode_serial(serial: int) -> bytes:
    """INTEGER, minimal two's complement, positive (RFC 5280 §4.1.2.2, X.690 §8.3.2)."""
    return tlv(0x02, serial.to_bytes(serial.bit_length() // 8 + 1, "big"))


class Assembler:
    """One batch's certificates: the issuer's name and the shared extensions encoded once."""

    def __init__(self, issuer: x509.Certificate, signer: Signer) -> None:
        self._issuer = issuer.subject.public_bytes()
        self._signer = signer
        self._extensions: dict[int, tuple[x509.Extension[x509.ExtensionType], bytes]] = {}
        self._validity: dict[tuple[dt.datetime, dt.datetime], bytes] = {}
        self._oids: dict[x509.ObjectIdentifier, bytes] = {}

    def tbs(
        self,
        *,
        serial: int,
        not_before: dt.datetime,
        not_after: dt.datetime,
        subject: x509.Name,
        spki: bytes,
        extensions: Sequence[x509.Extension[x509.ExtensionType]],
    ) -> bytes:
        """The DER ``TBSCertificate`` (RFC 5280 §4.1): what cryptography's builder would sign."""
        validity = self._validity.get((not_before, not_after))
        if validity is None:
            # RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050, whole seconds
            validity = tlv(0x30, encode_time(not_before) + encode_time(not_after))
            self._validity[(not_before, not_after)] = validity
        subject_der = subject.public_bytes() if len(subject) else b"\x30\x00"
        encoded = b"".join([self._extension(e) for e in extensions])
        # RFC 5280 §4.1: Extensions ::= SEQUENCE SIZE (1..MAX); none at all: the field is absent
        extensions_der = tlv(0xA3, tlv(0x30, encoded)) if encoded else b""
        body = b"".join(
            (
                _VERSION_3,
                encode_serial(serial),
                _ECDSA_SHA256,
                self._issuer,
                validity,
                subject_der,
                spki,
                extensions_der,
            )
        )
        return tlv(0x30, body)

    def certificate(self, tbs: bytes) -> bytes:
        """Sign ``tbs`` (RFC 5280 §4.1.1.3: signatureValue over the DER tbsCertificate)."""
        signature = self._signer.sign(tbs, _SIGNATURE)
        return tlv(0x30, tbs + _ECDSA_SHA256 + tlv(0x03, b"\x00" + signature))

    def _extension(self, ext: x509.Extension[x509.ExtensionType]) -> bytes:
        # Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
        hit = self._extensions.get(id(ext))
        if hit is not None and hit[0] is ext:
            return hit[1]
        oid = self._oids.get(ext.oid)
        if oid is None:
            oid = self._oids[ext.oid] = encode_oid(ext.oid)
        value = ext.value
        der = tlv(0x30, oid + (_CRITICAL if ext.critical else b"") + tlv(0x04, value.public_bytes()))
        if type(value) is x509.UnrecognizedExtension:  # the profiles' shared, pre-encoded ones
            self._extensions[id(ext)] = (ext, der)  # holds ext: its id is not reused meanwhile
        return der
