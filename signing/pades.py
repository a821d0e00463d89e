"""PAdES signatures in two steps, so that the private key never leaves its place.

``prepare`` writes the signature field and placeholder (pyHanko's interrupted signing:
``PdfSigner.async_digest_doc_for_signing``) and returns the CMS *signed attributes* (ETSI EN
319 142-1 §5.2: content-type, message-digest of the byte range, signing-certificate-v2; no
signing-time, the time is the /M entry and, from B-T on, the time-stamp). Whoever holds the key
signs the DER of those attributes (ECDSA with SHA-256) — a citizen's device, or the key store's
seal key. ``finish`` checks that signature against the certificate, builds the CMS
(``ExternalSigner``), adds the signature time-stamp for B-T and B-LT (ETSI EN 319 142-1 §5.3,
RFC 3161 token over the signature value), embeds it, and for B-LT appends a DSS revision with the
chain, OCSP responses and CRLs (§5.4), so the signature validates offline.

The state between the steps is a plain value (``Prepared``), serialisable with
``Prepared.to_bytes()`` so that a web flow can keep it in the database between requests.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import functools
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign import fields, signers
from pyhanko.sign.general import as_signing_certificate_v2
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument
from pyhanko.sign.timestamps.api import TimeStamper as PyHankoTimeStamper
from pyhanko.sign.validation import DocumentSecurityStore
from pyhanko_certvalidator.registry import SimpleCertificateStore

from signing.errors import (
    BadState,
    BadVisibleBox,
    BrokenPdf,
    RevocationDataMissing,
    SignatureMismatch,
    TimeStampFailed,
    UnknownLevel,
)
from signing.inputs import DEFAULT_MAX_SIZE, PdfInfo, check_header, describe

DER = serialization.Encoding.DER
_STATE_VERSION = 1
# Room for the CMS in /Contents, as DER octets; the file holds it in hex (twice as many). Beyond
# the certificates we know at prepare time: the SignerInfo and signature and, from B-T on, a
# time-stamp token with the TSA's certificate. Not much more: every validator
# reads the hex string, and pyHanko reads it a token at a time (64 KiB of hex cost ~50 ms).
_CMS_OVERHEAD = 1536  # measured ~500 with ECDSA; an RSA-4096 signature adds ~440
_TIMESTAMP_ALLOWANCE = 2048  # measured ~1,450 with the TSA certificate


class Level(enum.StrEnum):
    """PAdES baseline levels (ETSI EN 319 142-1 §6)."""

    B_B = "B-B"  # CMS with signing-certificate-v2
    B_T = "B-T"  # + a signature time-stamp from our TSA
    B_LT = "B-LT"  # + chain, OCSP responses and CRLs in the DSS: validates offline

    @classmethod
    def parse(cls, text: str) -> Level:
        try:
            return cls(text.upper())
        except ValueError as exc:
            raise UnknownLevel(f"{text!r}") from exc


@dataclass(frozen=True)
class Visible:
    """A visible signature box: page (1-based), lower-left x, y, width, height in PDF points."""

    page: int
    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Visible:
        """``PAGE,X,Y,W,H`` as typed on the command line."""
        try:
            page, x, y, w, h = (int(part) for part in text.split(","))
        except ValueError as exc:
            raise BadVisibleBox(f"{text!r}") from exc
        if page < 1 or x < 0 or y < 0 or w <= 0 or h <= 0 or max(x, y, w, h) > 14_400:
            raise BadVisibleBox(f"{text!r}")  # ISO 32000-1 Annex C.2: 14,400 units is the page limit
        return cls(page, x, y, w, h)


@dataclass(frozen=True)
class RevocationData:
    """What a B-LT signature embeds for validation without network (DER each)."""

    certificates: tuple[bytes, ...] = ()
    ocsp_responses: tuple[bytes, ...] = ()
    crls: tuple[bytes, ...] = ()


class RevocationSource:
    """Where revocation data for a certificate chain comes from (``signing.pki_context``)."""

    def collect(self, chain: Sequence[x509.Certificate]) -> RevocationData:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class SigningContext:
    """The services ``finish`` needs: a time-stamper for B-T/B-LT, revocation data for B-LT."""

    time_stamper: PyHankoTimeStamper | None
    revocation: RevocationSource | None


@dataclass(frozen=True)
class Prepared:
    """The state between ``prepare`` and ``finish``; ``to_be_signed`` is what the key signs."""

    pdf: bytes  # the document with the signature field and an empty placeholder
    document_digest: bytes  # SHA-256 over the /ByteRange
    reserved_region_start: int
    reserved_region_end: int
    signed_attributes: bytes  # DER SET OF Attribute: sign exactly these bytes (RFC 5652 §5.4)
    signer_certificate: bytes  # DER
    chain: tuple[bytes, ...]  # DER, issuing CA first
    level: Level
    document: PdfInfo  # of the original document

    @property
    def to_be_signed(self) -> bytes:
        """The bytes the key signs (ECDSA/RSA with SHA-256 over them)."""
        return self.signed_attributes

    @property
    def to_be_signed_sha256(self) -> bytes:
        """SHA-256 of :attr:`to_be_signed`, for a key that signs a prehashed digest."""
        digest = hashes.Hash(hashes.SHA256())
        digest.update(self.signed_attributes)
        return digest.finalize()

    def to_bytes(self) -> bytes:
        b64 = base64.b64encode
        doc = self.document
        return json.dumps(
            {
                "v": _STATE_VERSION,
                "pdf": b64(self.pdf).decode(),
                "digest": b64(self.document_digest).decode(),
                "start": self.reserved_region_start,
                "end": self.reserved_region_end,
                "attrs": b64(self.signed_attributes).decode(),
                "cert": b64(self.signer_certificate).decode(),
                "chain": [b64(c).decode() for c in self.chain],
                "level": self.level.value,
                "doc": [doc.sha256, doc.size, doc.page_count, doc.title],
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Prepared:
        d = base64.b64decode
        try:
            raw = json.loads(data)
            if raw["v"] != _STATE_VERSION:
                raise BadState(f"state version {raw['v']!r}")
            sha, size, pages, title = raw["doc"]
            return cls(
                d(raw["pdf"]),
                d(raw["digest"]),
                int(raw["start"]),
                int(raw["end"]),
                d(raw["attrs"]),
                d(raw["cert"]),
                tuple(d(c) for c in raw["chain"]),
                Level(raw["level"]),
                PdfInfo(str(sha), int(size), int(pages), title),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BadState(type(exc).__name__) from exc


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(DER))


@functools.lru_cache(maxsize=64)
def _registry(chain: tuple[bytes, ...]) -> SimpleCertificateStore:
    """The certificates the CMS carries besides the signer's (RFC 5652 §5.1); one per chain
    (registering a certificate hashes its names: milliseconds in asn1crypto). Not mutated."""
    return SimpleCertificateStore.from_certs([asn1_x509.Certificate.load(c) for c in chain])  # type: ignore[no-untyped-call,no-any-return]


@functools.lru_cache(maxsize=256)
def _signing_certificate_v2(cert_der: bytes) -> bytes:
    """The signing-certificate-v2 attribute (RFC 5035, ETSI EN 319 142-1 §5.2.2.2) as DER, made
    once per certificate by pyHanko (asn1crypto re-encodes it for ~10 ms on every dump)."""
    value = as_signing_certificate_v2(asn1_x509.Certificate.load(cert_der))
    return bytes(cms.CMSAttribute({"type": "signing_certificate_v2", "values": [value]}).dump())


_CONTENT_TYPE_DATA = cms.CMSAttribute({"type": "content_type", "values": ["data"]}).dump()


def _signed_attributes(document_digest: bytes, cert_der: bytes) -> cms.CMSAttributes:
    """What pyHanko's ``Signer.signed_attrs(use_pades=True)`` makes for PAdES (ETSI EN 319 142-1
    §5.2: content-type id-data, message-digest, signing-certificate-v2; no signing-time), from
    parts made once."""
    return cms.CMSAttributes(
        [
            cms.CMSAttribute.load(_CONTENT_TYPE_DATA),  # RFC 5652 §11.1
            cms.CMSAttribute({"type": "message_digest", "values": [document_digest]}),  # RFC 5652 §11.2
            cms.CMSAttribute.load(_signing_certificate_v2(cert_der)),
        ]
    )


def _mechanism(cert: x509.Certificate) -> algos.SignedDigestAlgorithm:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"})
    if isinstance(key, rsa.RSAPublicKey):
        return algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"})
    raise SignatureMismatch(f"unsupported key type {type(key).__name__}")


def _field_spec(field_name: str, visible: Visible | None, info: PdfInfo) -> fields.SigFieldSpec:
    if visible is None:
        return fields.SigFieldSpec(sig_field_name=field_name)
    if visible.page > info.page_count:
        raise BadVisibleBox(f"page {visible.page} of {info.page_count}")
    box = (visible.x, visible.y, visible.x + visible.width, visible.y + visible.height)
    return fields.SigFieldSpec(sig_field_name=field_name, on_page=visible.page - 1, box=box)


def prepare(
    pdf: bytes,
    signer_certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    level: Level = Level.B_LT,
    reason: str | None = None,
    location: str | None = None,
    name: str | None = None,
    field_name: str | None = None,
    visible: Visible | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Prepared:
    """Check ``pdf`` (typed :class:`signing.errors.DocumentError`), add the signature field and
    placeholder, and return the state with the signed attributes to be signed."""
    check_header(pdf, max_size=max_size)
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=True)  # parses the file once
    except (PdfError, KeyError, TypeError, ValueError, IndexError, AssertionError) as exc:
        raise BrokenPdf(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    info = describe(pdf, writer.prev)
    return asyncio.run(
        _prepare(writer, info, signer_certificate, chain, level, reason, location, name, field_name, visible)
    )


async def _prepare(
    writer: IncrementalPdfFileWriter,
    info: PdfInfo,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    level: Level,
    reason: str | None,
    location: str | None,
    name: str | None,
    field_name: str | None,
    visible: Visible | None,
) -> Prepared:
    field = field_name or _free_field_name(writer)
    cert_der = cert.public_bytes(DER)
    external = signers.ExternalSigner(
        signing_cert=asn1_x509.Certificate.load(cert_der),
        cert_registry=_registry(tuple(c.public_bytes(DER) for c in chain)),
        signature_value=bytes(256),
        signature_mechanism=_mechanism(cert),
    )
    meta = signers.PdfSignatureMetadata(
        field_name=field,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,  # ETSI.CAdES.detached (ETSI EN 319 142-1 §5.1)
        reason=reason,
        location=location,
        name=name,
    )
    pdf_signer = signers.PdfSigner(meta, signer=external, new_field_spec=_field_spec(field, visible, info))
    room = _CMS_OVERHEAD + len(cert_der) + sum(len(c.public_bytes(DER)) for c in chain)
    if level in (Level.B_T, Level.B_LT):
        room += _TIMESTAMP_ALLOWANCE
    prepared, _tbs, output = await pdf_signer.async_digest_doc_for_signing(writer, bytes_reserved=2 * room)
    signed_attrs = _signed_attributes(prepared.document_digest, cert_der)
    output.seek(0)
    return Prepared(
        pdf=output.read(),
        document_digest=prepared.document_digest,
        reserved_region_start=prepared.reserved_region_start,
        reserved_region_end=prepared.reserved_region_end,
        signed_attributes=signed_attrs.dump(),
        signer_certificate=cert_der,
        chain=tuple(c.public_bytes(DER) for c in chain),
        level=level,
        document=info,
    )


def _free_field_name(writer: IncrementalPdfFileWriter) -> str:
    existing = {f[0] for f in fields.enumerate_sig_fields(writer.prev, filled_status=None)}
    n = 1
    while f"Signature{n}" in existing:
        n += 1
    return f"Signature{n}"


def check_signature(prepared: Prepared, signature: bytes) -> None:
    """:class:`SignatureMismatch` unless ``signature`` is the certificate key's signature over
    ``prepared.to_be_signed`` (ECDSA DER or RSA PKCS#1 v1.5, SHA-256)."""
    key = x509.load_der_x509_certificate(prepared.signer_certificate).public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, prepared.signed_attributes, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, prepared.signed_attributes, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise SignatureMismatch(f"unsupported key type {type(key).__name__}")
    except (InvalidSignature, ValueError) as exc:
        raise SignatureMismatch() from exc


def finish(prepared: Prepared, signature: bytes, context: SigningContext) -> bytes:
    """The signed PDF at ``prepared.level``. Raises :class:`SignatureMismatch` for a signature
    that does not verify, :class:`TimeStampFailed` when the TSA refuses (B-T, B-LT)."""
    check_signature(prepared, signature)
    return asyncio.run(_finish(prepared, signature, context))


async def _finish(prepared: Prepared, signature: bytes, context: SigningContext) -> bytes:
    cert = x509.load_der_x509_certificate(prepared.signer_certificate)
    chain = [x509.load_der_x509_certificate(c) for c in prepared.chain]
    external = signers.ExternalSigner(
        signing_cert=asn1_x509.Certificate.load(prepared.signer_certificate),
        cert_registry=_registry(prepared.chain),
        signature_value=signature,
        signature_mechanism=_mechanism(cert),
    )
    stamper = None
    if prepared.level in (Level.B_T, Level.B_LT):
        stamper = context.time_stamper
        if stamper is None:
            raise TimeStampFailed("no time-stamper configured")
    try:
        signed_data = await external.async_sign_prescribed_attributes(
            "sha256", signed_attrs=cms.CMSAttributes.load(prepared.signed_attributes), timestamper=stamper
        )
    except OSError as exc:  # TimestampRequestError (refused, reply not matching) or unreachable TSA
        raise TimeStampFailed(str(exc)[:200]) from exc
    output = io.BytesIO(prepared.pdf)
    digest = PreparedByteRangeDigest(
        prepared.document_digest, prepared.reserved_region_start, prepared.reserved_region_end
    )
    await PdfTBSDocument.async_finish_signing(output, digest, signed_data)
    if prepared.level == Level.B_LT:
        _add_dss(output, cert, chain, signed_data, context)
    return output.getvalue()


def _tsa_certificates(signed_data: cms.ContentInfo) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for signer_info in signed_data["content"]["signer_infos"]:
        for attr in signer_info["unsigned_attrs"] or ():
            if attr["type"].native != "signature_time_stamp_token":
                continue
            for token in attr["values"]:
                for choice in token["content"]["certificates"] or ():
                    out.append(x509.load_der_x509_certificate(choice.chosen.dump()))
    return out


def _add_dss(
    output: io.BytesIO,
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    signed_data: cms.ContentInfo,
    context: SigningContext,
) -> None:
    """ETSI EN 319 142-1 §5.4.2: the DSS with the certificates, OCSP responses and CRLs that
    validating the signer's and the TSA's certificates needs (one incremental update)."""
    if context.revocation is None:
        raise RevocationDataMissing("B-LT needs a revocation source")
    data = context.revocation.collect([cert, *_tsa_certificates(signed_data), *chain])
    DocumentSecurityStore.add_dss(
        output,
        sig_contents=None,
        certs=[asn1_x509.Certificate.load(c) for c in data.certificates],
        ocsps=[asn1_ocsp.OCSPResponse.load(o) for o in data.ocsp_responses],
        crls=[asn1_crl.CertificateList.load(c) for c in data.crls],
        force_write=True,
    )
