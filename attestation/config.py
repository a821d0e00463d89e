"""Typed configuration built once by the caller: trust anchors and the city's app identities.

Nothing here reads files or the network. The shipped roots are package data, read through
``importlib.resources``; a revocation list or an MDS3 blob arrives as bytes the caller loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import resources
from types import MappingProxyType

from cryptography import x509

from .chain import AnchorSet
from .result import SecurityLevel

GOOGLE_ROOT_FILES = (
    "google_hardware_attestation_root_2.pem",
    "google_hardware_attestation_root_3.pem",
    "google_hardware_attestation_root_4.pem",
    "google_key_attestation_ca1.pem",
)
APPLE_APP_ATTEST_ROOT_FILES = ("apple_app_attestation_root_ca.pem",)
APPLE_WEBAUTHN_ROOT_FILES = ("apple_webauthn_root_ca.pem",)


def packaged_roots(*names: str) -> tuple[x509.Certificate, ...]:
    """Load root certificates shipped in ``attestation/roots`` (see ``roots/SOURCES.md``)."""
    folder = resources.files("attestation.roots")
    return tuple(
        cert for name in names for cert in x509.load_pem_x509_certificates(folder.joinpath(name).read_bytes())
    )


@dataclass(frozen=True)
class AndroidApp:
    """The city app on Android: package name and the SHA-256 digests of its signing certs."""

    package_name: str
    signing_cert_digests: frozenset[bytes]
    min_security_level: SecurityLevel = SecurityLevel.TEE  # TEE or STRONGBOX

    def __post_init__(self) -> None:
        if not self.package_name:
            raise ValueError("package_name is required")
        if not self.signing_cert_digests or any(len(d) != 32 for d in self.signing_cert_digests):
            raise ValueError("signing_cert_digests must be non-empty SHA-256 digests")
        if self.min_security_level not in (SecurityLevel.TEE, SecurityLevel.STRONGBOX):
            raise ValueError("min_security_level must be TEE or STRONGBOX")


@dataclass(frozen=True)
class AppleApp:
    """The city app on iOS: Team ID and bundle ID; the development AAGUID only if allowed."""

    team_id: str
    bundle_id: str
    allow_development: bool = False

    @property
    def app_id(self) -> str:
        return f"{self.team_id}.{self.bundle_id}"


@dataclass(frozen=True)
class RelyingParty:
    """The WebAuthn relying party: its RP ID and the origins allowed in clientDataJSON."""

    rp_id: str
    origins: frozenset[str]


AppIdentity = AndroidApp | AppleApp | RelyingParty


@dataclass(frozen=True)
class RevocationEntry:
    status: str  # REVOKED / SUSPENDED
    reason: str | None = None


@dataclass(frozen=True)
class RevocationList:
    """Google's attestation status list (``{"entries": {"<hex serial>": {...}}}``) and when
    it was fetched. Serial numbers are matched as integers, so case and zero-padding of the
    hex keys do not matter."""

    entries: Mapping[int, RevocationEntry]
    fetched_at: datetime

    @classmethod
    def from_json(cls, data: bytes | str, *, fetched_at: datetime) -> RevocationList:
        if fetched_at.tzinfo is None:
            raise ValueError("fetched_at must be an aware datetime (UTC)")
        doc = json.loads(data)
        raw = doc.get("entries") if isinstance(doc, dict) else None
        if not isinstance(raw, dict):
            raise ValueError("status list has no 'entries' object")
        entries: dict[int, RevocationEntry] = {}
        for serial, info in raw.items():
            if not isinstance(info, dict) or not isinstance(info.get("status"), str):
                raise ValueError(f"status entry {serial!r} has no status")
            reason = info.get("reason")
            entries[int(serial, 16)] = RevocationEntry(
                status=info["status"], reason=reason if isinstance(reason, str) else None
            )
        return cls(entries=MappingProxyType(entries), fetched_at=fetched_at)


@dataclass(frozen=True)
class WebAuthnTrust:
    """WebAuthn trust anchors: per AAGUID (from a FIDO MDS3 blob, see ``webauthn.load_mds3``)
    and per attestation format (for formats whose AAGUID is all zero, e.g. ``apple``)."""

    roots_by_aaguid: Mapping[bytes, AnchorSet] = field(default_factory=dict)
    roots_by_format: Mapping[str, AnchorSet] = field(default_factory=dict)
    key_protection_by_aaguid: Mapping[bytes, tuple[str, ...]] = field(default_factory=dict)
    compromised_aaguids: frozenset[bytes] = frozenset()
    compromised_certificates: frozenset[bytes] = frozenset()  # DER of compromised attestation certs
    mds_next_update: date | None = None

    @classmethod
    def with_apple_root(cls, **kwargs: object) -> WebAuthnTrust:
        """Trust built from ``kwargs`` plus the shipped Apple WebAuthn root for format ``apple``."""
        trust = cls(**kwargs)  # type: ignore[arg-type]
        formats = dict(trust.roots_by_format)
        formats["apple"] = AnchorSet(packaged_roots(*APPLE_WEBAUTHN_ROOT_FILES))
        return cls(
            roots_by_aaguid=trust.roots_by_aaguid,
            roots_by_format=MappingProxyType(formats),
            key_protection_by_aaguid=trust.key_protection_by_aaguid,
            compromised_aaguids=trust.compromised_aaguids,
            compromised_certificates=trust.compromised_certificates,
            mds_next_update=trust.mds_next_update,
        )


@dataclass(frozen=True)
class TrustStore:
    """Everything the verifiers trust. Build once at start-up and share (it is thread-safe;
    its anchor sets keep a bounded cache of verified intermediate signatures)."""

    google_roots: AnchorSet = field(default_factory=lambda: AnchorSet(()))
    apple_app_attest_roots: AnchorSet = field(default_factory=lambda: AnchorSet(()))
    webauthn: WebAuthnTrust = field(default_factory=WebAuthnTrust)
    android_revocations: RevocationList | None = None
    revocation_max_age: timedelta = timedelta(hours=24)

    @classmethod
    def default(
        cls,
        *,
        android_revocations: RevocationList | None = None,
        webauthn: WebAuthnTrust | None = None,
        revocation_max_age: timedelta = timedelta(hours=24),
    ) -> TrustStore:
        """The real Google and Apple roots shipped with this package."""
        return cls(
            google_roots=AnchorSet(packaged_roots(*GOOGLE_ROOT_FILES)),
            apple_app_attest_roots=AnchorSet(packaged_roots(*APPLE_APP_ATTEST_ROOT_FILES)),
            webauthn=webauthn if webauthn is not None else WebAuthnTrust.with_apple_root(),
            android_revocations=android_revocations,
            revocation_max_age=revocation_max_age,
        )

    @classmethod
    def of(
        cls,
        *,
        google_roots: Iterable[x509.Certificate] = (),
        apple_app_attest_roots: Iterable[x509.Certificate] = (),
        webauthn: WebAuthnTrust | None = None,
        android_revocations: RevocationList | None = None,
        revocation_max_age: timedelta = timedelta(hours=24),
    ) -> TrustStore:
        """A store from explicit certificates (tests, or a deployment pinning its own)."""
        return cls(
            google_roots=AnchorSet(google_roots),
            apple_app_attest_roots=AnchorSet(apple_app_attest_roots),
            webauthn=webauthn if webauthn is not None else WebAuthnTrust(),
            android_revocations=android_revocations,
            revocation_max_age=revocation_max_age,
        )
