"""Configuration: one typed object, read once at start-up.

``cityid.toml`` in the data dir, every key overridable by ``CITYID_<KEY>`` (upper case; nested
tables joined with ``_``, e.g. ``CITYID_SMTP_HOST``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

LEVEL_LOW = "http://eidas.europa.eu/LoA/low"
LEVEL_SUBSTANTIAL = "http://eidas.europa.eu/LoA/substantial"
LEVEL_HIGH = "http://eidas.europa.eu/LoA/high"


@dataclass(frozen=True)
class SmtpConfig:
    host: str = ""  # empty: write .eml files to <data_dir>/outbox
    port: int = 25
    username: str = ""
    password: str = ""
    starttls: bool = False
    sender: str = "cityid <noreply@localhost>"


@dataclass(frozen=True)
class BrandingConfig:
    city_name: str = "Musterstadt"
    logo_url: str = ""
    primary_colour: str = "#004b87"
    imprint_url: str = ""
    privacy_url: str = ""


@dataclass(frozen=True)
class CaConfig:
    root_subject: str = "CN=cityid Root CA,O=Musterstadt,C=DE"
    issuing_subject: str = "CN=cityid Issuing CA 1,O=Musterstadt,C=DE"
    root_validity_days: int = 7300
    issuing_validity_days: int = 1825
    crl_next_update_hours: int = 24
    crl_shards: int = 16
    ocsp_validity_minutes: int = 60
    key_store: str = "file"  # file | pkcs11
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token_label: str = "cityid"
    pkcs11_pin: str = ""


@dataclass(frozen=True)
class EidConfig:
    """eID connector settings (``[eid]`` in cityid.toml, ``CITYID_EID_<KEY>``); see docs/levels.md.

    The connector itself is chosen by ``Config.eid_connector``."""

    sector: str = ""  # simulator pseudonym sector; empty: the issuer
    # saml: BundID-style SAML 2.0 SP
    saml_sp_entity_id: str = ""  # empty: <issuer>/login/eid/saml
    saml_sp_key_file: str = ""
    saml_sp_cert_file: str = ""
    saml_idp_entity_id: str = ""
    saml_idp_metadata_file: str = ""
    saml_context_names: str = "eidas"  # eidas (eIDAS LoA URIs) | bundid (STORK-QAA-Level-n)
    saml_xmlsec_binary: str = ""
    # oidc: an upstream OpenID Connect provider
    oidc_issuer: str = ""  # discovery is read from <issuer>/.well-known/openid-configuration
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scope: str = "openid profile"
    oidc_acr_levels: dict[str, str] = field(default_factory=dict)  # upstream acr -> low|substantial|high


@dataclass(frozen=True)
class WebAuthnConfig:
    """WebAuthn relying party (``[webauthn]`` in cityid.toml, ``CITYID_WEBAUTHN_<KEY>``); see
    docs/webauthn.md. Without an MDS3 blob no authenticator attests to *substantial*."""

    rp_id: str = ""  # empty: the issuer's host name
    rp_name: str = ""  # empty: the city account's name
    mds3_blob_file: str = ""  # FIDO MDS3 blob (the JWT as downloaded): trust anchors by AAGUID
    mds3_root_file: str = ""  # PEM of the root that signs the blob (FIDO Alliance MDS root)
    attestation_formats: str = "packed,tpm,fido-u2f,apple,none"  # comma-separated; others refused


@dataclass(frozen=True)
class SmartcardConfig:
    """Virtual smartcards (``[smartcard]``, ``CITYID_SMARTCARD_<KEY>``): the city app's identity,
    extra attestation trust anchors (e.g. a TEST root: never trusted unless configured here)."""

    android_package: str = ""
    android_signing_digests: str = ""  # comma-separated hex SHA-256 of the APK signing certs
    apple_team_id: str = ""
    apple_bundle_id: str = ""
    extra_android_roots_file: str = ""  # PEM; added to the shipped Google roots
    vendor_roots: bool = True  # trust the shipped Google / Apple roots
    challenge_ttl_seconds: int = 300
    allow_software_keys: bool = True  # enrolled at most at *low*
    renew_before_days: int = 30
    renew_requires_attestation: bool = False
    certificate_validity_days: int = 0  # 0: the device-auth profile's default


@dataclass(frozen=True)
class SmartcardConfig:
    """Virtual smartcards (``[smartcard]``, ``CITYID_SMARTCARD_<KEY>``): the city app's identity,
    extra attestation trust anchors (e.g. a TEST root: never trusted unless configured here)."""

    android_package: str = ""
    android_signing_digests: str = ""  # comma-separated hex SHA-256 of the APK signing certs
    apple_team_id: str = ""
    apple_bundle_id: str = ""
    extra_android_roots_file: str = ""  # PEM; added to the shipped Google roots
    vendor_roots: bool = True  # trust the shipped Google / Apple roots
    android_revocation_list_file: str = ""  # Google's attestation status list (JSON), kept fresh by cron
    challenge_ttl_seconds: int = 300
    allow_software_keys: bool = True  # enrolled at most at *low*
    renew_before_days: int = 30
    renew_requires_attestation: bool = False
    certificate_validity_days: int = 0  # 0: the device-auth profile's default


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path(".cityid-data")
    database_url: str = ""  # empty: SQLite in the data dir
    issuer: str = "http://127.0.0.1:8000"
    secret_key: str = ""  # keys sessions, CSRF, blind indexes; generated by `cityid init`
    key_passphrase: str = ""  # encrypts private keys at rest; generated by `cityid init`
    session_lifetime_minutes: int = 480
    access_token_lifetime_seconds: int = 600
    id_token_lifetime_seconds: int = 600
    refresh_token_lifetime_days: int = 30
    code_lifetime_seconds: int = 60
    email_verification_hours: int = 24
    password_reset_minutes: int = 30
    trusted_proxy_count: int = 0
    mtls_client_cert_header: str = ""  # off unless set, e.g. "X-SSL-Client-Cert"
    dpop_require_nonce: bool = True  # RFC 9449 §8: server-provided nonces
    eid_connector: str = ""  # "", simulator, saml, oidc
    eid_simulator_enabled: bool = False
    scope_levels: dict[str, str] = field(
        default_factory=lambda: {"payment": LEVEL_SUBSTANTIAL, "permits:write": LEVEL_SUBSTANTIAL}
    )
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    branding: BrandingConfig = field(default_factory=BrandingConfig)
    ca: CaConfig = field(default_factory=CaConfig)
    eid: EidConfig = field(default_factory=EidConfig)
    smartcard: SmartcardConfig = field(default_factory=SmartcardConfig)
    smartcard: SmartcardConfig = field(default_factory=SmartcardConfig)
    webauthn: WebAuthnConfig = field(default_factory=WebAuthnConfig)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cityid.sqlite3').resolve()}"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"


def _coerce(value: str, typ: Any) -> Any:
    if typ is bool:
        return value.strip().lower() in ("1", "true", "yes", "on")
    if typ is int:
        return int(value)
    if typ is Path:
        return Path(value)
    return value


def _build(cls: Any, data: dict[str, Any], env_prefix: str) -> Any:
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        env_key = f"{env_prefix}{f.name.upper()}"
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = _build(typ, data.get(f.name, {}) or {}, f"{env_key}_")
            continue
        if env_key in os.environ:
            raw = os.environ[env_key]
            if typ == dict[str, str]:
                kwargs[f.name] = dict(item.split("=", 1) for item in raw.split(",") if "=" in item)
            else:
                kwargs[f.name] = _coerce(raw, typ)
        elif f.name in data:
            kwargs[f.name] = Path(data[f.name]) if typ is Path else data[f.name]
    return cls(**kwargs)


def load_config(data_dir: Path | str | None = None) -> Config:
    """Read ``cityid.toml`` from the data dir, then apply ``CITYID_*`` overrides."""
    base = Path(data_dir or os.environ.get("CITYID_DATA_DIR", ".cityid-data"))
    data: dict[str, Any] = {}
    toml_path = base / "cityid.toml"
    if toml_path.exists():
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    data["data_dir"] = str(base)
    cfg: Config = _build(Config, data, "CITYID_")
    return dataclasses.replace(cfg, data_dir=base)
