"""Upstream OpenID Connect provider as eID connector (authorization code + PKCE), mapping the
upstream's acr values to eIDAS levels. Authlib speaks OAuth; joserfc checks the ID token."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp.crypto import equal
from idp.eid.connector import EidAttribute, EidRequest, EidResponse, EidResult, EidStart, PendingEid
from idp.eid.errors import (
    AudienceMismatch,
    Expired,
    IssuerMismatch,
    LevelTooLow,
    LevelUnknown,
    MalformedResponse,
    NonceMismatch,
    NotYetValid,
    PseudonymMissing,
    SignatureInvalid,
    StateMismatch,
    TokenRequestFailed,
    UpstreamRefused,
)
from policies import Level

EIDAS_ACRS: Mapping[str, Level] = MappingProxyType({level.acr: level for level in Level})
DEFAULT_CLAIMS = ("given_name", "family_name", "birthdate", "place_of_birth", "nationalities")


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    authorization_endpoint: str
    token_endpoint: str
    jwks: Mapping[str, Any]  # the upstream's JWK Set, fetched from its jwks_uri at start-up
    acr_levels: Mapping[str, Level] = field(default_factory=lambda: EIDAS_ACRS)
    scope: str = "openid profile"
    attribute_claims: tuple[str, ...] = DEFAULT_CLAIMS
    id_token_algorithms: tuple[str, ...] = ("ES256", "PS256", "RS256")
    clock_skew: timedelta = timedelta(seconds=60)
    max_id_token_age: timedelta = timedelta(minutes=10)


class OidcConnector:
    name = "oidc"

    def __init__(
        self,
        settings: OidcSettings,
        *,
        session_factory: Callable[[OidcSettings], OAuth2Session] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._s = settings
        self._session_factory = session_factory or _default_session
        self._clock = clock
        self._keys = KeySet.import_key_set(dict(settings.jwks))  # type: ignore[arg-type]

    def _acrs_at_least(self, minimum: Level) -> list[str]:
        """Upstream acr values that satisfy ``minimum``, weakest first (the preference)."""
        ranked = sorted(self._s.acr_levels.items(), key=lambda item: item[1])
        return [acr for acr, level in ranked if level >= minimum]

    def start(self, request: EidRequest) -> EidStart:
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # RFC 7636 §4.1: 43..128 characters
        acrs = self._acrs_at_least(request.minimum_level)
        # OIDC Core §5.5.1.1: an essential acr makes the upstream fail rather than return a
        # weaker authentication; acr_values (§3.1.2.1) states the preference.
        claims = {"id_token": {"acr": {"essential": True, "values": acrs}}}
        session = self._session_factory(self._s)
        url, _ = session.create_authorization_url(
            self._s.authorization_endpoint,
            state=state,
            code_verifier=verifier,  # RFC 7636 §4.3: S256 challenge
            nonce=nonce,  # OIDC Core §3.1.2.1
            acr_values=" ".join(acrs),
            claims=json.dumps(claims, separators=(",", ":")),
        )
        pending = PendingEid(
            connector=self.name,
            request_id=state,
            relay_state=state,
            minimum_level=request.minimum_level,
            created_at=self._clock(),
            nonce=nonce,
            code_verifier=verifier,
        )
        return EidStart(method="GET", url=url, form=(), pending=pending)

    def finish(self, response: EidResponse) -> EidResult:
        params, pending = response.params, response.pending
        # RFC 6749 §10.12: state binds the response to this browser's request.
        if not equal(params.get("state", ""), pending.relay_state):
            raise StateMismatch("state does not match the pending request")
        # RFC 6749 §4.1.2.1: the upstream refused (e.g. access_denied when cancelled).
        if "error" in params:
            raise UpstreamRefused(f"{params['error']}: {params.get('error_description', '')}")
        # RFC 9207 §2.4: if the upstream names itself, it must be the one we asked.
        if "iss" in params and params["iss"] != self._s.issuer:
            raise IssuerMismatch(f"iss parameter {params['iss']!r}")
        code = params.get("code", "")
        if not code:
            raise MalformedResponse("no authorization code")
        session = self._session_factory(self._s)
        try:
            token = session.fetch_token(
                self._s.token_endpoint,
                code=code,
                code_verifier=pending.code_verifier,  # RFC 7636 §4.5
                redirect_uri=self._s.redirect_uri,
            )
        except (OAuthError, OAuth2Error, requests.RequestException, ValueError) as exc:
            raise TokenRequestFailed(str(exc)) from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise MalformedResponse("token response without id_token")
        return self.validate_id_token(id_token, pending)

    def validate_id_token(self, id_token: str, pending: PendingEid) -> EidResult:
        """OIDC Core §3.1.3.7, in its order."""
        now = self._clock()
        skew = self._s.clock_skew
        try:
            # §3.1.3.7 (6), (7): signature by the upstream's key, with an algorithm we allow.
            claims = jwt.decode(id_token, self._keys, algorithms=list(self._s.id_token_algorithms)).claims
        except (JoseError, ValueError) as exc:
            raise SignatureInvalid(f"ID token: {exc}") from exc
        # §3.1.3.7 (2): iss exactly the upstream's issuer.
        if claims.get("iss") != self._s.issuer:
            raise IssuerMismatch(f"iss {claims.get('iss')!r}")
        # §3.1.3.7 (3): aud contains our client_id.
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self._s.client_id not in audiences:
            raise AudienceMismatch(f"aud {aud!r}")
        # §3.1.3.7 (4), (5): with several audiences, azp must be us.
        if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != self._s.client_id:
            raise AudienceMismatch(f"azp {claims.get('azp')!r}")
        # §3.1.3.7 (9): not expired.
        exp = _timestamp(claims, "exp")
        if now - skew >= exp:
            raise Expired(f"exp {exp.isoformat()}")
        # §3.1.3.7 (10): iat neither in the future nor too old.
        iat = _timestamp(claims, "iat")
        if iat > now + skew:
            raise NotYetValid(f"iat {iat.isoformat()}")
        if iat < now - self._s.max_id_token_age:
            raise Expired(f"iat {iat.isoformat()} is too old")
        # §3.1.3.7 (11): nonce equals the one we sent.
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not equal(nonce, pending.nonce):
            raise NonceMismatch("nonce does not match the pending request")
        # §3.1.3.7 (12) and §5.5.1.1: the acr reached, mapped to an eIDAS level.
        acr = claims.get("acr")
        level = self._s.acr_levels.get(acr) if isinstance(acr, str) else None
        if level is None:
            raise LevelUnknown(f"acr {acr!r}")
        if level < pending.minimum_level:
            raise LevelTooLow(f"{level.label} < {pending.minimum_level.label}")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise PseudonymMissing("ID token without sub")  # OIDC Core §2: sub is REQUIRED
        # §3.1.3.7 (13): auth_time when present, else when the token was issued.
        auth_time = _timestamp(claims, "auth_time") if "auth_time" in claims else iat
        attributes = tuple(
            EidAttribute(name, _text(claims[name]), self._s.issuer, level)
            for name in self._s.attribute_claims
            if name in claims
        )
        return EidResult(
            pseudonym=sub,
            level=level,
            acr=level.acr,
            issuer=self._s.issuer,
            auth_time=auth_time,
            attributes=attributes,
            authn_context=acr if isinstance(acr, str) else "",
        )


def _default_session(settings: OidcSettings) -> OAuth2Session:
    return OAuth2Session(
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        scope=settings.scope,
        redirect_uri=settings.redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )


def _timestamp(claims: Mapping[str, Any], name: str) -> datetime:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedResponse(f"ID token claim {name} is not a NumericDate")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, ValueError, OSError):  # e.g. 10**400 or 1e300: no date at all
        raise MalformedResponse(f"ID token claim {name} is out of range") from None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
