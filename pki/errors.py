"""One exception class per reason the CA refuses something.

``description`` is safe to show to the requester; ``detail`` is for logs and the audit record.
The HTTP edge maps ``code`` to a response; nothing here knows about HTTP.
"""

from __future__ import annotations


class PkiError(Exception):
    code = "pki_error"
    description = "the CA refused the request"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.description)
        self.detail = detail or self.description


class CaNotInitialised(PkiError):
    code = "ca_not_initialised"
    description = "the CA is not initialised: run `cityid ca init`"


class OcspSignerBusy(PkiError):
    code = "ocsp_signer_busy"
    description = "the first OCSP signer is being made; try again in a moment"


class KeyStoreError(PkiError):
    code = "key_store_error"
    description = "the key store could not provide the CA key"


# -- CSR and profile -----------------------------------------------------------------------


class CsrError(PkiError):
    """Base of everything wrong with a certificate signing request."""

    code = "bad_csr"
    description = "the certificate signing request is not acceptable"


class MalformedCsr(CsrError):
    code = "malformed_csr"
    description = "the CSR is not a DER or PEM PKCS#10 request"


class BadCsrSignature(CsrError):
    code = "bad_csr_signature"
    description = "the CSR signature does not verify (no proof of possession)"


class WeakCsrSignatureAlgorithm(CsrError):
    code = "weak_csr_signature_algorithm"
    description = "the CSR is signed with an algorithm the CA does not accept"


class KeyTypeNotAllowed(CsrError):
    code = "key_type_not_allowed"
    description = "the key type is not allowed by the profile"


class KeySizeNotAllowed(CsrError):
    code = "key_size_not_allowed"
    description = "the key size or curve is not allowed by the profile"


class ExtensionNotAllowed(CsrError):
    code = "extension_not_allowed"
    description = "the CSR asks for an extension the profile does not allow"


class SanNotAllowed(CsrError):
    code = "san_not_allowed"
    description = "the CSR asks for a subject alternative name the profile does not allow"


class SubjectNotAllowed(CsrError):
    code = "subject_not_allowed"
    description = "the CSR subject does not fit the profile"


class UnknownProfile(PkiError):
    code = "unknown_profile"
    description = "no such certificate profile"


class BadRequest(PkiError):
    code = "bad_request"
    description = "the issuance request is incomplete or inconsistent"


class ValidityNotAllowed(PkiError):
    code = "validity_not_allowed"
    description = "the requested validity exceeds what the profile allows"


# -- revocation ----------------------------------------------------------------------------


class UnknownCertificate(PkiError):
    code = "unknown_certificate"
    description = "the CA has no certificate with this serial number"


class BadRevocationReason(PkiError):
    code = "bad_revocation_reason"
    description = "not an RFC 5280 revocation reason the CA accepts"


class NotOnHold(PkiError):
    code = "not_on_hold"
    description = "only a certificate on hold (certificateHold) can be reinstated"


class AlreadyRevoked(PkiError):
    code = "already_revoked"
    description = "the certificate is already revoked for another reason"
