"""COSE_Key (RFC 9053 §7) → SubjectPublicKeyInfo DER, so keys compare in one form."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import MalformedEvidence

_CURVES: dict[int, ec.EllipticCurve] = {1: ec.SECP256R1(), 2: ec.SECP384R1(), 3: ec.SECP521R1()}


def cose_to_public_key(cose: Mapping[int, object]) -> PublicKeyTypes:
    """Build the public key a COSE_Key describes (EC2, RSA or OKP/Ed25519)."""
    try:
        kty = cose[1]
        if kty == 2:  # RFC 9053 §7.1.1 EC2: crv -1, x -2, y -3
            curve = _CURVES[int(cose[-1])]  # type: ignore[call-overload]
            x, y = cose[-2], cose[-3]
            if not isinstance(x, bytes) or not isinstance(y, bytes):
                raise MalformedEvidence("EC2 key coordinates are not byte strings")
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
        if kty == 3:  # RFC 8230 §4 RSA: n -1, e -2
            n, e = cose[-1], cose[-2]
            if not isinstance(n, bytes) or not isinstance(e, bytes):
                raise MalformedEvidence("RSA key parameters are not byte strings")
            numbers = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big"))
            return numbers.public_key()
        if kty == 1 and cose.get(-1) == 6:  # RFC 9053 §7.2 OKP Ed25519: x -2
            x = cose[-2]
            if not isinstance(x, bytes):
                raise MalformedEvidence("OKP key is not a byte string")
            return ed25519.Ed25519PublicKey.from_public_bytes(x)
    except MalformedEvidence:
        raise
    except (KeyError, ValueError, TypeError) as e:
        raise MalformedEvidence(f"COSE key is invalid: {type(e).__name__}") from None
    raise MalformedEvidence(f"unsupported COSE key type {cose.get(1)!r}")


def cose_to_spki(cose: Mapping[int, object]) -> bytes:
    key = cose_to_public_key(cose)
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
