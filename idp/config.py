"""Configuration: one typed object, read once at start-up.

``cityid.toml`` in the data dir, every key overridable by ``CITYID_<KEY>`` (upper case; nested
tables joined with ``_``, e.g. ``CITYID_SMTP_HOST``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

import idna

LEVEL_LOW = "http://eidas.europa.eu/LoA/low"
LEVEL_SUBSTANTIAL = "http://eidas.europa.eu/LoA/substantial"
LEVEL_HIGH = "http://eidas.europa.eu/LoA/high"


@dataclass(frozen=True)
class SmtpConfig:
    host: str = ""  # empty: write .eml files to <data_dir>/outbox
    port: int = 25
    username: str = ""
    password: str = ""
    starttls: bool = False  # STARTTLS after connecting (RFC 3207), usually port 587
    implicit_tls: bool = False  # TLS from the first byte (RFC 8314 §3.3), usually port 465
    ca_file: str = ""  # PEM certificates to trust for the mail server instead of the system's
    timeout_seconds: int = 15  # per SMTP step; a mail not taken stays in the outbox for a retry
    sender: str = "cityid <noreply@localhost>"


@dataclass(frozen=True)
class BrandingConfig:
    city_name: str = "Musterstadt"
    logo_url: str = ""
    primary_colour: str = "#004b87"
    imprint_url: str = ""
    privacy_url: str = ""
    # Accessibility (BITV 2.0 §§ 4, 7; see docs/citizen-pages.md). Files are plain UTF-8 text,
    # paragraphs separated by a blank line; a video is a .mp4/.webm file or an https:// URL and
    # needs its transcript.
    accessibility_contact: str = ""  # e-mail address the feedback form writes to
    accessibility_statement_date: str = ""  # YYYY-MM-DD of the last review of the statement
    accessibility_statement_file: str = ""  # the city's own text (known limitations, alternatives)
    arbitration_name: str = "Schlichtungsstelle nach dem Behindertengleichstellungsgesetz"
    arbitration_url: str = "https://www.schlichtungsstelle-bgg.de"
    easy_language_file: str = ""  # replaces the default text of /leichte-sprache
    easy_language_video: str = ""
    easy_language_transcript_file: str = ""
    sign_language_video: str = ""  # /gebaerdensprache
    sign_language_transcript_file: str = ""


@dataclass(frozen=True)
class CaConfig:
    root_subject: str = "CN=cityid Root CA,O=Musterstadt,C=DE"
    issuing_subject: str = "CN=cityid Issuing CA 1,O=Musterstadt,C=DE"
    root_validity_days: int = 7300
    issuing_validity_days: int = 1825
    crl_next_update_hours: int = 24
    crl_shards: int = 16
    ocsp_validity_minutes: int = 60
    # certificate policy OIDs live under this arc (pki/certpolicy.py); the default is the RFC 5612
    # documentation placeholder: set an arc under the city's own IANA Private Enterprise Number
    policy_arc: str = "1.3.6.1.4.1.32473.1"
    key_store: str = "file"  # file | pkcs11
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token_label: str = "cityid"
    pkcs11_pin: str = ""


@dataclass(frozen=True)
class InsightsConfig:
    """Counts, never profiles (docs/insights.md). ``[insights]`` in cityid.toml."""

    funnel: bool = True  # count login funnel steps (hourly counters without personal data)
    retention_months: int = 25  # counters older than this are deleted
    min_count: int = 10  # open-data export and dashboard: cells below this are shown as "<k"
    metrics: bool = False  # Prometheus /metrics at all
    # /metrics only on this HOST:PORT (a second listener of `cityid serve`), never on the public
    # bind; empty: on the public bind, and then only with ``metrics_token``
    metrics_bind: str = ""
    metrics_token: str = ""  # bearer token a scraper must send on the public bind


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
    # attribute: each attribute's own AKDB TrustLevel (BundID; one without it is refused);
    # assertion: every attribute at the level of the authentication (eIDAS node, other IdPs)
    saml_attribute_trust: str = "attribute"
    saml_pseudonym_attribute: str = "urn:oid:1.3.6.1.4.1.25484.494450.3"  # BundID bPK2
    # cityid attribute name -> the IdP's SAML attribute Name, over the defaults (docs/levels.md)
    saml_attribute_names: dict[str, str] = field(default_factory=dict)
    saml_xmlsec_binary: str = ""
    # oidc: an upstream OpenID Connect provider
    oidc_issuer: str = ""  # discovery is read from <issuer>/.well-known/openid-configuration
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scope: str = "openid profile"
    oidc_acr_levels: dict[str, str] = field(default_factory=dict)  # upstream acr -> low|substantial|high


@dataclass(frozen=True)
class WalletConfig:
    """The EU digital identity wallet as a route to *high* (``[wallet]``, ``CITYID_WALLET_<KEY>``);
    see docs/wallet.md. Offered next to the ID card connector, or alone."""

    enabled: bool = False
    trust_anchors_file: str = ""  # PEM: the root certificates of the accepted PID providers
    verifier_key_file: str = ""  # PEM private key (EC P-256) of the verifier certificate
    verifier_cert_file: str = ""  # PEM chain, leaf first; its dNSName SAN is the issuer's host
    pid_vct: str = "urn:eudi:pid:1"  # accepted credential types, comma-separated
    # OpenID4VP 1.0 §5.9.3: x509_san_dns (the leaf's dNSName SAN is the issuer's host) or
    # x509_hash (the SHA-256 of the leaf certificate; the prefix HAIP 1.0 requires wallets to support)
    client_id_prefix: str = "x509_san_dns"
    # The trust list holds TEST PID providers (walletsim): every result says SIMULATION, and the
    # issuer must be on 127.0.0.1 or localhost, like the eID simulator.
    simulation: bool = False


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
    # a rotated refresh token presented again this soon by the same client (same DPoP key /
    # certificate) gets the rotation's tokens again instead of revoking the grant; 0: off
    refresh_token_grace_seconds: int = 10
    code_lifetime_seconds: int = 60
    email_verification_hours: int = 24
    password_reset_minutes: int = 30
    mtls_client_cert_header: str = ""  # off unless set, e.g. "X-SSL-Client-Cert"
    dpop_require_nonce: bool = True  # RFC 9449 §8: server-provided nonces
    # /token answered by the fast paths where they are proven (idp.oauth.fast_paths), everything
    # else by Authlib; false: Authlib alone
    fast_paths: bool = True
    # private_key_jwt: accept only the issuer as `aud` (draft-ietf-oauth-rfc7523bis, against
    # audience injection); off: the token and PAR endpoint URLs too (OIDC Core §9, most clients)
    client_assertion_issuer_audience_only: bool = False
    eid_connector: str = ""  # "", simulator, saml, oidc
    eid_simulator_enabled: bool = False
    scope_levels: dict[str, str] = field(
        default_factory=lambda: {
            "payment": LEVEL_SUBSTANTIAL,
            "permits:write": LEVEL_SUBSTANTIAL,
            "sign": LEVEL_SUBSTANTIAL,  # citizen signatures (docs/signing.md)
        }
    )
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    branding: BrandingConfig = field(default_factory=BrandingConfig)
    ca: CaConfig = field(default_factory=CaConfig)
    eid: EidConfig = field(default_factory=EidConfig)
    wallet: WalletConfig = field(default_factory=WalletConfig)
    smartcard: SmartcardConfig = field(default_factory=SmartcardConfig)
    webauthn: WebAuthnConfig = field(default_factory=WebAuthnConfig)
    insights: InsightsConfig = field(default_factory=InsightsConfig)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cityid.sqlite3').resolve()}"

    @property
    def database_missing(self) -> bool:
        """No embedded SQLite file yet (opening one creates it, empty): `cityid init` is due."""
        return not self.database_url and not (self.data_dir / "cityid.sqlite3").exists()

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def issuer_problem(issuer: str) -> str | None:
    """What is wrong with ``issuer`` as cityid's public base URL, or None.

    RFC 8414 §2 and OIDC Discovery §3: an https URL without query or fragment. Plain http is
    accepted on a loopback host only, for development (the demo, the tests). cityid builds every
    URL it publishes from the issuer, never from the request's Host header.
    """
    try:
        parts = urlsplit(issuer)
        hostname = parts.hostname
    except ValueError:
        return f"the issuer {issuer!r} is not a URL"
    if parts.scheme not in ("https", "http") or not hostname:
        return f"the issuer {issuer!r} must be an https:// URL (RFC 8414 §2)"
    if parts.scheme == "http" and hostname not in LOOPBACK_HOSTS:
        return (
            f"the issuer {issuer!r} must be an https:// URL (RFC 8414 §2); plain http is only for "
            "development on 127.0.0.1 or localhost. Put a TLS-terminating proxy in front and set "
            "the issuer to its public https:// address"
        )
    if parts.query or parts.fragment or "?" in issuer or "#" in issuer:
        return f"the issuer {issuer!r} must have no query or fragment (RFC 8414 §2)"
    if issuer.endswith("/"):
        return f"the issuer {issuer!r} must not end with '/' (endpoints are <issuer>/token, …)"
    if parts.path or parts.username is not None or parts.password is not None:
        # cityid's pages, redirects and endpoints live at the root of its host name
        return f"the issuer {issuer!r} must be the root of a host name, e.g. https://login.musterstadt.de"
    try:
        port = parts.port
    except ValueError:
        return f"the issuer {issuer!r} has an invalid port"
    if not hostname.isascii():
        try:
            hostname = idna.encode(hostname, uts46=True).decode()  # browsers send the xn-- form
        except idna.IDNAError:
            return f"the issuer {issuer!r} has an invalid host name"
    browser_origin = f"{parts.scheme}://{_host_for_url(hostname)}"
    if port is not None and port != {"https": 443, "http": 80}[parts.scheme]:
        browser_origin += f":{port}"
    if issuer != browser_origin:
        # WebAuthn compares the browser's origin with the issuer character for character
        return f"the issuer {issuer!r} must be written as browsers write origins: {browser_origin}"
    return None


# `[scope_levels]` (and CITYID_SCOPE_LEVELS) take a level by name, as `cityid client add
# --scope-level` does, or its eIDAS acr URI.
LEVEL_BY_NAME = {"low": LEVEL_LOW, "substantial": LEVEL_SUBSTANTIAL, "high": LEVEL_HIGH}


def scope_levels_problem(levels: dict[str, str]) -> str | None:
    """Why a ``[scope_levels]`` entry cannot be used, or None. Checked before serving: an entry
    that would be skipped would release its scope at level low."""
    for scope, level in levels.items():
        if level not in LEVEL_BY_NAME.values():
            return f"[scope_levels] {scope} = {level!r}: use low, substantial or high (or an eIDAS acr URI)"
    return None


def smtp_problem(smtp: SmtpConfig) -> str | None:
    """Why ``[smtp]`` cannot be used as configured, or None. Checked before serving."""
    if not smtp.host:
        return None  # development: .eml files in the data dir
    if smtp.starttls and smtp.implicit_tls:
        return "[smtp] starttls and implicit_tls are exclusive: port 587 uses starttls, port 465 implicit_tls"
    if smtp.username and not (smtp.starttls or smtp.implicit_tls) and smtp.host not in LOOPBACK_HOSTS:
        # RFC 8314 §3, RFC 4954 §4: no password over an unencrypted connection
        return (
            f"[smtp] would send its password to {smtp.host} unencrypted: set implicit_tls = true "
            "(port 465) or starttls = true (port 587)"
        )
    if smtp.ca_file and not Path(smtp.ca_file).is_file():
        return f"[smtp] ca_file {smtp.ca_file!r} is not a readable file"
    return None


# WCAG 2.1 1.4.3 (text 4.5:1) and 1.4.11 (focus indicator 3:1): the city colour is the background
# of white text (header, buttons), the colour of links on white, and the ground the focus ring
# (--focus in cityid.css) is drawn on.
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?")
FOCUS_COLOUR = "#ffbf47"
TEXT_CONTRAST, FOCUS_CONTRAST = 4.5, 3.0
VIDEO_SUFFIXES = {".mp4": "video/mp4", ".webm": "video/webm"}
MAX_TEXT_FILE = 200_000


def _luminance(colour: str) -> float:
    """WCAG 2.1 relative luminance of an sRGB hex colour (#rgb or #rrggbb)."""
    hexdigits = colour[1:]
    if len(hexdigits) == 3:
        hexdigits = "".join(c * 2 for c in hexdigits)
    channels = [int(hexdigits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2.1 contrast ratio (L1 + 0.05) / (L2 + 0.05) of two hex colours."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _is_address(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() or c in '<>(),;:"' for c in value))


def _text_file_problem(name: str, path: str) -> str | None:
    if not path:
        return None
    p = Path(path)
    try:
        if p.stat().st_size > MAX_TEXT_FILE:
            return f"setting branding.{name} = {path!r}: the file is larger than {MAX_TEXT_FILE} bytes"
        p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"setting branding.{name} = {path!r}: not a readable UTF-8 text file ({exc})"
    return None


def _video_problem(name: str, video: str, transcript: str) -> str | None:
    if not video:
        return None if not transcript else f"setting branding.{name}: a transcript without a video"
    if "://" in video:
        parts = urlsplit(video)
        if parts.scheme != "https" or not parts.hostname:
            return f"setting branding.{name} = {video!r}: an https:// URL or a video file is needed"
    elif Path(video).suffix.lower() not in VIDEO_SUFFIXES or not Path(video).is_file():
        return f"setting branding.{name} = {video!r}: not a readable .mp4 or .webm file"
    if not transcript:
        # WCAG 2.1 1.2.1 / 1.2.3: a video needs a text alternative
        transcript_setting = name.replace("video", "transcript_file")
        return f"setting branding.{name} needs its transcript: set branding.{transcript_setting}"
    return None


def branding_problem(b: BrandingConfig, issuer: str) -> str | None:
    """Why ``[branding]`` would make pages that fail BITV 2.0 / WCAG 2.1, or None."""
    if not HEX_COLOUR.fullmatch(b.primary_colour):
        return (
            f"setting branding.primary_colour = {b.primary_colour!r}: a hex colour such as #004b87 is needed"
        )
    text = contrast(b.primary_colour, "#ffffff")
    if text < TEXT_CONTRAST:  # WCAG 2.1 1.4.3
        return (
            f"setting branding.primary_colour = {b.primary_colour!r} has {text:.2f}:1 contrast against white "
            f"text; at least {TEXT_CONTRAST}:1 is needed (WCAG 2.1 1.4.3): choose a darker colour"
        )
    ring = contrast(b.primary_colour, FOCUS_COLOUR)
    if ring < FOCUS_CONTRAST:  # WCAG 2.1 1.4.11
        return (
            f"setting branding.primary_colour = {b.primary_colour!r} has {ring:.2f}:1 contrast against the "
            f"focus ring {FOCUS_COLOUR}; at least {FOCUS_CONTRAST}:1 is needed (WCAG 2.1 1.4.11)"
        )
    if b.accessibility_contact and not _is_address(b.accessibility_contact):
        return (
            f"setting branding.accessibility_contact = {b.accessibility_contact!r}: "
            "an e-mail address is needed"
        )
    if not b.accessibility_contact and urlsplit(issuer).hostname not in LOOPBACK_HOSTS:
        # BITV 2.0 §7 (1) 2: the statement must offer a feedback mechanism that reaches the city
        return (
            "setting branding.accessibility_contact is needed: the accessibility statement's feedback "
            "form (BITV 2.0 §7) writes to this address"
        )
    if b.accessibility_statement_date:
        try:
            dt.date.fromisoformat(b.accessibility_statement_date)
        except ValueError:
            return (
                f"setting branding.accessibility_statement_date = {b.accessibility_statement_date!r}: "
                "use YYYY-MM-DD"
            )
    for name in ("arbitration_url", "imprint_url", "privacy_url"):
        value = getattr(b, name)
        if value and urlsplit(value).scheme not in ("https", "http"):
            return f"setting branding.{name} = {value!r}: an http(s) URL is needed"
    if not b.arbitration_url or not b.arbitration_name:
        return "settings branding.arbitration_name and arbitration_url are needed (BITV 2.0 §7 (1) 3)"
    for name in ("accessibility_statement_file", "easy_language_file"):
        problem = _text_file_problem(name, getattr(b, name))
        if problem:
            return problem
    for video in ("easy_language_video", "sign_language_video"):
        transcript = video.replace("video", "transcript_file")
        problem = _video_problem(video, getattr(b, video), getattr(b, transcript)) or _text_file_problem(
            transcript, getattr(b, transcript)
        )
        if problem:
            return problem
    return None


EID_CONNECTORS = ("", "simulator", "saml", "oidc")
SAML_CONTEXT_NAMES = ("eidas", "bundid")
SAML_ATTRIBUTE_TRUST = ("attribute", "assertion")


def eid_problem(cfg: Config) -> str | None:
    """Why the eID connector cannot be used as configured, or None. Checked before serving
    (``cityid serve`` and app creation): a SAML IdP's metadata is read and must offer a single
    sign-on service this SP can use, so that no login fails later with a server error."""
    if cfg.eid_connector not in EID_CONNECTORS:
        return f"eid_connector = {cfg.eid_connector!r}: use simulator, saml or oidc (or leave it empty)"
    if cfg.eid_connector != "saml":
        return None
    e = cfg.eid
    if e.saml_context_names not in SAML_CONTEXT_NAMES:
        return f"[eid] saml_context_names = {e.saml_context_names!r}: use eidas or bundid"
    if e.saml_attribute_trust not in SAML_ATTRIBUTE_TRUST:
        return f"[eid] saml_attribute_trust = {e.saml_attribute_trust!r}: use attribute (BundID) or assertion"
    if not e.saml_idp_entity_id:
        return "[eid] saml_idp_entity_id is needed for eid_connector = saml"
    for name in ("saml_sp_key_file", "saml_sp_cert_file", "saml_idp_metadata_file"):
        path = getattr(e, name)
        if not path or not Path(path).is_file():
            return f"[eid] {name} = {path!r} is not a readable file"
    from idp.eid import saml  # pysaml2 only where SAML is configured
    from idp.eid.errors import MetadataUnusable

    pseudonym = e.saml_pseudonym_attribute
    if not pseudonym.strip() or pseudonym != pseudonym.strip():
        return f"[eid] saml_pseudonym_attribute = {pseudonym!r}: the SAML attribute Name is needed"
    names = saml.attribute_names(e.saml_attribute_names)
    for ours, theirs in e.saml_attribute_names.items():
        if ours not in saml.KNOWN_ATTRIBUTES:
            known = ", ".join(saml.KNOWN_ATTRIBUTES)
            return f"[eid.saml_attribute_names] {ours!r} is not an attribute cityid knows ({known})"
        if not theirs.strip() or theirs != theirs.strip():
            return f"[eid.saml_attribute_names] {ours} = {theirs!r}: the SAML attribute Name is needed"
    values = list(names.values())
    for ours, theirs in names.items():
        if values.count(theirs) > 1:
            return f"[eid.saml_attribute_names] {theirs!r} is given to two attributes"
        if theirs == pseudonym:
            return f"[eid.saml_attribute_names] {ours} = {theirs!r} is the pseudonym attribute"
    if (problem := saml.key_pair_problem(e.saml_sp_key_file, e.saml_sp_cert_file)) is not None:
        return f"[eid] saml_sp_key_file / saml_sp_cert_file: {problem}"
    try:
        saml.load_client(saml.settings_from_config(cfg))
    except MetadataUnusable as exc:
        return f"[eid] saml_idp_metadata_file: {exc.detail}"
    except Exception as exc:  # e.g. no xmlsec1  # noqa: BLE001
        return f"[eid] the SAML connector cannot be set up: {exc}"
    return None


# settings a running server needs above zero (0 would mean: expired on issue)
_POSITIVE = (
    "session_lifetime_minutes",
    "access_token_lifetime_seconds",
    "id_token_lifetime_seconds",
    "refresh_token_lifetime_days",
    "code_lifetime_seconds",
    "email_verification_hours",
    "password_reset_minutes",
)
MIN_SECRET_LENGTH = 32
MAX_REFRESH_GRACE_SECONDS = 300  # a retry comes within seconds; longer only helps a thief


def serve_problem(cfg: Config) -> str | None:
    """Why ``cityid serve`` must not start with ``cfg``, or None: the issuer, mail, scope levels,
    branding (contrast, accessibility statement), lifetimes, secrets, the eID simulator outside
    development, the eID connector's settings."""
    problem = issuer_problem(cfg.issuer) or smtp_problem(cfg.smtp) or scope_levels_problem(cfg.scope_levels)
    if problem is not None:
        return problem
    for name in _POSITIVE:
        if getattr(cfg, name) <= 0:
            return f"setting {name} must be above 0"
    if not 0 <= cfg.refresh_token_grace_seconds <= MAX_REFRESH_GRACE_SECONDS:
        return (
            f"setting refresh_token_grace_seconds = {cfg.refresh_token_grace_seconds}: "
            f"0 (off) to {MAX_REFRESH_GRACE_SECONDS} seconds"
        )
    if cfg.smtp.host and not 0 < cfg.smtp.port < 65536:
        return f"setting smtp.port = {cfg.smtp.port}: a port from 1 to 65535 is needed"
    for name in ("secret_key", "key_passphrase"):
        if len(getattr(cfg, name)) < MIN_SECRET_LENGTH:
            return f"setting {name} is shorter than {MIN_SECRET_LENGTH} characters: run `cityid init` for one"
    simulator = cfg.eid_connector == "simulator" or cfg.eid_simulator_enabled or cfg.wallet.simulation
    if simulator and urlsplit(cfg.issuer).hostname not in LOOPBACK_HOSTS:
        # the simulator reports whatever eID level its user picks: anyone would reach *high*
        return "the eID simulator is for development only (an issuer on 127.0.0.1 or localhost)"
    return eid_problem(cfg) or branding_problem(cfg.branding, cfg.issuer) or wallet_problem(cfg)


def wallet_problem(cfg: Config) -> str | None:
    """Why the wallet route cannot be used as configured (docs/wallet.md), or None."""
    w = cfg.wallet
    if not w.enabled:
        return None
    for name in ("trust_anchors_file", "verifier_key_file", "verifier_cert_file"):
        path = getattr(w, name)
        if not path or not Path(path).is_file():
            return f"[wallet] {name} = {path!r} is not a readable file"
    from idp.eid.wallet.connector import load_verifier  # cryptography only

    try:
        load_verifier(cfg)
    except ValueError as exc:
        return f"[wallet] {exc}"
    return None


def _host_for_url(hostname: str) -> str:
    return f"[{hostname}]" if ":" in hostname else hostname


class ConfigError(ValueError):
    """A setting in cityid.toml or a CITYID_* variable that cannot be used; names the setting."""


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _coerce(name: str, value: str, typ: Any) -> Any:
    """A CITYID_* variable's text as the setting's type; anything unclear is refused (a typo such
    as `flase` must not switch a security setting off)."""
    if typ is bool:
        word = value.strip().lower()
        if word not in _TRUE + _FALSE:
            raise ConfigError(f"{name}={value!r}: use true or false")
        return word in _TRUE
    if typ is int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ConfigError(f"{name}={value!r}: a whole number is needed") from None
        return _checked(name, number, int)
    if typ == dict[str, str]:
        pairs = [item.strip() for item in value.split(",") if item.strip()]
        if any("=" not in item or not item.split("=", 1)[0].strip() for item in pairs):
            raise ConfigError(f"{name}={value!r}: use key=value pairs separated by commas")
        return {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in pairs)}
    if typ is Path:
        return Path(value)
    return value


def _checked(name: str, value: Any, typ: Any) -> Any:
    """A cityid.toml value of the setting's type, or ConfigError naming the setting."""
    if typ is bool:
        ok = isinstance(value, bool)  # "false" in quotes is a string, and would count as true
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31
    elif typ is str or typ is Path:
        ok = isinstance(value, str)
    elif typ == dict[str, str]:
        ok = isinstance(value, dict) and all(isinstance(v, str) and k for k, v in value.items())
    else:
        ok = True
    if not ok:
        kind = {bool: "true or false", int: "a whole number from 0", str: "text", Path: "a path"}.get(
            typ, "a table of text values"
        )
        raise ConfigError(f"setting {name} = {value!r}: {kind} is needed")
    return Path(value) if typ is Path else value


def _build(cls: Any, data: dict[str, Any], env_prefix: str, section: str = "") -> Any:
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:  # a misspelt setting would otherwise be ignored, its default silently in force
        raise ConfigError(f"unknown setting {section}{unknown[0]} in cityid.toml")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        env_key = f"{env_prefix}{f.name.upper()}"
        if dataclasses.is_dataclass(typ):
            table = data.get(f.name, {}) or {}
            if not isinstance(table, dict):
                raise ConfigError(f"setting {f.name} must be a table ([{f.name}])")
            kwargs[f.name] = _build(typ, table, f"{env_key}_", f"{f.name}.")
            continue
        if env_key in os.environ:
            kwargs[f.name] = _coerce(env_key, os.environ[env_key], typ)
        elif f.name in data:
            kwargs[f.name] = _checked(f"{section}{f.name}", data[f.name], typ)
    return cls(**kwargs)


def load_config(data_dir: Path | str | None = None) -> Config:
    """Read ``cityid.toml`` from the data dir, then apply ``CITYID_*`` overrides."""
    base = Path(data_dir or os.environ.get("CITYID_DATA_DIR", ".cityid-data"))
    data: dict[str, Any] = {}
    toml_path = base / "cityid.toml"
    if toml_path.exists():
        try:
            data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{toml_path} cannot be read: {exc}") from None
    data["data_dir"] = str(base)
    cfg: Config = _build(Config, data, "CITYID_")
    levels = {
        scope: LEVEL_BY_NAME.get(str(v).strip().lower(), str(v).strip())
        for scope, v in cfg.scope_levels.items()
    }
    return dataclasses.replace(cfg, data_dir=base, scope_levels=levels)
