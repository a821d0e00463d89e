"""Validation of the PAdES signatures in a PDF, with pyHanko, the city root as trust anchor.

For each signature: integrity (the byte range's digest and the CMS signature, ISO 32000-1
§12.8.1), what changed after it (pyHanko's difference analysis: anything beyond the DSS and
document time-stamps of long-term validation is a change), the signature time-stamp (RFC 3161,
ETSI EN 319 142-1 §5.3) and the certificate's validity *at that time*, revocation included
(RFC 5280 §6.1.3 (a)(3)). Revocation data embedded in the DSS is used first; only when it does
not decide are OCSP responders and CRL distribution points asked (``online=True``). Whether the
certificate is valid *now* is a second, separate question (``status_now``, or online).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation import DocumentSecurityStore, EmbeddedPdfSignature, async_validate_pdf_signature
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.status import PdfSignatureStatus, SignatureCoverageLevel
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError, RevokedError

from pki.certpolicy import POLICY_DOCUMENT_SEAL
from signing.errors import BrokenPdf, TooManySignatures
from signing.inputs import DEFAULT_MAX_SIZE, check_header, describe, open_reader

log = logging.getLogger("cityid")
DER = serialization.Encoding.DER

MAX_SIGNATURES = 20
StatusNow = Callable[[x509.Certificate], "bool | None"]


@dataclass(frozen=True)
class SignatureReport:
    field_name: str
    signer: str  # the CN, else the device URN (SAN), else the whole subject
    signer_subject: str  # RFC 4514
    signer_serial: str  # hex
    kind: str  # "seal" (a document-seal certificate) or "signature"
    level: str  # PAdES baseline: B-B, B-T, B-LT
    claimed_time: dt.datetime | None  # the signer's own statement (/M), not proof
    timestamp: dt.datetime | None  # RFC 3161 genTime of a valid, trusted signature time-stamp
    intact: bool  # the signed bytes are unchanged and the signature verifies
    changed_after: bool  # the document was changed after signing (beyond LTV additions)
    trusted: bool  # the certificate chains to a trust anchor
    valid_then: bool  # the certificate was valid, unrevoked, at the signing time
    valid_now: bool | None  # None: could not be decided (no revocation source reachable)
    revoked: bool  # revoked at the signing time
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.intact and self.trusted and self.valid_then and not self.changed_after


@dataclass(frozen=True)
class ValidationResult:
    document_sha256: str
    signatures: tuple[SignatureReport, ...]

    @property
    def valid(self) -> bool:
        """At least one signature, and every one intact, trusted, valid then and unchanged."""
        return bool(self.signatures) and all(s.ok for s in self.signatures)


def validate(
    pdf: bytes,
    trust_roots: Sequence[x509.Certificate],
    *,
    online: bool = True,
    status_now: StatusNow | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    now: dt.datetime | None = None,
) -> ValidationResult:
    """Validate every signature of ``pdf``. Typed :class:`signing.errors.DocumentError` for an
    input that is not a readable PDF; a PDF without signatures gives an empty, invalid result."""
    check_header(pdf, max_size=max_size)
    reader = open_reader(pdf)  # parsed once, for the checks and the validation
    info = describe(pdf, reader)
    try:
        embedded = list(reader.embedded_regular_signatures)
        if len(embedded) > MAX_SIGNATURES:  # each costs path validations: bound the work an upload buys
            raise TooManySignatures(f"{len(embedded)} signatures; at most {MAX_SIGNATURES} are validated")
        dss = DocumentSecurityStore.read_dss(reader) if "/DSS" in reader.root else None
    except (PdfError, KeyError, TypeError, ValueError) as exc:
        raise BrokenPdf(f"{type(exc).__name__}") from exc
    roots = [asn1_x509.Certificate.load(r.public_bytes(DER)) for r in trust_roots]
    reports = asyncio.run(_validate_all(embedded, dss, roots, online, status_now, now))
    return ValidationResult(info.sha256, tuple(reports))


async def _validate_all(
    embedded: list[EmbeddedPdfSignature],
    dss: DocumentSecurityStore | None,
    roots: list[asn1_x509.Certificate],
    online: bool,
    status_now: StatusNow | None,
    now: dt.datetime | None,
) -> list[SignatureReport]:
    return [await _validate_one(sig, dss, roots, online, status_now, now) for sig in embedded]


def _context(
    roots: list[asn1_x509.Certificate],
    dss: DocumentSecurityStore | None,
    *,
    moment: dt.datetime | None,
    online: bool,
    other_certs: Sequence[asn1_x509.Certificate] = (),
    revocation_mode: str = "hard-fail",
) -> ValidationContext:
    kwargs: dict[str, Any] = {
        "trust_roots": roots,
        "other_certs": list(other_certs),
        "allow_fetching": online,
        "revocation_mode": revocation_mode,  # RFC 5280 §6.3: hard-fail, no decision without data
        "moment": moment,
        "retroactive_revinfo": True,  # OCSP/CRL issued after the signing time still speak of it
    }
    if dss is None:
        return ValidationContext(**kwargs)
    context: ValidationContext = dss.as_validation_context(kwargs)
    return context


def _has_revocation_data(dss: DocumentSecurityStore | None) -> bool:
    return dss is not None and bool(dss.ocsps or dss.crls)


def _timestamp_time(sig: EmbeddedPdfSignature) -> dt.datetime | None:
    """The genTime of the signature time-stamp token, read before validating it (to validate
    the certificate at that time); the token itself is validated by pyHanko."""
    attrs = sig.signer_info["unsigned_attrs"]
    if not attrs:
        return None
    for attr in attrs:
        if attr["type"].native == "signature_time_stamp_token":
            token: cms.ContentInfo = attr["values"][0]
            info = token["content"]["encap_content_info"]["content"].parsed
            gen: dt.datetime = info["gen_time"].native
            return gen
    return None


async def _status(
    sig: EmbeddedPdfSignature,
    roots: list[asn1_x509.Certificate],
    dss: DocumentSecurityStore | None,
    moment: dt.datetime | None,
    online: bool,
    revocation_mode: str = "hard-fail",
) -> PdfSignatureStatus:
    # the CMS's own certificates (issuing CA) also serve the time-stamp's path (RFC 5652 §5.1)
    context = _context(
        roots,
        dss,
        moment=moment,
        online=online,
        revocation_mode=revocation_mode,
        other_certs=sig.other_embedded_certs,
    )
    return await async_validate_pdf_signature(sig, signer_validation_context=context)


async def _chains_offline(
    sig: EmbeddedPdfSignature,
    roots: list[asn1_x509.Certificate],
    dss: DocumentSecurityStore | None,
    moment: dt.datetime | None,
    status: PdfSignatureStatus,
    embedded: bool,
) -> bool:
    """Whether the signer's certificate chains to a trust root with the certificates at hand."""
    if not embedded:
        return bool(status.trusted)  # that status was made with revocation soft-failing
    return bool((await _status(sig, roots, dss, moment, False, "soft-fail")).trusted)


async def _validate_one(
    sig: EmbeddedPdfSignature,
    dss: DocumentSecurityStore | None,
    roots: list[asn1_x509.Certificate],
    online: bool,
    status_now: StatusNow | None,
    now: dt.datetime | None,
) -> SignatureReport:
    problems: list[str] = []
    cert = x509.load_der_x509_certificate(sig.signer_cert.dump())
    ts_time = _timestamp_time(sig)
    moment = ts_time or now
    unchecked = ""
    embedded = _has_revocation_data(dss)
    try:
        # embedded revocation data first (offline) ...
        status = await _status(sig, roots, dss, moment, False, "hard-fail" if embedded else "soft-fail")
        if not embedded:
            unchecked = "no revocation data in the document and no network: revocation not checked"
        decided = embedded and status.trusted and status.valid and not status.revoked
        if online and not decided and await _chains_offline(sig, roots, dss, moment, status, embedded):
            # ... the responders and CRL distribution points only when it did not decide, and
            # only for a path to our root built from what the file carries: URLs in certificates
            # that do not chain to it are never fetched (the upload may come from anyone)
            try:
                status = await _status(sig, roots, dss, moment, True)
                unchecked = ""
            except OSError as exc:  # a responder that does not answer (timeout, refused): unknown
                log.info("validation: revocation fetch failed: %r", exc)
                unchecked = f"the revocation responder could not be reached ({type(exc).__name__})"
    except (SignatureValidationError, PdfError, ValueError) as exc:
        return _broken(sig, cert, f"{type(exc).__name__}: {exc}"[:300])
    if unchecked:
        problems.append(unchecked)
    timestamp = None
    tst = status.timestamp_validity
    if tst is not None and tst.intact and tst.valid and tst.trusted:
        timestamp = tst.timestamp
    elif ts_time is not None:
        # the certificate was judged at the time the token claims: without a valid token that
        # time is the signer's word only (ETSI EN 319 102-1 §5.6.2.1), so "valid then" is unproven
        problems.append("the signature time-stamp does not validate")
        unchecked = unchecked or "the signing time is not proven"
    changed = _changed_after(status)
    if changed:
        problems.append("the document was changed after signing")
    if not status.trusted:
        problems.append("the certificate does not chain to the trusted root")
    if status.revoked:
        problems.append("the certificate was revoked at the signing time")
    valid_now = await _valid_now(cert, sig, roots, dss, online, status_now) if status.trusted else False
    return SignatureReport(
        field_name=str(sig.field_name),
        signer=_signer_name(cert),
        signer_subject=cert.subject.rfc4514_string(),
        signer_serial=format(cert.serial_number, "x"),
        kind=_kind(cert),
        level=_level(status, dss),
        claimed_time=status.signer_reported_dt,
        timestamp=timestamp,
        intact=bool(status.intact and status.valid),
        changed_after=changed,
        trusted=bool(status.trusted),
        valid_then=bool(
            status.trusted and status.intact and status.valid and not status.revoked and not unchecked
        ),
        valid_now=valid_now,
        revoked=bool(status.revoked),
        problems=tuple(problems),
    )


def _changed_after(status: PdfSignatureStatus) -> bool:
    if status.coverage == SignatureCoverageLevel.ENTIRE_FILE:
        return False
    if status.coverage != SignatureCoverageLevel.ENTIRE_REVISION:
        return True
    level = status.modification_level
    # ISO 32000-2 §12.8.4.3 / ETSI EN 319 142-1 §5.4: DSS and document time-stamps are allowed
    return level is None or level > ModificationLevel.LTA_UPDATES or status.docmdp_ok is False


def _level(status: PdfSignatureStatus, dss: DocumentSecurityStore | None) -> str:
    if status.timestamp_validity is None:
        return "B-B"
    if dss is not None and (dss.ocsps or dss.crls):
        return "B-LT"
    return "B-T"


async def _valid_now(
    cert: x509.Certificate,
    sig: EmbeddedPdfSignature,
    roots: list[asn1_x509.Certificate],
    dss: DocumentSecurityStore | None,
    online: bool,
    status_now: StatusNow | None,
) -> bool | None:
    if status_now is not None:
        return status_now(cert)
    if not online:
        return None
    if cert.not_valid_after_utc < dt.datetime.now(dt.UTC):
        return False  # RFC 5280 §6.1.3 (a)(2)
    embedded_certs = list(dss.load_certs()) if dss is not None else []
    context = ValidationContext(  # now: not the embedded (old) revocation data, only what is fetched
        trust_roots=roots,
        other_certs=[*embedded_certs, *sig.other_embedded_certs],
        allow_fetching=True,
        revocation_mode="hard-fail",
    )
    validator = CertificateValidator(sig.signer_cert, validation_context=context)
    try:
        await validator.async_validate_usage(set())  # type: ignore[no-untyped-call]
        return True
    except (RevokedError, PathBuildingError):
        return False
    except (PathValidationError, OSError):
        return None  # no responder reachable, or no decision: unknown


def _broken(sig: EmbeddedPdfSignature, cert: x509.Certificate, problem: str) -> SignatureReport:
    return SignatureReport(
        field_name=str(sig.field_name),
        signer=_signer_name(cert),
        signer_subject=cert.subject.rfc4514_string(),
        signer_serial=format(cert.serial_number, "x"),
        kind=_kind(cert),
        level="B-B",
        claimed_time=None,
        timestamp=None,
        intact=False,
        changed_after=True,
        trusted=False,
        valid_then=False,
        valid_now=None,
        revoked=False,
        problems=(problem,),
    )


def _signer_name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if cns:
        return str(cns[0].value)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if uris:
            return uris[0]
    except x509.ExtensionNotFound:
        pass
    return cert.subject.rfc4514_string()


def _kind(cert: x509.Certificate) -> str:
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return "signature"
    suffix = "." + POLICY_DOCUMENT_SEAL
    return (
        "seal" if any(p.policy_identifier.dotted_string.endswith(suffix) for p in policies) else "signature"
    )
