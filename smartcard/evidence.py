"""Well-formed attestation evidence from a TEST root made at run time, with knobs to break
each property the verifiers check.

Pure and built on ``cryptography`` alone (the few DER and CBOR structures needed are encoded
here), so the reference device client can use ``make_android_key_attestation`` to give a
hardware-less soft token Android-style attestation under a test root. Nothing made here chains
to a real vendor root: evidence from this module is never "real device" evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

KEY_DESCRIPTION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.1.17")
APPLE_NONCE_OID = x509.ObjectIdentifier("1.2.840.113635.100.8.2")
FIDO_AAGUID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
AAGUID_APP_ATTEST_PRODUCTION = b"appattest" + b"\x00" * 7
AAGUID_APP_ATTEST_DEVELOPMENT = b"appattestdevelop"

SECURITY_LEVELS = {"software": 0, "tee": 1, "strongbox": 2}
BOOT_STATES = {"verified": 0, "self-signed": 1, "unverified": 2, "failed": 3}


# --- minimal DER ---------------------------------------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: bytes, content: bytes) -> bytes:
    return tag + _der_len(len(content)) + content


def _der_int(value: int, tag: int = 0x02) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return _tlv(bytes([tag]), body)


def _der_octets(value: bytes) -> bytes:
    return _tlv(b"\x04", value)


def _der_seq(*items: bytes) -> bytes:
    return _tlv(b"\x30", b"".join(items))


def _der_set(*items: bytes) -> bytes:
    return _tlv(b"\x31", b"".join(sorted(items)))  # DER: SET OF sorted by encoding


def _der_bool(value: bool) -> bytes:
    return _tlv(b"\x01", b"\xff" if value else b"\x00")


def _context(tag: int, content: bytes) -> bytes:
    """``[tag] EXPLICIT``, constructed, context-specific, high tag numbers allowed."""
    if tag < 31:
        return _tlv(bytes([0xA0 | tag]), content)
    digits = []
    while True:
        digits.append(tag & 0x7F)
        tag >>= 7
        if not tag:
            break
    encoded = bytes(d | 0x80 for d in reversed(digits[1:])) + bytes([digits[0]])
    return _tlv(b"\xbf" + encoded, content)


# --- minimal CBOR (RFC 8949, definite lengths) --------------------------------------------


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError("CBOR integer too large")


CborValue = int | bytes | str | list["CborValue"] | dict["CborValue", "CborValue"]


def cbor_encode(value: CborValue) -> bytes:
    """Canonical CBOR for ints, byte and text strings, arrays and maps."""
    if isinstance(value, bool):
        raise TypeError("booleans are not needed here")
    if isinstance(value, int):
        return _cbor_head(0, value) if value >= 0 else _cbor_head(1, -1 - value)
    if isinstance(value, bytes):
        return _cbor_head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode()
        return _cbor_head(3, len(raw)) + raw
    if isinstance(value, list):
        return _cbor_head(4, len(value)) + b"".join(cbor_encode(v) for v in value)
    items = sorted((cbor_encode(k), cbor_encode(v)) for k, v in value.items())
    return _cbor_head(5, len(items)) + b"".join(k + v for k, v in items)


# --- test certificate authorities ------------------------------------------------------------


@dataclass(frozen=True)
class TestCa:
    """A test CA: its key and certificate (the root, or an intermediate below it)."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cityid TEST"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Name,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    path_length: int | None = None,
    key_cert_sign: bool = True,
    extensions: Sequence[x509.ExtensionType] = (),
    serial: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca and key_cert_sign,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_test_root(
    common_name: str = "cityid TEST attestation root",
    *,
    now: datetime | None = None,
    lifetime: timedelta = timedelta(days=3650),
) -> TestCa:
    """A self-signed P-256 test root, valid from a day before ``now`` for ``lifetime``."""
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = _issue(
        subject=name,
        public_key=key.public_key(),
        issuer=name,
        issuer_key=key,
        not_before=now - timedelta(days=1),
        not_after=now + lifetime,
        ca=True,
    )
    return TestCa(key, cert)


def make_intermediate(
    parent: TestCa,
    common_name: str = "cityid TEST attestation intermediate",
    *,
    now: datetime | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    ca: bool = True,
    path_length: int | None = None,
    key_cert_sign: bool = True,
    extensions: Sequence[x509.ExtensionType] = (),
) -> TestCa:
    """A CA certificate issued by ``parent`` (knobs: validity, CA flag, pathLen, keyUsage,
    extra non-critical extensions)."""
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(
        subject=_name(common_name),
        public_key=key.public_key(),
        issuer=parent.certificate.subject,
        issuer_key=parent.key,
        not_before=not_before or now - timedelta(days=1),
        not_after=not_after or now + timedelta(days=365),
        ca=ca,
        path_length=path_length,
        key_cert_sign=key_cert_sign,
        extensions=extensions,
    )
    return TestCa(key, cert)


def _leaf(
    issuer: TestCa,
    public_key: CertificatePublicKeyTypes,
    common_name: str,
    extensions: Sequence[x509.ExtensionType],
    now: datetime,
    not_after: datetime | None = None,
) -> x509.Certificate:
    return _issue(
        subject=_name(common_name),
        public_key=public_key,
        issuer=issuer.certificate.subject,
        issuer_key=issuer.key,
        not_before=now - timedelta(hours=1),
        not_after=not_after or now + timedelta(days=30),
        ca=False,
        extensions=extensions,
    )


# --- Android Key Attestation --------------------------------------------------------------


def key_description(
    *,
    challenge: bytes,
    package: str,
    signing_digests: Sequence[bytes],
    security_level: str = "tee",
    keymint_security_level: str | None = None,
    boot_state: str = "verified",
    locked: bool = True,
    origin: int = 0,
    os_version: int = 140000,
    os_patch_level: int = 202501,
    attestation_version: int = 300,
    model: bytes | None = None,
    app_id_in_hardware_list: bool = False,
) -> bytes:
    """DER of a KeyDescription (source.android.com keystore attestation schema, v300)."""
    level = SECURITY_LEVELS[security_level]
    km_level = SECURITY_LEVELS[keymint_security_level or security_level]
    app_id = _der_seq(
        _der_set(_der_seq(_der_octets(package.encode()), _der_int(1))),
        _der_set(*(_der_octets(d) for d in signing_digests)),
    )
    root_of_trust = _der_seq(
        _der_octets(b"\x11" * 32),
        _der_bool(locked),
        _der_int(BOOT_STATES[boot_state], tag=0x0A),
        _der_octets(b"\x22" * 32),
    )
    app_entry = _context(709, _der_octets(app_id))
    software = [_context(701, _der_int(1_700_000_000_000))]
    hardware = [
        _context(1, _der_set(_der_int(2))),  # purpose SIGN
        _context(2, _der_int(3)),  # algorithm EC
        _context(3, _der_int(256)),
        _context(10, _der_int(1)),  # P-256
        _context(702, _der_int(origin)),
        _context(704, root_of_trust),
        _context(705, _der_int(os_version)),
        _context(706, _der_int(os_patch_level)),
    ]
    if model is not None:
        hardware.append(_context(717, _der_octets(model)))
    (hardware if app_id_in_hardware_list else software).append(app_entry)
    return _der_seq(
        _der_int(attestation_version),
        _der_int(level, tag=0x0A),
        _der_int(attestation_version),
        _der_int(km_level, tag=0x0A),
        _der_octets(challenge),
        _der_octets(b""),
        _der_seq(*software),
        _der_seq(*hardware),
    )


def make_android_key_attestation(
    public_key: CertificatePublicKeyTypes,
    challenge: bytes,
    package: str,
    signing_digest: bytes,
    security_level: str = "tee",
    boot_state: str = "verified",
    locked: bool = True,
    *,
    root: TestCa,
    intermediates: Sequence[TestCa] = (),
    now: datetime | None = None,
    keymint_security_level: str | None = None,
    origin: int = 0,
    os_version: int = 140000,
    os_patch_level: int = 202501,
    model: bytes | None = None,
    leaf_not_after: datetime | None = None,
    include_root: bool = True,
    raw_key_description: bytes | None = None,
) -> list[bytes]:
    """An Android Key Attestation chain (DER, leaf first) for ``public_key``.

    The leaf is signed by the last of ``intermediates`` (a fresh "TEE batch" intermediate
    under ``root`` when none are given). ``raw_key_description`` replaces the extension value.
    """
    now = now or datetime.now(UTC)
    cas = list(intermediates) or [make_intermediate(root, "TEE", now=now)]
    kd = raw_key_description or key_description(
        challenge=challenge,
        package=package,
        signing_digests=[signing_digest],
        security_level=security_level,
        keymint_security_level=keymint_security_level,
        boot_state=boot_state,
        locked=locked,
        origin=origin,
        os_version=os_version,
        os_patch_level=os_patch_level,
        model=model,
    )
    leaf = _leaf(
        cas[-1],
        public_key,
        "Android Keystore Key",
        [x509.UnrecognizedExtension(KEY_DESCRIPTION_OID, kd)],
        now,
        leaf_not_after,
    )
    chain = [leaf.public_bytes(Encoding.DER)]
    chain += [ca.der for ca in reversed(cas)]
    if include_root:
        chain.append(root.der)
    return chain


# --- Apple App Attest -------------------------------------------------------------------------


def _cose_ec2(key: ec.EllipticCurvePublicKey) -> dict[CborValue, CborValue]:
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return {1: 2, 3: -7, -1: 1, -2: point[1:33], -3: point[33:65]}


def authenticator_data(
    *,
    rp_id_hash: bytes,
    flags: int,
    counter: int,
    aaguid: bytes | None = None,
    credential_id: bytes = b"",
    cose_key: dict[CborValue, CborValue] | None = None,
) -> bytes:
    """WebAuthn §6.1 authenticator data (attested credential data when ``aaguid`` is given)."""
    data = rp_id_hash + bytes([flags]) + counter.to_bytes(4, "big")
    if aaguid is not None and cose_key is not None:
        data += aaguid + len(credential_id).to_bytes(2, "big") + credential_id
        data += cbor_encode(cose_key)
    return data


@dataclass(frozen=True)
class AppAttestKey:
    """An App Attest key as the app holds it: key identifier and private key."""

    key_id: bytes
    private_key: ec.EllipticCurvePrivateKey


def make_app_attest_attestation(
    *,
    root: TestCa,
    team_id: str,
    bundle_id: str,
    client_data_hash: bytes,
    now: datetime | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    aaguid: bytes = AAGUID_APP_ATTEST_PRODUCTION,
    counter: int = 0,
    rp_id: str | None = None,
    credential_id: bytes | None = None,
    nonce: bytes | None = None,
    credential_key: ec.EllipticCurvePublicKey | None = None,
    intermediate: TestCa | None = None,
    fmt: str = "apple-appattest",
) -> tuple[bytes, AppAttestKey]:
    """An App Attest attestation object and the key it attests (knobs break each step)."""
    now = now or datetime.now(UTC)
    key = key or ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    key_id = hashlib.sha256(point).digest()
    ca = intermediate or make_intermediate(root, "Apple App Attestation CA 1 (TEST)", now=now)
    auth_data = authenticator_data(
        rp_id_hash=hashlib.sha256((rp_id or f"{team_id}.{bundle_id}").encode()).digest(),
        flags=0x40,
        counter=counter,
        aaguid=aaguid,
        credential_id=key_id if credential_id is None else credential_id,
        cose_key=_cose_ec2(credential_key or key.public_key()),
    )
    nonce = nonce or hashlib.sha256(auth_data + client_data_hash).digest()
    nonce_ext = x509.UnrecognizedExtension(APPLE_NONCE_OID, _der_seq(_context(1, _der_octets(nonce))))
    cred_cert = _leaf(ca, key.public_key(), key_id.hex(), [nonce_ext], now)
    obj = cbor_encode(
        {
            "fmt": fmt,
            "attStmt": {"x5c": [cred_cert.public_bytes(Encoding.DER), ca.der], "receipt": b""},
            "authData": auth_data,
        }
    )
    return obj, AppAttestKey(key_id, key)


def make_app_attest_assertion(
    key: AppAttestKey,
    *,
    team_id: str,
    bundle_id: str,
    client_data: bytes,
    counter: int,
) -> bytes:
    """An App Attest assertion: ECDSA over SHA256(authenticatorData || SHA256(clientData))."""
    auth_data = authenticator_data(
        rp_id_hash=hashlib.sha256(f"{team_id}.{bundle_id}".encode()).digest(),
        flags=0x40,
        counter=counter,
    )
    nonce = hashlib.sha256(auth_data + hashlib.sha256(client_data).digest()).digest()
    signature = key.private_key.sign(nonce, ec.ECDSA(hashes.SHA256()))
    return cbor_encode({"signature": signature, "authenticatorData": auth_data})


# --- WebAuthn packed / apple ------------------------------------------------------------------


def make_packed_attestation(
    *,
    root: TestCa,
    rp_id: str,
    client_data_hash: bytes,
    aaguid: bytes,
    now: datetime | None = None,
    credential_key: ec.EllipticCurvePrivateKey | None = None,
    cert_aaguid: bytes | None = None,
    counter: int = 0,
    flags: int = 0x41,
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A WebAuthn ``packed`` attestation with an x5c batch certificate (WebAuthn L2 §8.2)."""
    now = now or datetime.now(UTC)
    credential_key = credential_key or ec.generate_private_key(ec.SECP256R1())
    batch_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cityid TEST"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
            x509.NameAttribute(NameOID.COMMON_NAME, "cityid TEST authenticator"),
        ]
    )
    batch = _issue(
        subject=subject,
        public_key=batch_key.public_key(),
        issuer=root.certificate.subject,
        issuer_key=root.key,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=365),
        ca=False,
        extensions=[x509.UnrecognizedExtension(FIDO_AAGUID_OID, _der_octets(cert_aaguid or aaguid))],
    )
    auth_data = authenticator_data(
        rp_id_hash=hashlib.sha256(rp_id.encode()).digest(),
        flags=flags,
        counter=counter,
        aaguid=aaguid,
        credential_id=b"cityid-test-credential",
        cose_key=_cose_ec2(credential_key.public_key()),
    )
    sig = batch_key.sign(auth_data + client_data_hash, ec.ECDSA(hashes.SHA256()))
    stmt: dict[CborValue, CborValue] = {
        "alg": -7,
        "sig": sig,
        "x5c": [batch.public_bytes(Encoding.DER)],
    }
    return cbor_encode({"fmt": "packed", "attStmt": stmt, "authData": auth_data}), credential_key


def make_apple_webauthn_attestation(
    *,
    root: TestCa,
    rp_id: str,
    client_data_hash: bytes,
    now: datetime | None = None,
    credential_key: ec.EllipticCurvePrivateKey | None = None,
    cert_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """A WebAuthn ``apple`` anonymous attestation (WebAuthn L2 §8.8); ``cert_key`` differing
    from ``credential_key`` breaks the credCert-key = credential-key rule."""
    now = now or datetime.now(UTC)
    credential_key = credential_key or ec.generate_private_key(ec.SECP256R1())
    cert_key = cert_key or credential_key
    ca = make_intermediate(root, "Apple WebAuthn CA 1 (TEST)", now=now)
    auth_data = authenticator_data(
        rp_id_hash=hashlib.sha256(rp_id.encode()).digest(),
        flags=0x45,
        counter=0,
        aaguid=b"\x00" * 16,
        credential_id=b"cityid-test-apple-credential",
        cose_key=_cose_ec2(credential_key.public_key()),
    )
    nonce = hashlib.sha256(auth_data + client_data_hash).digest()
    nonce_ext = x509.UnrecognizedExtension(APPLE_NONCE_OID, _der_seq(_context(1, _der_octets(nonce))))
    cred_cert = _leaf(ca, cert_key.public_key(), "credCert", [nonce_ext], now)
    stmt: dict[CborValue, CborValue] = {
        "alg": -7,
        "x5c": [cred_cert.public_bytes(Encoding.DER), ca.der],
    }
    return cbor_encode({"fmt": "apple", "attStmt": stmt, "authData": auth_data})
