"""WebAuthn ceremonies for cityid: registration and authentication (step-up) through
``fido2.server.Fido2Server``, with ``attestation/`` as its attestation verifier. No Flask.

What reaches which level (ARCHITECTURE.md, docs/webauthn.md): a credential's attestation is
verified to a trust anchor (FIDO MDS3 by AAGUID, or per format); the resulting security level
goes through ``policies.assess_device``. A passkey without acceptable attestation (``none``,
self attestation, or a path to no configured anchor) is kept, but at *low*: it never lifts a
session to *substantial*. Forged or inconsistent evidence is refused outright.

fido2 runs every check of WebAuthn L2 §7.1 / §7.2 it implements; the checks that must fail
with a distinct, audited error (client data type, challenge, origin, RP ID, flags, credential
ownership) are made here first, each beside its spec step. Ceremony state lives in
``webauthn_challenge``: bound to the browser session and account, a few minutes, one use.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from fido2 import cbor
from fido2.cose import CoseKey, UnsupportedKey
from fido2.server import Fido2Server
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    AttestationConveyancePreference,
    AttestationObject,
    AttestedCredentialData,
    AuthenticationResponse,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
    RegistrationResponse,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from attestation import (
    AttestationError,
    AttestationResult,
    CertificateExpired,
    ChainInvalid,
    RelyingParty,
    UntrustedRoot,
    WebAuthnTrust,
    load_mds3,
    verify_webauthn,
)
from idp.crypto import equal
from idp.instance import InstanceKeys
from idp.webauthn_models import WebAuthnChallenge, WebAuthnCredential
from policies import DeviceAttestationFacts, Level, WebAuthnFacts, assess_device

CHALLENGE_TTL = timedelta(minutes=5)  # WebAuthn L2 §5.4.1 / §15: a few minutes suffices
MAX_CREDENTIALS = 10  # per account: bounds the allowCredentials list and the table
MAX_NAME = 64
FORMATS = frozenset({"packed", "tpm", "fido-u2f", "apple", "none"})
# Attestation that proves nothing about hardware, though not forged: the credential is kept
# at the level of a software key (WebAuthn L2 §7.1 step 21: "the Relying Party SHOULD treat
# the credential as one with self attestation" or refuse it; cityid keeps it, at *low*).
_UNPROVEN = (UntrustedRoot, ChainInvalid, CertificateExpired)


# --------------------------------------------------------------------------- errors


def N_(message: str) -> str:
    """Marks a text for the catalogues (`make messages` extracts N_); this module knows no Flask,
    so the edge (idp/views/webauthn.py) translates it into the citizen's language."""
    return message


class WebAuthnError(Exception):
    """A refused ceremony. ``error``: stable code for the JSON answer and the audit log;
    ``description``: for the citizen's browser (an English msgid, translated at the edge with
    ``params``); ``detail``: for the audit log only."""

    error = "invalid_request"
    status = 400

    def __init__(
        self, description: str, detail: str = "", *, params: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.description = description
        self.detail = detail or description
        self.params = dict(params or {})


class MalformedResponse(WebAuthnError):
    error = "invalid_request"


class ChallengeUnknown(WebAuthnError):
    """Unknown, expired, already used, or started by another browser session or account."""

    error = "invalid_challenge"


class OriginMismatch(WebAuthnError):
    error = "invalid_origin"


class RpIdMismatch(WebAuthnError):
    error = "invalid_rp_id"


class UserNotPresent(WebAuthnError):
    error = "user_presence_required"


class CredentialUnknown(WebAuthnError):
    error = "unknown_credential"


class CredentialNotAllowed(WebAuthnError):
    """The credential is registered, but to another account."""

    error = "credential_not_allowed"
    status = 403


class CredentialExists(WebAuthnError):
    error = "credential_exists"
    status = 409


class TooManyCredentials(WebAuthnError):
    error = "too_many_credentials"
    status = 409


class SignatureInvalid(WebAuthnError):
    error = "invalid_signature"


class SignCountRegression(WebAuthnError):
    """WebAuthn L2 §6.1.1: a counter that did not increase signals a cloned authenticator."""

    error = "cloned_authenticator"
    status = 403


class StepUpRequired(WebAuthnError):
    """Adding a key next to one that reaches substantial needs that level in the session."""

    error = "step_up_required"
    status = 403


class AttestationRefused(WebAuthnError):
    error = "attestation_refused"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class WebAuthnSettings:
    """The relying party, built once at start-up from ``Config.webauthn``."""

    rp_id: str
    rp_name: str
    origins: frozenset[str]
    formats: frozenset[str]
    trust: WebAuthnTrust = field(default_factory=WebAuthnTrust)
    challenge_ttl: timedelta = CHALLENGE_TTL

    def __post_init__(self) -> None:
        if not self.rp_id or not self.origins:
            raise ValueError("rp_id and origins are required")
        for origin in self.origins:
            host = urlsplit(origin).hostname or ""
            # WebAuthn L2 §5.1.3 / HTML: the RP ID is the origin's host or a registrable suffix
            if host != self.rp_id and not host.endswith("." + self.rp_id):
                raise ValueError(f"RP ID {self.rp_id!r} is not a suffix of origin {origin!r}")
        unknown = self.formats - FORMATS
        if unknown:
            raise ValueError(f"unknown attestation formats: {', '.join(sorted(unknown))}")

    @property
    def relying_party(self) -> RelyingParty:
        return RelyingParty(self.rp_id, self.origins)


def load_settings(
    *,
    issuer: str,
    rp_id: str,
    rp_name: str,
    mds3_blob_file: str,
    mds3_root_file: str,
    formats: str,
    now: datetime,
) -> WebAuthnSettings:
    """Settings from configuration values; reads the MDS3 blob and its root once."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    trust = WebAuthnTrust.with_apple_root()
    if mds3_blob_file:
        if not mds3_root_file:
            raise ValueError("webauthn.mds3_blob_file needs webauthn.mds3_root_file")
        root = x509.load_pem_x509_certificate(Path(mds3_root_file).read_bytes())
        loaded = load_mds3(Path(mds3_blob_file).read_bytes().strip(), mds_root=root, now=now)
        trust = WebAuthnTrust.with_apple_root(
            roots_by_aaguid=loaded.roots_by_aaguid,
            roots_by_format=loaded.roots_by_format,
            key_protection_by_aaguid=loaded.key_protection_by_aaguid,
            compromised_aaguids=loaded.compromised_aaguids,
            compromised_certificates=loaded.compromised_certificates,
            mds_next_update=loaded.mds_next_update,
        )
    return WebAuthnSettings(
        rp_id=rp_id or parts.hostname or "",
        rp_name=rp_name or "cityid",
        origins=frozenset({origin}),
        formats=frozenset(f.strip() for f in formats.split(",") if f.strip()),
        trust=trust,
    )


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Registered:
    credential_id: str  # row id
    name: str
    attestation_format: str
    attestation_trusted: bool
    max_level: Level | None
    reason: str


@dataclass(frozen=True)
class Authenticated:
    credential_id: str  # row id
    name: str
    max_level: Level | None
    sign_count: int


@dataclass(frozen=True)
class CredentialView:
    id: str
    name: str
    attestation_format: str
    attestation_trusted: bool
    max_level: Level | None
    created_at: datetime
    last_used_at: datetime | None


# --------------------------------------------------------------------------- helpers


def credential_digest(credential_id: bytes) -> str:
    return hashlib.sha256(credential_id).hexdigest()


def _challenge_digest(challenge: bytes) -> str:
    return hashlib.sha256(b"cityid-webauthn-challenge:" + challenge).hexdigest()


def challenge_digest_in(response: object) -> str | None:
    """The digest of the challenge a (hostile) response names, to discard it after a refusal."""
    try:
        raw = response["response"]["clientDataJSON"]  # type: ignore[index]
        challenge = websafe_decode(json.loads(websafe_decode(raw))["challenge"])
    except Exception:  # noqa: BLE001 - hostile input; nothing to discard
        return None
    return _challenge_digest(challenge) if isinstance(challenge, bytes) else None


def discard_challenge(session: Session, digest: str, session_digest: str) -> None:
    """Single use even on refusal: run after the rollback (``uow.on_failure``)."""
    session.execute(
        delete(WebAuthnChallenge).where(
            WebAuthnChallenge.challenge_digest == digest,
            WebAuthnChallenge.session_digest == session_digest,
        )
    )


def user_handle(account_id: str) -> bytes:
    """WebAuthn L2 §14.6.1: the user handle is the random account id, no personal data."""
    return account_id.encode()


def clean_name(raw: object, default: str) -> str:
    """A credential's display name: printable, trimmed, at most ``MAX_NAME`` characters."""
    if not isinstance(raw, str):
        return default
    text = "".join(c for c in unicodedata.normalize("NFC", raw) if unicodedata.category(c)[0] != "C")
    text = " ".join(text.split())[:MAX_NAME]
    return text or default


def _server(settings: WebAuthnSettings, hook: Any = None) -> Fido2Server:
    return Fido2Server(
        PublicKeyCredentialRpEntity(name=settings.rp_name, id=settings.rp_id),
        attestation=AttestationConveyancePreference.DIRECT,
        verify_origin=lambda origin: origin in settings.origins,
        verify_attestation=hook,
    )


def _credentials(session: Session, account_id: str) -> list[WebAuthnCredential]:
    return list(
        session.execute(
            select(WebAuthnCredential)
            .where(WebAuthnCredential.account_id == account_id)
            .order_by(WebAuthnCredential.created_at)
        ).scalars()
    )


def _cose_map(stored: bytes) -> dict[int, Any]:
    value = cbor.decode(stored)
    if not isinstance(value, dict):
        raise ValueError("stored public key is not a COSE map")
    return value


def _descriptor(row: WebAuthnCredential) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(type=PublicKeyCredentialType.PUBLIC_KEY, id=row.credential_id)


def _save_state(
    session: Session,
    *,
    state: Mapping[str, Any],
    purpose: str,
    account_id: str,
    session_digest: str,
    settings: WebAuthnSettings,
    now: datetime,
) -> None:
    # One ceremony per browser session and purpose; expired ones go too (bounded table).
    session.execute(
        delete(WebAuthnChallenge).where(
            (WebAuthnChallenge.expires_at <= now)
            | ((WebAuthnChallenge.session_digest == session_digest) & (WebAuthnChallenge.purpose == purpose))
        )
    )
    session.add(
        WebAuthnChallenge(
            challenge_digest=_challenge_digest(websafe_decode(state["challenge"])),
            session_digest=session_digest,
            account_id=account_id,
            purpose=purpose,
            state=json.dumps({k: (str(v.value) if hasattr(v, "value") else v) for k, v in state.items()}),
            created_at=now,
            expires_at=now + settings.challenge_ttl,
        )
    )


def _take_state(
    session: Session,
    *,
    challenge: bytes,
    purpose: str,
    account_id: str,
    session_digest: str,
    now: datetime,
) -> dict[str, Any]:
    """Consume the ceremony state for ``challenge``: WebAuthn L2 §7.1 step 8 / §7.2 step 12
    (the challenge is the one sent for *this* ceremony), §13.4.3 (single use)."""
    digest = _challenge_digest(challenge)
    row = session.get(WebAuthnChallenge, digest)
    if row is None:
        raise ChallengeUnknown(N_("The request has expired. Please try again."), "challenge unknown or used")
    if (
        row.purpose != purpose
        or not equal(row.session_digest, session_digest)
        or row.account_id != account_id
    ):
        raise ChallengeUnknown(
            N_("The request has expired. Please try again."),
            f"challenge belongs to another ceremony ({row.purpose}) or browser session",
        )
    if row.expires_at <= now:
        raise ChallengeUnknown(N_("The request has expired. Please try again."), "challenge expired")
    # Delete by statement and check the count: of two concurrent uses only one wins.
    gone = session.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.challenge_digest == digest))
    if gone.rowcount != 1:  # type: ignore[attr-defined]
        raise ChallengeUnknown(
            N_("The request has expired. Please try again."), "challenge used concurrently"
        )
    state: dict[str, Any] = json.loads(row.state)
    return state


def _check_client_data(client_data: Any, kind: str, settings: WebAuthnSettings) -> None:
    # WebAuthn L2 §7.1 step 7 / §7.2 step 11: type is webauthn.create / webauthn.get
    if client_data.type != kind:
        raise MalformedResponse(N_("The response is not valid."), f"clientData type {client_data.type!r}")
    # WebAuthn L2 §7.1 step 9 / §7.2 step 13: origin is this relying party's
    if client_data.origin not in settings.origins:
        raise OriginMismatch(
            N_("The response was made for another site."), f"origin {client_data.origin!r} not expected"
        )
    # WebAuthn L2 §7.1 step 10 / §7.2 step 14: no token binding is used; crossOrigin is refused
    if client_data.cross_origin is True:
        raise OriginMismatch(N_("The response was made for another site."), "crossOrigin is true")


def _check_auth_data(auth_data: Any, state: Mapping[str, Any], settings: WebAuthnSettings) -> None:
    # WebAuthn L2 §7.1 step 13 / §7.2 step 15: rpIdHash is SHA-256 of the RP ID
    expected = hashlib.sha256(settings.rp_id.encode()).digest()
    if not hmac.compare_digest(bytes(auth_data.rp_id_hash), expected):
        raise RpIdMismatch(
            N_("The response was made for another site."), f"rpIdHash is not SHA256({settings.rp_id!r})"
        )
    # WebAuthn L2 §7.1 step 14 / §7.2 step 16: the User Present flag is set
    if not auth_data.is_user_present():
        raise UserNotPresent(N_("Please touch or unlock your security key."), "UP flag not set")
    # WebAuthn L2 §7.1 step 15 / §7.2 step 17: UV flag when user verification was required
    if (
        state.get("user_verification") == UserVerificationRequirement.REQUIRED
        and not auth_data.is_user_verified()
    ):
        raise UserNotPresent(N_("Please unlock your security key."), "UV flag not set but required")


# --------------------------------------------------------------------------- registration


def begin_registration(
    session: Session,
    settings: WebAuthnSettings,
    *,
    account_id: str,
    user_name: str,
    session_digest: str,
    now: datetime,
) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptions (JSON form) for a new credential of the account."""
    existing = _credentials(session, account_id)
    if len(existing) >= MAX_CREDENTIALS:
        raise TooManyCredentials(
            N_("You can register at most %(n)s security keys. Remove one first."),
            f"account has {len(existing)} credentials",
            params={"n": MAX_CREDENTIALS},
        )
    options, state = _server(settings).register_begin(
        PublicKeyCredentialUserEntity(name=user_name, id=user_handle(account_id), display_name=user_name),
        # WebAuthn L2 §5.4 excludeCredentials: no second registration of the same authenticator
        credentials=[_descriptor(r) for r in existing],
        resident_key_requirement=ResidentKeyRequirement.PREFERRED,
        user_verification=UserVerificationRequirement.PREFERRED,
        challenge=secrets.token_bytes(32),  # WebAuthn L2 §13.4.3: at least 16 random bytes
    )
    _save_state(
        session,
        state=state,
        purpose="register",
        account_id=account_id,
        session_digest=session_digest,
        settings=settings,
        now=now,
    )
    return dict(options)


class _AttestationHook:
    """Fido2Server's ``verify_attestation``: verify with ``attestation/`` and keep the result."""

    def __init__(self, settings: WebAuthnSettings, now: datetime) -> None:
        self.settings = settings
        self.now = now
        self.result: AttestationResult | None = None
        self.unproven: AttestationError | None = None

    def __call__(self, attestation_object: AttestationObject, client_data_hash: bytes) -> None:
        try:
            self.result = verify_webauthn(
                attestation_object,
                client_data_hash,
                rp=self.settings.relying_party,
                trust=self.settings.trust,
                now=self.now,
            )
        except _UNPROVEN as e:
            self.unproven = e


def _assess(hook: _AttestationHook) -> tuple[bool, str, Level | None, str]:
    """(trusted, security level, max level, reason) through ``policies.assess_device``."""
    if hook.result is not None and hook.result.trust_path:
        result = hook.result
        facts = DeviceAttestationFacts(
            security_level=result.security_level.value,
            verified_boot=True,  # no such notion for WebAuthn authenticators (policies.devices)
            device_locked=True,
            warnings=result.warnings,
        )
        trusted = True
        prefix = ""
    else:
        # none / self attestation, or a path to no anchor: nothing is proven about hardware
        facts = DeviceAttestationFacts(security_level="software", verified_boot=True, device_locked=True)
        trusted = False
        why = f"{type(hook.unproven).__name__}: {hook.unproven}" if hook.unproven else "no attestation"
        prefix = f"attestation_unproven ({why}); "
    assessment = assess_device(facts)
    reason = f"{prefix}{assessment.reason.code}: {assessment.reason.text}"[:300]
    return trusted, facts.security_level, assessment.max_level, reason


def finish_registration(
    session: Session,
    settings: WebAuthnSettings,
    *,
    account_id: str,
    session_digest: str,
    response: object,
    name: str,
    now: datetime,
) -> Registered:
    """Verify a registration (WebAuthn L2 §7.1) and store the credential."""
    try:
        if not isinstance(response, Mapping):
            raise TypeError(type(response).__name__)
        reg = RegistrationResponse.from_dict(response)
        client_data = reg.response.client_data
        att = reg.response.attestation_object
        auth_data = att.auth_data
        cred = auth_data.credential_data
    except Exception as e:  # noqa: BLE001 - hostile input; fido2 raises many types
        raise MalformedResponse(
            N_("The response is not valid."), f"registration response: {type(e).__name__}"
        ) from None
    _check_client_data(client_data, "webauthn.create", settings)
    state = _take_state(
        session,
        challenge=client_data.challenge,
        purpose="register",
        account_id=account_id,
        session_digest=session_digest,
        now=now,
    )
    _check_auth_data(auth_data, state, settings)
    if cred is None:
        # WebAuthn L2 §6.5.1: a registration carries attested credential data (AT flag)
        raise MalformedResponse(N_("The response is not valid."), "no attested credential data")
    # WebAuthn L2 §7.1 step 16: the credential's algorithm is one we offered
    try:
        alg = cred.public_key.ALGORITHM
        if isinstance(cred.public_key, UnsupportedKey) or alg not in CoseKey.supported_algorithms():
            raise ValueError(alg)
    except Exception:  # noqa: BLE001
        raise MalformedResponse(
            N_("This security key is not supported."), "unsupported key algorithm"
        ) from None
    # WebAuthn L2 §7.1 step 19: the attestation format is one this deployment accepts
    if att.fmt not in settings.formats:
        raise AttestationRefused(
            N_("This security key is not accepted."), f"attestation format {att.fmt!r} not allowed"
        )
    # WebAuthn L2 §7.1 step 22: the credential id is not registered yet (to anyone)
    digest = credential_digest(bytes(cred.credential_id))
    if session.execute(
        select(WebAuthnCredential.id).where(WebAuthnCredential.credential_digest == digest)
    ).first():
        raise CredentialExists(N_("This security key is already registered."), "credential id registered")
    # WebAuthn L2 §7.1 steps 19-21 by fido2 with attestation/ as the verifier (§8 formats)
    hook = _AttestationHook(settings, now)
    try:
        _server(settings, hook).register_complete(state, reg)
    except AttestationError as e:
        raise AttestationRefused(
            N_("This security key's attestation is not valid."), f"{type(e).__name__}: {e}"
        ) from None
    except ValueError as e:
        raise MalformedResponse(N_("The response is not valid."), f"fido2: {e}") from None
    trusted, security_level, max_level, reason = _assess(hook)
    row = WebAuthnCredential(
        account_id=account_id,
        credential_digest=digest,
        credential_id=bytes(cred.credential_id),
        public_key=cbor.encode(dict(cred.public_key)),
        sign_count=auth_data.counter,
        aaguid=bytes(cred.aaguid).hex(),
        attestation_format=att.fmt,
        attestation_trusted=trusted,
        security_level=security_level,
        max_level=int(max_level) if max_level is not None else None,
        assessment=reason,
        name=name,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return Registered(
        credential_id=row.id,
        name=row.name,
        attestation_format=att.fmt,
        attestation_trusted=trusted,
        max_level=max_level,
        reason=reason,
    )


# --------------------------------------------------------------------------- authentication


def begin_authentication(
    session: Session,
    settings: WebAuthnSettings,
    *,
    account_id: str,
    session_digest: str,
    now: datetime,
) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptions (JSON form) listing the account's credentials."""
    rows = _credentials(session, account_id)
    if not rows:
        raise CredentialUnknown(
            N_("You have not registered a security key yet."), "account has no credentials"
        )
    options, state = _server(settings).authenticate_begin(
        credentials=[_descriptor(r) for r in rows],
        user_verification=UserVerificationRequirement.PREFERRED,
        challenge=secrets.token_bytes(32),  # WebAuthn L2 §13.4.3
    )
    _save_state(
        session,
        state=state,
        purpose="authenticate",
        account_id=account_id,
        session_digest=session_digest,
        settings=settings,
        now=now,
    )
    return dict(options)


def finish_authentication(
    session: Session,
    settings: WebAuthnSettings,
    *,
    account_id: str,
    session_digest: str,
    response: object,
    now: datetime,
) -> Authenticated:
    """Verify an assertion (WebAuthn L2 §7.2) by one of the account's credentials."""
    try:
        if not isinstance(response, Mapping):
            raise TypeError(type(response).__name__)
        auth = AuthenticationResponse.from_dict(response)
        client_data = auth.response.client_data
        auth_data = auth.response.authenticator_data
        raw_id = bytes(auth.raw_id)
    except Exception as e:  # noqa: BLE001 - hostile input
        raise MalformedResponse(
            N_("The response is not valid."), f"authentication response: {type(e).__name__}"
        ) from None
    _check_client_data(client_data, "webauthn.get", settings)
    state = _take_state(
        session,
        challenge=client_data.challenge,
        purpose="authenticate",
        account_id=account_id,
        session_digest=session_digest,
        now=now,
    )
    _check_auth_data(auth_data, state, settings)
    # WebAuthn L2 §7.2 steps 5-7: the credential is known and is this account's
    row = session.execute(
        select(WebAuthnCredential).where(WebAuthnCredential.credential_digest == credential_digest(raw_id))
    ).scalar_one_or_none()
    if row is None:
        raise CredentialUnknown(
            N_("This security key is not registered."), f"credential {websafe_encode(raw_id)[:32]} unknown"
        )
    if row.account_id != account_id:
        raise CredentialNotAllowed(
            N_("This security key belongs to another account."),
            f"credential {row.id} of account {row.account_id}",
        )
    handle = auth.response.user_handle
    if handle is not None and not hmac.compare_digest(bytes(handle), user_handle(account_id)):
        raise CredentialNotAllowed(N_("This security key belongs to another account."), "userHandle differs")
    # WebAuthn L2 §7.2 steps 18-20: the signature over authenticatorData || hash(clientData)
    stored = AttestedCredentialData.create(
        bytes.fromhex(row.aaguid), row.credential_id, CoseKey.parse(_cose_map(row.public_key))
    )
    try:
        _server(settings).authenticate_complete(state, [stored], auth)
    except ValueError as e:
        raise SignatureInvalid(N_("The security key's signature is not valid."), f"fido2: {e}") from None
    # WebAuthn L2 §7.2 step 21 / §6.1.1: the signature counter must grow, unless both are zero
    count = int(auth_data.counter)
    if (count != 0 or row.sign_count != 0) and count <= row.sign_count:
        raise SignCountRegression(
            N_("This security key could not be accepted. Please contact the city's support."),
            f"signCount {count} <= stored {row.sign_count}: possible cloned authenticator "
            f"(credential {row.id})",
        )
    row.sign_count = count
    row.last_used_at = now
    return Authenticated(
        credential_id=row.id,
        name=row.name,
        max_level=Level(row.max_level) if row.max_level is not None else None,
        sign_count=count,
    )


# --------------------------------------------------------------------------- management


def list_credentials(session: Session, account_id: str) -> list[CredentialView]:
    return [
        CredentialView(
            id=r.id,
            name=r.name,
            attestation_format=r.attestation_format,
            attestation_trusted=r.attestation_trusted,
            max_level=Level(r.max_level) if r.max_level is not None else None,
            created_at=r.created_at,
            last_used_at=r.last_used_at,
        )
        for r in _credentials(session, account_id)
    ]


def _owned(session: Session, account_id: str, credential_row_id: str) -> WebAuthnCredential:
    row = session.get(WebAuthnCredential, credential_row_id) if len(credential_row_id) <= 64 else None
    if row is None or row.account_id != account_id:
        raise CredentialUnknown(
            N_("This security key does not exist."), f"no credential {credential_row_id[:64]!r}"
        )
    return row


def rename_credential(session: Session, account_id: str, credential_row_id: str, name: str) -> str:
    row = _owned(session, account_id, credential_row_id)
    old = row.name
    row.name = name
    return old


def remove_credential(session: Session, account_id: str, credential_row_id: str) -> str:
    row = _owned(session, account_id, credential_row_id)
    session.delete(row)
    return row.name


# --------------------------------------------------------------------------- hooks


def account_webauthn_facts(session: Session, account_id: str) -> dict[str, Any]:
    """``idp.levels.ACCOUNT_FACT_HOOKS``: the account's credentials as policy facts."""
    rows = session.execute(
        select(WebAuthnCredential.id, WebAuthnCredential.max_level).where(
            WebAuthnCredential.account_id == account_id
        )
    ).all()
    return {
        "webauthn": tuple(
            WebAuthnFacts(credential_id=rid, max_level=Level(level) if level is not None else None)
            for rid, level in rows
        )
    }


def export_credentials(session: Session, keys: InstanceKeys, account_id: str) -> dict[str, Any]:
    """``idp.privacy.EXPORT_HOOKS``: what is kept about each security key (no key material)."""
    return {
        "security_keys": [
            {
                "id": r.id,
                "name": r.name,
                "attestation_format": r.attestation_format,
                "attestation_trusted": r.attestation_trusted,
                "aaguid": r.aaguid,
                "max_level": Level(r.max_level).label if r.max_level is not None else None,
                "sign_count": r.sign_count,
                "created_at": r.created_at.isoformat(),
                "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
            }
            for r in _credentials(session, account_id)
        ]
    }


def delete_credentials(session: Session, account_id: str) -> None:
    """``idp.privacy.DELETE_HOOKS``: the account's credentials and ceremonies go with it."""
    session.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.account_id == account_id))
    session.execute(delete(WebAuthnCredential).where(WebAuthnCredential.account_id == account_id))
