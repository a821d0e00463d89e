"""Certificate serial numbers (RFC 5280 §4.1.2.2) and their canonical text form."""

from __future__ import annotations

import secrets

from pki.errors import UnknownCertificate

SERIAL_BITS = 159  # < 2**159: positive and at most 20 octets in DER, with >= 128 random bits


def new_serial() -> int:
    """A random positive serial: RFC 5280 §4.1.2.2 (positive, ≤ 20 octets), CA/B BR §7.1 (≥ 64
    bits of CSPRNG output; we use 159)."""
    while True:
        serial = secrets.randbits(SERIAL_BITS)
        if serial > 0:  # RFC 5280 §4.1.2.2: MUST be a positive integer
            return serial


def serial_hex(serial: int) -> str:
    return format(serial, "040x")


def parse_serial(text: str) -> str:
    """Canonical form of a serial typed by a person: hex, with or without colons or ``0x``."""
    cleaned = text.strip().lower().replace(":", "").replace(" ", "")
    cleaned = cleaned.removeprefix("0x")
    try:
        value = int(cleaned, 16)
    except ValueError as exc:
        raise UnknownCertificate(f"not a hexadecimal serial: {text[:60]!r}") from exc
    if not 0 < value < 2**160:
        raise UnknownCertificate(f"serial out of range: {text[:60]!r}")
    return serial_hex(value)
