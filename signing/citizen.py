"""A citizen's PAdES signature made with the device key, in two halves (interrupted signing).

``inspect`` reads what the device will show (title, page count, SHA-256 of the document) and
refuses what cannot be signed. ``prepare`` reserves the signature in an incremental update and
computes the CMS signed attributes for the device's certificate (ETSI EN 319 142-1 §5.3 / 6.3:
content-type, message-digest, signing-certificate-v2; no signing-time, the PDF's ``/M`` says it);
the device signs SHA-256 over their DER (RFC 5652 §5.4). ``finish`` checks that signature
against the certificate, builds the CMS with it (pyHanko ``ExternalSigner``), adds the signature
time-stamp (B-T) and, for B-LT, the chain and revocation data in the DSS.

Nothing here sees a private key; no Flask, no database.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass

from asn1crypto import algos, cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

MAX_BYTES = 20 * 1024 * 1024  # issue 13: default 20 MiB
MAX_TITLE = 200
# the CMS goes hex-encoded into /Contents: 3 certificates, a time-stamp token with its chain
RESERVED = 32_768
LEVELS = ("B-B", "B-T", "B-LT")


class DocumentError(Exception):
    """A document that cannot be signed; ``code`` is the client-facing error code."""

    code = "invalid_document"
    status = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class DocumentTooLarge(DocumentError):
    code = "document_too_large"
    status = 413


class SignatureInvalid(Exception):
    """The device's signature does not verify over the signed attributes."""


@dataclass(frozen=True)
class DocumentFacts:
    """What the device shows: what you see is what you sign."""

    title: str
    pages: int
    sha256: str  # hex, of the whole document as the service sent it
    size: int


@dataclass(frozen=True)
class Prepared:
    """The state between the halves; all of it plain bytes, kept in the database."""

    pdf: bytes  # the document with the signature dictionary and a zero-filled /Contents
    reserved_start: int
    reserved_end: int
    document_digest: bytes  # SHA-256 over the /ByteRange
    signed_attrs: bytes  # DER SET OF Attribute (RFC 5652 §5.4: what the signature covers)

    @property
    def to_be_signed(self) -> bytes:
        """SHA-256 of the DER signed attributes: the digest the device signs (ECDSA)."""
        return hashlib.sha256(self.signed_attrs).digest()


def inspect(data: bytes, *, max_bytes: int = MAX_BYTES) -> DocumentFacts:
    """Read a PDF the way it will be signed; refuse what cannot be (typed :class:`DocumentError`)."""
    if not data:
        raise DocumentError("the document is empty (0 bytes)")
    if len(data) > max_bytes:
        raise DocumentTooLarge(f"the document is larger than {max_bytes} bytes")
    if not data.lstrip()[:5] == b"%PDF-":  # ISO 32000-1 §7.5.2: the file header
        raise DocumentError("the document is not a PDF")
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=True)
        if reader.encrypted:
            raise DocumentError("the document is encrypted; send it unencrypted")
        pages = int(reader.root["/Pages"]["/Count"])
        title = _title(reader)
        # an incremental update on top must be possible: the xref has to be readable in full
        IncrementalPdfFileWriter(io.BytesIO(data), strict=True)
    except DocumentError:
        raise
    except Exception as exc:  # hostile input: pyHanko's parser raises PdfError,
        # but on some malformed files also AssertionError, KeyError, TypeError … (a broken xref
        # offset raises AssertionError): any of them means "cannot be read", never a 500
        raise DocumentError(f"the PDF cannot be read ({type(exc).__name__}): broken structure") from exc
    if pages < 1:
        raise DocumentError("the PDF has no pages")
    return DocumentFacts(title, pages, hashlib.sha256(data).hexdigest(), len(data))


def _title(reader: PdfFileReader) -> str:
    title = reader.document_meta_view.title or ""
    # control characters would let a title fake a second line on the device's screen
    cleaned = "".join(ch if ch.isprintable() else " " for ch in title).strip()
    return cleaned[:MAX_TITLE]


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


def _signer(
    cert: x509.Certificate, chain: list[x509.Certificate], signature: bytes | int
) -> signers.ExternalSigner:
    return signers.ExternalSigner(
        signing_cert=_asn1(cert),
        cert_registry=SimpleCertificateStore.from_certs([_asn1(c) for c in chain]),
        signature_value=signature,
        # RFC 5758 §3.2: ecdsa-with-SHA256 (device keys are P-256, pki.profiles DEVICE_AUTH)
        signature_mechanism=algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
    )


def signer_name(certificate: x509.Certificate) -> str:
    """The /Name of the signature (ISO 32000-1 §12.8.1): a device certificate carries no
    personal data, only its device URN (pki.profiles.device_subject); cityid links that device to
    the citizen's account, and the service knows the citizen from the login."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return uris[0] if uris else certificate.subject.rfc4514_string()


def _meta(field_name: str, reason: str | None, name: str) -> signers.PdfSignatureMetadata:
    return signers.PdfSignatureMetadata(
        field_name=field_name,
        name=name,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,  # ETSI EN 319 142-1 §5.3: ETSI.CAdES.detached
        reason=reason,
    )


def prepare(
    data: bytes,
    *,
    certificate: x509.Certificate,
    chain: list[x509.Certificate],
    field_name: str,
    reason: str | None = None,
) -> Prepared:
    """First half: placeholder and signed attributes for ``certificate`` (the device's)."""
    return asyncio.run(_prepare(data, certificate, chain, field_name, reason))


async def _prepare(
    data: bytes,
    certificate: x509.Certificate,
    chain: list[x509.Certificate],
    field_name: str,
    reason: str | None,
) -> Prepared:
    signer = _signer(certificate, chain, 72)  # an ECDSA P-256 DER signature is at most 72 bytes
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=True)
    pdf_signer = signers.PdfSigner(_meta(field_name, reason, signer_name(certificate)), signer=signer)
    digest, _tbs, output = await pdf_signer.async_digest_doc_for_signing(writer, bytes_reserved=RESERVED)
    attrs = await signer.signed_attrs(digest.document_digest, "sha256", use_pades=True)
    output.seek(0)
    return Prepared(
        pdf=output.read(),
        reserved_start=digest.reserved_region_start,
        reserved_end=digest.reserved_region_end,
        document_digest=digest.document_digest,
        signed_attrs=attrs.dump(),
    )


def check_device_signature(prepared: Prepared, certificate: x509.Certificate, signature: bytes) -> None:
    """RFC 5652 §5.4 / §5.6: the signature is over the DER of the signed attributes, by the key of
    the certificate they name. Raises :class:`SignatureInvalid`."""
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureInvalid("the certificate's key is not an EC key")
    try:
        key.verify(signature, prepared.signed_attrs, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureInvalid("the signature does not verify over the signed attributes") from exc


def finish(
    prepared: Prepared,
    *,
    certificate: x509.Certificate,
    chain: list[x509.Certificate],
    signature: bytes,
    level: str = "B-LT",
    timestamper: TimeStamper | None = None,
    validation_context: ValidationContext | None = None,
) -> bytes:
    """Second half: the CMS with the device's signature, time-stamped, into the placeholder.

    B-T and B-LT need ``timestamper`` (our TSA, RFC 3161); B-LT needs ``validation_context``
    holding the revocation data to embed (DSS, ETSI EN 319 142-1 §5.4)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    if level != "B-B" and timestamper is None:
        raise ValueError(f"{level} needs a time-stamp authority")
    if level == "B-LT" and validation_context is None:
        raise ValueError("B-LT needs the revocation data (a validation context)")
    check_device_signature(prepared, certificate, signature)
    return asyncio.run(
        _finish(prepared, certificate, chain, signature, level, timestamper, validation_context)
    )


async def _finish(
    prepared: Prepared,
    certificate: x509.Certificate,
    chain: list[x509.Certificate],
    signature: bytes,
    level: str,
    timestamper: TimeStamper | None,
    validation_context: ValidationContext | None,
) -> bytes:
    signer = _signer(certificate, chain, signature)
    attrs = cms.CMSAttributes.load(prepared.signed_attrs)
    signed_cms = await signer.async_sign_prescribed_attributes(
        "sha256", signed_attrs=attrs, timestamper=timestamper if level != "B-B" else None
    )
    output = io.BytesIO(prepared.pdf)
    digest = PreparedByteRangeDigest(prepared.document_digest, prepared.reserved_start, prepared.reserved_end)
    await PdfTBSDocument.async_finish_signing(output, digest, signed_cms)
    if level == "B-LT":
        return await _add_dss(output.getvalue(), validation_context)
    return output.getvalue()


async def _add_dss(pdf: bytes, validation_context: ValidationContext | None) -> bytes:
    """ETSI EN 319 142-1 §5.4 (B-LT): certificates and revocation data of the signature and of
    its time-stamp in the Document Security Store, as an incremental update."""
    from pyhanko.sign.validation.dss import async_add_validation_info

    reader = PdfFileReader(io.BytesIO(pdf))
    sig = reader.embedded_signatures[-1]
    out = io.BytesIO()
    await async_add_validation_info(sig, validation_context, output=out)
    return out.getvalue()
