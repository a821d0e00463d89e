"""The one place the CA writes DER by hand: the revokedCertificates list of very large CRLs.

cryptography builds a 1,000,000-entry CRL in about 13 s (one Python object per entry, then
re-encoding); the target is 6 s. So for large CRLs cryptography builds the CRL *without*
entries (header, extensions: everything that has rules), and this module splices in the
``revokedCertificates`` SEQUENCE (RFC 5280 §5.1.2.6), three fields per entry, then signs the
new ``tbsCertList`` with the same signer and algorithm. ``tests/pki/test_crl.py`` proves that
the result is byte-identical to cryptography's own encoding for the same entries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from pki.keystore import Signer

# RFC 5280 §5.3.1 reasonCode: Extension { extnID 2.5.29.21, extnValue OCTET STRING { ENUMERATED } }
_REASON_EXT_PREFIX = bytes.fromhex("300c300a0603551d1504030a01")


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + _length(n) + content


def encode_time(when: dt.datetime | str) -> bytes:
    """RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; seconds, Zulu.

    ``when`` is an aware datetime or the UTC text SQLite stores (``YYYY-MM-DD HH:MM:SS...``).
    """
    if isinstance(when, str):
        if "1950" <= when < "2050":  # the common case, kept short: it runs per distinct second
            return (
                b"\x17\x0d"
                + (
                    when[2:4] + when[5:7] + when[8:10] + when[11:13] + when[14:16] + when[17:19] + "Z"
                ).encode()
            )
        year = int(when[0:4])
        digits = when[0:4] + when[5:7] + when[8:10] + when[11:13] + when[14:16] + when[17:19]
    else:
        if when.tzinfo is None:  # astimezone would read it as local time
            raise ValueError("naive datetime: CRL times are aware UTC")
        when = when.astimezone(dt.UTC)
        year = when.year
        digits = when.strftime("%Y%m%d%H%M%S")
    if 1950 <= year < 2050:
        return tlv(0x17, digits[2:].encode() + b"Z")
    return tlv(0x18, digits.encode() + b"Z")


Entry = tuple[str, "dt.datetime | str", "int | None"]  # (serial hex, revocation date, reason)
_SHORT = [bytes((n,)) for n in range(128)]


def encode_entries(entries: Iterable[Entry]) -> bytes:
    """The ``revokedCertificates`` SEQUENCE (RFC 5280 §5.1.2.6) for (serial hex, date, reason).

    A reason of ``None`` or 0 (unspecified) omits the reasonCode extension (RFC 5280 §5.3.1:
    the unspecified code SHOULD NOT be used).
    """
    # Per distinct (date, reason): the entry's tail (revocationDate, crlEntryExtensions) and the
    # head (SEQUENCE header, INTEGER tag and length) of an entry whose serial is 20 octets with a
    # first octet of 0x01-0x7f: 127 in 128 of the CA's serials (159 random bits). The loop body
    # is then one look-up, one hex decode and one concatenation.
    memo: dict[tuple[dt.datetime | str, int | None], tuple[bytes, bytes]] = {}
    parts: list[bytes] = []
    append = parts.append
    short = _SHORT
    fromhex = bytes.fromhex
    for serial_hex, when, reason in entries:
        hit = memo.get((when, reason))
        if hit is None:
            tail = encode_time(when)
            if reason:
                tail += _REASON_EXT_PREFIX + bytes((reason,))
            hit = memo[(when, reason)] = (b"\x30" + short[2 + 20 + len(tail)] + b"\x02\x14", tail)
        body = fromhex(serial_hex)
        if len(body) == 20 and 0 < body[0] < 0x80:
            append(hit[0] + body + hit[1])
            continue
        # RFC 5280 §4.1.2.2 / X.690 §8.3.2: minimal two's-complement, positive
        body = body.lstrip(b"\x00")
        if not body or body[0] & 0x80:
            body = b"\x00" + body
        content = b"\x02" + short[len(body)] + body + hit[1]  # serial <= 21 octets: short form
        append(b"\x30" + short[len(content)] + content)
    # RFC 5280 §5.1.2.6: with nothing revoked the field is absent, not an empty SEQUENCE
    return tlv(0x30, b"".join(parts)) if parts else b""


def _elements(der: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Offsets (start, end) of the elements inside the outermost SEQUENCE of ``der``."""
    if der[0] != 0x30:
        raise ValueError("not a SEQUENCE")
    pos, length = _read_length(der, 1)
    if pos + length != len(der):
        raise ValueError("trailing data")
    out: list[tuple[int, int]] = []
    while pos < len(der):
        start = pos
        body, length = _read_length(der, pos + 1)
        pos = body + length
        out.append((start, pos))
    return len(der), out


def _read_length(der: bytes, pos: int) -> tuple[int, int]:
    first = der[pos]
    if first < 0x80:
        return pos + 1, first
    n = first & 0x7F
    return pos + 1 + n, int.from_bytes(der[pos + 1 : pos + 1 + n], "big")


def splice_and_sign(template: x509.CertificateRevocationList, revoked: bytes, signer: Signer) -> bytes:
    """``template`` (a CRL without entries) with ``revoked`` inserted, signed anew."""
    if len(template) != 0:
        raise ValueError("the template must have no entries")
    tbs = template.tbs_certlist_bytes
    _, fields = _elements(tbs)
    # tbsCertList: version, signature, issuer, thisUpdate, nextUpdate, [revoked], [0] extensions
    insert_at = fields[-1][0] if tbs[fields[-1][0]] == 0xA0 else len(tbs)
    body = tbs[fields[0][0] : insert_at] + revoked + tbs[insert_at:]
    new_tbs = tlv(0x30, body)
    der = template.public_bytes(Encoding.DER)
    _, outer = _elements(der)
    algorithm_id = der[outer[1][0] : outer[1][1]]
    if not isinstance(template.signature_hash_algorithm, hashes.SHA256) or not isinstance(
        template.signature_algorithm_parameters, ec.ECDSA
    ):
        raise ValueError("template must be signed ECDSA with SHA-256")
    signature = signer.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    bit_string = tlv(0x03, b"\x00" + signature)
    return tlv(0x30, new_tbs + algorithm_id + bit_string)
