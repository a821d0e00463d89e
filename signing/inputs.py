"""Checks on an uploaded PDF before anything is done with it (hostile input)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader

from signing.errors import BrokenPdf, DocumentTooLarge, EmptyDocument, EncryptedPdf, NotAPdf

DEFAULT_MAX_SIZE = 20 * 1024 * 1024  # 20 MiB
_HEADER_WINDOW = 1024  # ISO 32000-1 §7.5.2: the header; readers accept it within the first 1024 bytes


@dataclass(frozen=True)
class PdfInfo:
    """What a person is shown before signing (what you see is what you sign)."""

    sha256: str  # hex, of the exact bytes
    size: int
    page_count: int
    title: str | None  # the document information dictionary's /Title, if any


def inspect(pdf: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> PdfInfo:
    """Raise a :class:`signing.errors.DocumentError` unless ``pdf`` is a readable, unencrypted PDF
    of at most ``max_size`` bytes; otherwise its hash, size, page count and title."""
    check_header(pdf, max_size=max_size)
    return describe(pdf, open_reader(pdf))


def check_header(pdf: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
    """The checks before any parsing: empty, too large, no PDF header."""
    if len(pdf) == 0:
        raise EmptyDocument()
    if len(pdf) > max_size:
        raise DocumentTooLarge(f"{len(pdf)} bytes; the limit is {max_size}")
    if b"%PDF-" not in pdf[:_HEADER_WINDOW]:
        raise NotAPdf()


def describe(pdf: bytes, reader: PdfFileReader) -> PdfInfo:
    """The checks on a parsed document (encrypted, page tree) and what is shown of it."""
    if reader.encrypted:  # ISO 32000-1 §7.6: we neither decrypt nor sign encrypted files
        raise EncryptedPdf()
    try:
        pages = int(reader.root["/Pages"]["/Count"])
        title = _title(reader)
    except (PdfError, KeyError, TypeError, ValueError) as exc:
        raise BrokenPdf(f"no readable page tree: {type(exc).__name__}") from exc
    return PdfInfo(hashlib.sha256(pdf).hexdigest(), len(pdf), pages, title)


def open_reader(pdf: bytes) -> PdfFileReader:
    """A strict reader: a damaged cross-reference table is an error, not something to repair."""
    try:
        return PdfFileReader(io.BytesIO(pdf), strict=True)
    except (PdfError, KeyError, TypeError, ValueError, IndexError, AssertionError) as exc:
        raise BrokenPdf(f"{type(exc).__name__}: {str(exc)[:200]}") from exc


def _title(reader: PdfFileReader) -> str | None:
    info = reader.trailer_view.get("/Info")
    if info is None:
        return None
    title = info.get_object().get("/Title")
    return None if title is None else str(title)[:500]
