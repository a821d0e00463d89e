"""ASN.1 schemas (asn1crypto) for the attestation extensions fido2 does not parse.

Android: KeyDescription, RootOfTrust, AttestationApplicationId (source.android.com keystore
attestation schema). Apple App Attest: the nonce extension 1.2.840.113635.100.8.2.
"""

# asn1crypto ships no type hints, so its base classes are Any to mypy.
# mypy: disable-error-code="misc"

from __future__ import annotations

from asn1crypto import core


class _EnumInt(core.Integer):
    """An ENUMERATED read as its integer (asn1crypto's Enumerated wants a closed name map)."""

    tag = 10


class RootOfTrustSchema(core.Sequence):
    _fields = [
        ("verifiedBootKey", core.OctetString),
        ("deviceLocked", core.Boolean),
        ("verifiedBootState", _EnumInt),
        ("verifiedBootHash", core.OctetString, {"optional": True}),
    ]


class _PackageInfo(core.Sequence):
    _fields = [("package_name", core.OctetString), ("version", core.Integer)]


class _PackageInfos(core.SetOf):
    _child_spec = _PackageInfo


class _Digests(core.SetOf):
    _child_spec = core.OctetString


class AttestationApplicationIdSchema(core.Sequence):
    _fields = [("package_infos", _PackageInfos), ("signature_digests", _Digests)]


class KeyDescriptionSchema(core.Sequence):
    _fields = [
        ("attestationVersion", core.Integer),
        ("attestationSecurityLevel", _EnumInt),
        ("keyMintVersion", core.Integer),
        ("keyMintSecurityLevel", _EnumInt),
        ("attestationChallenge", core.OctetString),
        ("uniqueId", core.OctetString),
        ("softwareEnforced", core.Any),
        ("hardwareEnforced", core.Any),
    ]


class AppleNonceSchema(core.Sequence):
    """App Attest credCert extension 1.2.840.113635.100.8.2: SEQUENCE { [1] OCTET STRING }."""

    _fields = [("nonce", core.OctetString, {"explicit": 1})]
