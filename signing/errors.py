"""One exception class per reason a document is not signed or not validated.

``description`` is safe to show to the requester (and is what ``str()`` gives when no detail is
passed); ``code`` is stable for APIs and the CLI (``--json``); the HTTP edge maps it to a 4xx.
"""

from __future__ import annotations


class SigningError(Exception):
    code = "signing_error"
    description = "the document cannot be signed"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.description)
        self.detail = detail or self.description


class DocumentError(SigningError):
    """The input is not a PDF we sign or validate. All of these are the requester's fault (4xx)."""

    code = "invalid_document"
    description = "the document is not an acceptable PDF"


class EmptyDocument(DocumentError):
    code = "empty_document"
    description = "the document is empty (0 bytes)"


class DocumentTooLarge(DocumentError):
    code = "document_too_large"
    description = "the document is larger than the size limit"


class NotAPdf(DocumentError):
    code = "not_a_pdf"
    description = "the document is not a PDF (no %PDF- header)"


class BrokenPdf(DocumentError):
    code = "broken_pdf"
    description = "the PDF cannot be read (damaged cross-reference table or structure)"


class EncryptedPdf(DocumentError):
    code = "encrypted_pdf"
    description = "the PDF is encrypted; remove the encryption before signing"


class TooManySignatures(DocumentError):
    code = "too_many_signatures"
    description = "the document has more signatures than are validated (a limit against abuse)"


class BadVisibleBox(DocumentError):
    code = "bad_visible_box"
    description = "the visible signature box is not PAGE,X,Y,W,H on an existing page"


class UnknownLevel(SigningError):
    code = "unknown_level"
    description = "the signature level is not one of B-B, B-T, B-LT"


class SignatureMismatch(SigningError):
    """finish(): the signature value does not verify over the prepared signed attributes."""

    code = "signature_mismatch"
    description = "the signature does not verify with the signer's certificate over the prepared data"


class BadState(SigningError):
    code = "bad_state"
    description = "the prepared signature state is damaged or of another version"


class TimeStampFailed(SigningError):
    code = "time_stamp_failed"
    description = "the time-stamp authority did not grant a time-stamp"


class RevocationDataMissing(SigningError):
    code = "revocation_data_missing"
    description = "revocation data (OCSP/CRL) for the certificate chain is not available"
