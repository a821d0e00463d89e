"""The authorization server: Authlib grants and endpoints wired to cityid's storage.

Authlib decides the protocol; this module implements its storage hooks (query_client,
save_token, codes, refresh tokens) and the OpenID Connect claims.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Request, grants
from authlib.oauth2.rfc6749.authenticate_client import (
    ClientAuthentication,
    authenticate_client_secret_basic,
)
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc6749.hooks import hooked
from authlib.oauth2.rfc6749.util import extract_basic_authorization, scope_to_list
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import OpenIDCode, UserInfo
from flask import Flask, g, has_request_context
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WerkzeugResponse

from db import utcnow
from idp import uow
from idp.crypto import equal, random_token
from idp.keys import KeyCache
from idp.models import (
    Account,
    AuthorizationCode,
    Client,
    Grant,
    RefreshToken,
    RevokedAccessToken,
    SeenJti,
)
from idp.oauth import dpop, errors, fapi2, rotation
from idp.oauth.subjects import machine_subject, subject_for
from idp.runtime import runtime
from smartcard import replay

R = TypeVar("R", bound=WerkzeugResponse)

MAX_PARAM = 2048  # longest single parameter value we accept
MAX_QUERY = 8192  # longest query string we accept


def oversized(req: Any) -> bool:
    """A request with a parameter (or query string) longer than any legitimate one."""
    if len(req.query_string) > MAX_QUERY:
        return True
    return any(len(v) > MAX_PARAM for v in req.values.values())


# --------------------------------------------------------------------------- models


class OAuthClient(ClientMixin):  # type: ignore[misc]
    def __init__(self, row: Client) -> None:
        self.row = row
        self.client_id = row.client_id
        self.redirect_uris: list[str] = json.loads(row.redirect_uris)
        self.post_logout_redirect_uris: list[str] = json.loads(row.post_logout_redirect_uris)
        self.grant_types: list[str] = json.loads(row.grant_types)
        self.id_token_signed_response_alg = row.id_token_alg
        self.jwks = json.loads(row.jwks) if row.jwks else None

    @property
    def client_metadata(self) -> dict[str, Any]:
        return {"post_logout_redirect_uris": self.post_logout_redirect_uris}

    @property
    def is_public(self) -> bool:
        return self.row.token_endpoint_auth_method == "none"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # RFC 6749 §3.1.2.3: only when exactly one is registered.
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str) -> str:
        if not scope:
            return ""
        allowed = set(self.row.scope.split())
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 9700 §4.1.3: exact string matching, no patterns.
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.row.secret_digest or not isinstance(client_secret, str):
            return False
        digest = runtime_keys().secret_digest(client_secret)
        return equal(digest, self.row.secret_digest)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return bool(method == self.row.token_endpoint_auth_method)

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class Principal:
    """The "user" Authlib passes around: an account within one grant."""

    account: Account
    grant: Grant
    sub: str

    def get_user_id(self) -> str:
        return self.sub


@dataclass
class CodeRecord:
    row: AuthorizationCode
    grant: Grant

    @property
    def code_challenge(self) -> str | None:
        return self.row.code_challenge

    @property
    def code_challenge_method(self) -> str | None:
        return self.row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int | None:
        return self.grant.auth_time

    def get_acr(self) -> str | None:
        return self.grant.acr

    def get_amr(self) -> list[str]:
        amr: list[str] = json.loads(self.grant.amr)
        return amr


@dataclass
class RefreshRecord:
    row: RefreshToken
    grant: Grant
    # set for a retry within the grace window: the rotation's answer, returned again
    answer: rotation.RotationAnswer | None = None

    def check_client(self, client: OAuthClient) -> bool:
        return self.grant.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return int((self.row.expires_at - utcnow()).total_seconds())

    def is_expired(self) -> bool:
        return self.row.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.row.used_at is not None or self.grant.revoked_at is not None


def _dpop_proof() -> Any:
    from flask import g

    return g.get("dpop")


def _mtls_certificate() -> Any:
    from flask import g

    return g.get("mtls")


def runtime_keys() -> Any:
    return runtime().keys


def key_cache() -> KeyCache:
    kc: KeyCache = runtime().key_cache
    return kc


def principal_for(session: Session, grant: Grant) -> Principal | None:
    if grant.account_id is None:
        return None
    account = session.get(Account, grant.account_id)
    client = client_row(session, grant.client_id)
    if account is None or account.disabled or client is None:
        return None
    return Principal(account, grant, subject_for(runtime_keys().subject, client, account.id))


def revoke_grant(session: Session, grant_id: str, reason: str) -> None:
    """Revoke a token family: its refresh tokens stop working, its access tokens too."""
    session.execute(
        update(Grant)
        .where(Grant.id == grant_id, Grant.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )
    # a revoked family's kept answers (idp.oauth.rotation) are of no use to anyone
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.grant_id == grant_id, RefreshToken.answer_sealed.is_not(None))
        .values(answer_sealed=None)
        .execution_options(synchronize_session=False)
    )


def _deferred_revoke(grant_id: str, reason: str, client_id: str) -> None:
    def run(s: Session) -> None:
        revoke_grant(s, grant_id, reason)

    uow.on_failure(run)
    uow.record(
        action="token.family_revoked",
        outcome="denied",
        actor=client_id,
        subject=grant_id,
        reason=reason,
    )


# --------------------------------------------------------------------------- grants

ALL_AUTH = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
CONFIDENTIAL_AUTH = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


class PkceS256(CodeChallenge):  # type: ignore[misc]
    # RFC 7636 §4.2 / RFC 9700 §2.1.1: `plain` is refused; the default method (plain) too.
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "plain"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        from authlib.oauth2.rfc6749.errors import InvalidRequestError

        request = grant.request
        challenge = request.payload.data.get("code_challenge")
        method = request.payload.data.get("code_challenge_method")
        # RFC 9700 §2.1.1 / OAuth 2.1 §4.1.1 / FAPI 2.0 Security Profile §5.3.2.2: every client uses
        # PKCE, confidential ones too; only a legacy confidential client registered with
        # --allow-missing-pkce may go without (never a public or a FAPI 2.0 one)
        if not challenge and not pkce_waived(grant.client):
            raise InvalidRequestError("PKCE (code_challenge, S256) is required for this client")
        if challenge and not method:
            raise InvalidRequestError("code_challenge_method must be S256 ('plain' is refused)")
        super().validate_code_challenge(grant, redirect_uri)


def pkce_waived(client: OAuthClient) -> bool:
    row = client.row
    return bool(row.allow_missing_pkce) and not client.is_public and not fapi2.is_fapi2(row)


class SenderConstrained:
    """FAPI 2.0 Security Profile §5.3.2.1: a FAPI 2.0 client's token requests carry a DPoP proof
    or a client certificate, so no bearer token is issued to it (checked before anything is used
    up: a refused request leaves the code or refresh token as it was)."""

    request: Any

    def validate_token_request(self) -> None:
        super().validate_token_request()  # type: ignore[misc]
        reason = fapi2.sender_constraint_refusal(
            self.request.client.row, dpop=_dpop_proof() is not None, mtls=_mtls_certificate() is not None
        )
        if reason is not None:
            raise InvalidRequestError(reason)


class AuthorizationCodeGrant(SenderConstrained, grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH

    @staticmethod
    def validate_authorization_redirect_uri(request: OAuth2Request, client: OAuthClient) -> str:
        if not request.payload.redirect_uri and "openid" in scope_to_list(request.payload.scope or ""):
            # OIDC Core §3.1.2.1: redirect_uri is REQUIRED in an OpenID Connect request, even
            # with one registered URI (plain OAuth keeps RFC 6749 §3.1.2.3's default). Never a
            # redirect: none was named (RFC 6749 §4.1.2.1).
            raise InvalidRequestError("redirect_uri is required in an OpenID Connect request")
        redirect_uri: str = grants.AuthorizationCodeGrant.validate_authorization_redirect_uri(request, client)
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        principal: Principal = request.user
        s = uow.db()
        data = request.payload.data
        s.add(
            AuthorizationCode(
                code_digest=runtime_keys().token_digest(code),
                grant_id=principal.grant.id,
                client_id=request.client.get_client_id(),
                redirect_uri=request.payload.redirect_uri or "",
                scope=request.payload.scope or "",
                nonce=data.get("nonce"),
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                # RFC 6749 §4.1.2 short-lived; FAPI 2.0 Security Profile §5.3.2.1: ≤ 60 s
                expires_at=utcnow()
                + dt.timedelta(
                    seconds=fapi2.code_lifetime(request.client.row, runtime().config.code_lifetime_seconds)
                ),
            )
        )

    def query_authorization_code(self, code: str, client: OAuthClient) -> CodeRecord | None:
        if not isinstance(code, str) or len(code) > 200:
            return None
        s = uow.db()
        row = s.get(AuthorizationCode, runtime_keys().token_digest(code))
        if row is None or row.client_id != client.get_client_id():
            return None
        grant = s.get(Grant, row.grant_id)
        if grant is None or grant.revoked_at is not None:
            return None
        if row.used_at is not None:
            # RFC 6749 §4.1.2: a reused code SHOULD revoke the tokens issued from it.
            _deferred_revoke(grant.id, "authorization code reused", client.client_id)
            return None
        if row.expires_at <= utcnow():  # RFC 6749 §4.1.2: short-lived codes
            return None
        proof = _dpop_proof()
        if grant.cnf_jkt and (proof is None or not equal(proof.jkt, grant.cnf_jkt)):
            return None  # RFC 9449 §10: the code is bound to the dpop_jkt key
        return CodeRecord(row, grant)

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        # Single use even under concurrency: only one UPDATE can flip used_at.
        res = uow.db().execute(
            update(AuthorizationCode)
            .where(
                AuthorizationCode.code_digest == authorization_code.row.code_digest,
                AuthorizationCode.used_at.is_(None),
            )
            .values(used_at=utcnow())
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            # Redeemed by a concurrent request in the meantime: a replay as in query (RFC 6749
            # §4.1.2), so the tokens issued from it are revoked here too.
            grant = authorization_code.grant
            _deferred_revoke(grant.id, "authorization code reused", grant.client_id)
            raise InvalidGrantError("Invalid 'code' in request.")

    def authenticate_user(self, authorization_code: CodeRecord) -> Principal | None:
        return principal_for(uow.db(), authorization_code.grant)


class RefreshTokenGrant(SenderConstrained, grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation (RFC 9700 §4.14.2)

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        if not isinstance(refresh_token, str) or len(refresh_token) > 200:
            return None
        s = uow.db()
        row = s.get(RefreshToken, runtime_keys().token_digest(refresh_token))
        if row is None:
            return None
        grant = s.get(Grant, row.grant_id)
        if grant is None or grant.revoked_at is not None:
            return None
        if row.used_at is not None:
            # RFC 9700 §4.14.2: a rotated refresh token used again means it leaked; revoke the
            # whole family (unless it is the same client's retry within the grace window)
            return self._retry_or_revoke(row, grant, row.used_at, row.answer_sealed)
        if row.expires_at <= utcnow():
            return None
        proof = _dpop_proof()
        client = s.get(Client, grant.client_id)
        bound = client is not None and fapi2.binds_refresh_tokens(client)
        if bound and grant.cnf_jkt:
            # RFC 9449 §5: a public client's refresh token is bound to its DPoP key (and a FAPI 2.0
            # client's: FAPI 2.0 Security Profile §5.3.2.1, no refresh without the sender constraint)
            if proof is None or not equal(proof.jkt, grant.cnf_jkt):
                return None
        if bound and grant.cnf_x5t:
            # RFC 8705 §4: ... and to the device certificate it was issued with
            device_cert = _mtls_certificate()
            if device_cert is None or not equal(device_cert.thumbprint, grant.cnf_x5t):
                return None
        return RefreshRecord(row, grant)

    def _retry(self) -> rotation.Retry:
        proof, cert = _dpop_proof(), _mtls_certificate()
        return rotation.Retry(
            client_id=self.request.client.get_client_id(),
            jkt=proof.jkt if proof is not None else None,
            x5t=cert.thumbprint if cert is not None else None,
            scope_asked=self.request.payload.scope or "",
            confidential=not self.request.client.is_public,
        )

    def _retry_or_revoke(
        self, row: RefreshToken, grant: Grant, used_at: dt.datetime, sealed: bytes | None
    ) -> RefreshRecord | None:
        """A rotated token presented again: the rotation's answer for the same client's retry
        within the grace window (idp.oauth.rotation), else the family is revoked."""
        answer = rotation.unseal(runtime_keys().token_answer, row.token_digest, sealed)
        why = rotation.refusal(
            answer,
            self._retry(),
            used_at=used_at.timestamp(),
            now=time.time(),
            grace_seconds=runtime().config.refresh_token_grace_seconds,
        )
        if why is None and answer is not None and _rotated(uow.db(), answer):
            why = "after its successor was used"
        if why is not None or answer is None:
            _deferred_revoke(grant.id, f"refresh token replayed {why}", grant.client_id)
            return None
        return RefreshRecord(row, grant, answer=answer)

    def authenticate_user(self, refresh_token: RefreshRecord) -> Principal | None:
        return principal_for(uow.db(), refresh_token.grant)

    @hooked  # type: ignore[untyped-decorator]
    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """RFC 6749 §6 as Authlib does it, with the old token claimed *before* the new ones are
        made: of two concurrent uses of one token exactly one rotates it (the other's UPDATE
        waits for the winner's commit on PostgreSQL; SQLite runs them one after the other), and
        the other is answered as a retry (or a replay) of the winner's rotation."""
        record: RefreshRecord = self.request.refresh_token
        user = self.authenticate_user(record)
        if not user:
            raise InvalidRequestError("There is no 'user' for this token.")
        self.request.user = user
        if record.answer is None and not self._claim(record):
            record = self._after_lost_race(record)
        if record.answer is not None:
            token = rotation.again(record.answer)
            uow.record(
                action="token.issue_again",
                outcome="success",
                actor=record.grant.client_id,
                subject=user.account.id,
                reason="refresh token presented again within the grace window: the rotation's tokens",
                details={"grant": record.grant.id, "rotated_at": record.answer.issued_at},
            )
            return 200, token, self.TOKEN_RESPONSE_HEADER
        token = self.issue_token(user, record)
        self.save_token(token)
        self._keep_answer(record, token)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def _claim(self, record: RefreshRecord) -> bool:
        """Mark the token used; False when a concurrent request did first (only one UPDATE can
        flip used_at)."""
        s = uow.db()
        res = s.execute(
            update(RefreshToken)
            .where(RefreshToken.token_digest == record.row.token_digest, RefreshToken.used_at.is_(None))
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return False
        # the answers kept for the tokens before this one: their successor (this one) is used now
        s.execute(
            update(RefreshToken)
            .where(
                RefreshToken.grant_id == record.grant.id,
                RefreshToken.token_digest != record.row.token_digest,
                RefreshToken.answer_sealed.is_not(None),
            )
            .values(answer_sealed=None)
            .execution_options(synchronize_session=False)
        )
        return True

    def _after_lost_race(self, record: RefreshRecord) -> RefreshRecord:
        """Another request rotated this token since it was read: its committed state decides."""
        conn = uow.db().connection()
        now = conn.execute(_SELECT_REFRESH_STATE, {"digest": record.row.token_digest}).first()
        revoked = conn.execute(_SELECT_GRANT_STATE, {"gid": record.grant.id}).first()
        if now is None or now.used_at is None or revoked is None or revoked.revoked_at is not None:
            raise InvalidGrantError("Invalid refresh token")
        again = self._retry_or_revoke(record.row, record.grant, now.used_at, now.answer_sealed)
        if again is None:
            raise InvalidGrantError("Invalid refresh token")
        return again

    def _keep_answer(self, record: RefreshRecord, token: dict[str, Any]) -> None:
        """Seal this rotation's answer onto the rotated token for the grace window."""
        if runtime().config.refresh_token_grace_seconds <= 0:
            return  # no window: nothing kept
        proof, cert = _dpop_proof(), _mtls_certificate()
        jkt, x5t = (proof.jkt if proof is not None else None), (cert.thumbprint if cert is not None else None)
        if not rotation.eligible(not self.request.client.is_public, jkt, x5t):
            return  # RFC 9700 §4.14.2: no window for a public client's unbound tokens
        answer = rotation.RotationAnswer(
            token=dict(token),
            issued_at=int(time.time()),
            client_id=record.grant.client_id,
            jkt=proof.jkt if proof is not None else None,
            x5t=cert.thumbprint if cert is not None else None,
            scope_asked=self.request.payload.scope or "",
        )
        digest = record.row.token_digest
        uow.db().execute(
            update(RefreshToken)
            .where(RefreshToken.token_digest == digest)
            .values(answer_sealed=rotation.seal(runtime_keys().token_answer, digest, answer))
            .execution_options(synchronize_session=False)
        )


def _rotated(s: Session, answer: rotation.RotationAnswer) -> bool:
    """Whether the refresh token the rotation answered with has been used itself since."""
    successor = answer.token.get("refresh_token")
    if not isinstance(successor, str):
        return True
    row = (
        s.connection()
        .execute(_SELECT_REFRESH_STATE, {"digest": runtime_keys().token_digest(successor)})
        .first()
    )
    return row is None or row.used_at is not None


class ClientCredentialsGrant(SenderConstrained, grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_AUTH

    def validate_token_request(self) -> None:
        super().validate_token_request()
        asked = set(scope_to_list(self.request.payload.scope) or [])
        beyond = asked - set(self.request.client.row.scope.split())
        if beyond:
            # RFC 6749 §5.2 invalid_scope: unknown, or beyond what the client is registered for
            # (never silently narrowed: the client would hold a token without knowing its scope)
            raise InvalidScopeError(f"scope not allowed for this client: {' '.join(sorted(beyond))}")


class OpenIDConnect(OpenIDCode):  # type: ignore[misc]
    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return False  # the code is single-use; the RP checks the nonce it sent

    def resolve_client_private_key(self, client: OAuthClient) -> Any:
        return key_cache().get(uow.db()).signing[client.id_token_signed_response_alg]

    def get_client_algorithm(self, client: OAuthClient) -> str:
        return client.id_token_signed_response_alg

    def get_encode_header(self, client: OAuthClient) -> dict[str, str]:
        key = self.resolve_client_private_key(client)
        return {"alg": client.id_token_signed_response_alg, "kid": key.kid, "typ": "JWT"}

    def get_client_claims(self, client: OAuthClient) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": runtime().config.issuer,
            "aud": [client.get_client_id()],
            "iat": now,
            "exp": now + runtime().config.id_token_lifetime_seconds,
        }

    def get_authorization_code_claims(self, authorization_code: CodeRecord) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_authorization_code_claims(authorization_code)
        if authorization_code.grant.sid:
            claims["sid"] = authorization_code.grant.sid  # OIDC Back-Channel Logout §2.1
        return claims

    def generate_user_info(self, user: Principal, scope: str) -> UserInfo:
        return userinfo_claims(user, scope)


# Further claims (e.g. eID verified_claims): callables (session, principal, scopes) -> dict.
CLAIM_HOOKS: list[Callable[[Session, Principal, set[str]], dict[str, Any]]] = []


def userinfo_claims(user: Principal, scope: str) -> UserInfo:
    """Claims released for these scopes (ID token and userinfo; OIDC Core §5.4)."""
    from idp.accounts import email_of

    info = UserInfo(sub=user.sub)
    for hook in CLAIM_HOOKS:
        info.update(hook(uow.db(), user, set(scope.split())))
    scopes = set(scope.split())
    if "email" in scopes:
        info["email"] = email_of(runtime_keys(), user.account)
        info["email_verified"] = user.account.email_verified_at is not None
    if "profile" in scopes:
        info["locale"] = user.account.locale
    return info


# private_key_jwt (discovery advertises these); Ed25519 is RFC 9864's name for EdDSA on Ed25519
ASSERTION_ALGORITHMS = ["ES256", "RS256", "Ed25519", "EdDSA"]
MAX_ASSERTION_LIFETIME = 3600  # seconds from now that a client assertion's exp may reach


def presented_auth_methods(request: Any) -> list[str]:
    """The client authentication methods a request carries credentials for."""
    form = request.form
    found = []
    if request.headers.get("Authorization", "")[:6].lower() == "basic ":
        found.append("client_secret_basic")
    if "client_secret" in form:
        found.append("client_secret_post")
    if "client_assertion" in form or "client_assertion_type" in form:
        found.append("private_key_jwt")
    return found


class ClientAuth(ClientAuthentication):  # type: ignore[misc]
    """Authlib's client authentication with RFC 6749 §2.3 and RFC 7521 §4.2 around it, and
    errors that name the method the client is registered for."""

    def authenticate(self, request: Any, methods: list[str], endpoint: str) -> OAuthClient:
        presented = presented_auth_methods(request)
        if len(presented) > 1:
            # RFC 6749 §2.3: the client MUST NOT use more than one authentication method in each
            # request (which one would decide?)
            raise InvalidRequestError(f"more than one client authentication method: {', '.join(presented)}")
        try:
            client: OAuthClient = super().authenticate(request, methods, endpoint)
        except InvalidClientError as err:
            if err.description.startswith("The client cannot authenticate with methods"):
                err.description = self.failure(request, methods)
            raise
        body_id = request.form.get("client_id")
        if body_id is not None and not equal(body_id, client.get_client_id()):
            if request.auth_method == "private_key_jwt":
                # RFC 7521 §4.2: a client_id sent along MUST identify the same client as the
                # assertion
                raise InvalidClientError(description="client_id is not the client assertion's subject")
            # HTTP Basic for one client, client_id of another in the body (RFC 6749 §2.3.1 sends
            # it along only for the same client): the request names two clients (as /par says)
            raise InvalidRequestError("client_id is not the authenticated client")
        return client

    def failure(self, request: Any, methods: list[str]) -> str:
        """Why authentication failed, in terms of the method *this* client is registered for
        (never the list of every method the server knows). A client that is not found gets the
        generic text: whether a client_id exists is not told here."""
        try:
            basic_id = extract_basic_authorization(request.headers)[0]
        except (ValueError, UnicodeError):  # credentials that are no base64 of UTF-8 (RFC 7617 §2)
            basic_id = None
        client_id = basic_id or request.form.get("client_id")
        client = self.query_client(client_id) if isinstance(client_id, str) else None
        if client is None:
            return "client authentication failed"
        registered = client.row.token_endpoint_auth_method
        if registered not in methods:
            return f"this client is registered for {registered}, which this endpoint does not accept"
        return f"client authentication failed: this client authenticates with {registered}"


@dataclass(frozen=True)
class AssertionUse:
    """A client assertion's jti, to be used once (RFC 7523 §3 (7)): its replay-store key."""

    key: str
    expires_at: dt.datetime

    def first_use(self) -> bool:
        """Record the jti; False when it was used before (one atomic insert decides)."""
        return replay.first_use(uow.db(), _SEEN_JTI, self.key, self.expires_at)


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 §2.2 / §3 client authentication (OIDC Core §9 private_key_jwt).

    ``read_only``: every check as below, but the jti is only looked up (unused so far), not
    recorded: the fast paths (idp.oauth.fast_paths) record it through :attr:`use` once they have
    decided to answer, so that a request they hand to Authlib has changed nothing. One instance
    per request then (it keeps that request's jti)."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, issuer: str, *, issuer_audience_only: bool = False, read_only: bool = False) -> None:
        super().__init__(leeway=30)
        self.issuer = issuer
        self.issuer_audience_only = issuer_audience_only
        self.read_only = read_only
        self.use: AssertionUse | None = None

    def get_audiences(self) -> list[str]:
        if self.issuer_audience_only:
            return [self.issuer]
        # RFC 7523 §3 (3): the token endpoint URL; OIDC Core §9 also allows the issuer; RFC 9126
        # §2: the PAR endpoint URL too
        return [f"{self.issuer}/token", self.issuer, f"{self.issuer}/par"]

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        # RFC 7523 §3.1 as Authlib does it, with the algorithms discovery advertises (joserfc's
        # default set lacks EdDSA and has HS256, which no client key should ever stand for)
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except JoseError as e:
            raise InvalidClientError(description=e.description) from e
        if self.issuer_only_for(token.claims.get("sub")) and token.claims.get("aud") != self.issuer:
            # draft-ietf-oauth-rfc7523bis §4 (audience injection): aud is the issuer identifier as
            # one string; an endpoint URL, or a list that holds another audience, is refused. FAPI
            # 2.0 Security Profile §5.3.2.1: always so for a FAPI 2.0 client
            raise InvalidClientError(description=f"the assertion's aud must be {self.issuer!r} alone")
        exp = token.claims.get("exp")
        if isinstance(exp, int | float) and exp > time.time() + MAX_ASSERTION_LIFETIME:
            # RFC 7523 §3 (4): an exp unreasonably far in the future may be refused; its jti
            # would have to be kept until then (and a year 10**400 is no date at all)
            raise InvalidClientError(description="the assertion's exp is too far in the future")
        self.verify_claims(token.claims)
        return token.claims

    def issuer_only_for(self, client_id: Any) -> bool:
        if self.issuer_audience_only:
            return True
        client = query_client(client_id) if isinstance(client_id, str) else None
        return client is not None and fapi2.is_fapi2(client.row)

    def validate_jti(self, claims: Any, jti: str) -> bool:
        # RFC 7523 §3 (7): a client assertion's jti is used once, decided by one atomic insert
        # (two concurrent requests with the same assertion: exactly one wins).
        key = f"client-assertion:{str(claims['sub'])[:64]}:{dpop.replay_digest(str(jti))}"
        exp = claims.get("exp")
        expires = dt.datetime.fromtimestamp(int(exp), dt.UTC) if exp else utcnow()
        use = AssertionUse(key, expires + dt.timedelta(minutes=5))
        if self.read_only:
            # the same key's row (expired or not, as the insert's conflict would find it)
            self.use = use
            return uow.db().connection().execute(_SELECT_SEEN_JTI, {"key": key}).first() is None
        return use.first_use()

    def resolve_client_public_key(self, client: OAuthClient) -> KeySet:
        if not client.jwks:
            raise InvalidClientError(description="client has no registered keys")
        return KeySet.import_key_set(client.jwks)


# --------------------------------------------------------------------------- tokens


class AccessTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 JWT access tokens, ES256, with the grant id so revocation can reach them."""

    def get_jwks(self) -> KeySet:
        return KeySet([key_cache().get(uow.db()).signing["ES256"]])

    def get_extra_claims(self, client: OAuthClient, grant_type: str, user: Any, scope: str) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if isinstance(user, Principal):
            extra["gid"] = user.grant.id
        elif user is None:  # RFC 9068 §5: a machine's sub is never a citizen's (idp.oauth.subjects)
            extra["sub"] = machine_subject(client.get_client_id())
        proof = _dpop_proof()
        if proof is not None:
            extra["cnf"] = {"jkt": proof.jkt}  # RFC 9449 §6.1
        device_cert = _mtls_certificate()
        if device_cert is not None:
            if isinstance(user, Principal) and user.account.id != device_cert.account_id:
                # the device certificate must be this citizen's own device
                raise InvalidClientError(description="certificate of another citizen's device")
            extra.setdefault("cnf", {})["x5t#S256"] = device_cert.thumbprint  # RFC 8705 §3.1
        return extra

    def generate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        token: dict[str, Any] = super().generate(*args, **kwargs)
        if _dpop_proof() is not None:
            token["token_type"] = "DPoP"  # RFC 9449 §5
        return token

    def get_audiences(self, client: OAuthClient, user: Any, scope: str) -> list[str]:
        return [client.get_client_id()]

    def get_auth_time(self, user: Any) -> int | None:
        return user.grant.auth_time if isinstance(user, Principal) else None

    def get_acr(self, user: Any) -> str | None:
        return user.grant.acr if isinstance(user, Principal) else None

    def get_amr(self, user: Any) -> list[str] | None:
        return json.loads(user.grant.amr) if isinstance(user, Principal) else None

    def get_jti(self, client: OAuthClient, grant_type: str, user: Any, scope: str) -> str:
        return random_token(16)


def _refresh_token_generator(client: Any, grant_type: str, user: Any, scope: str) -> str:
    return random_token(32)


def save_token(token: dict[str, Any], request: Any) -> None:
    s = uow.db()
    user = request.user
    client_id = request.client.get_client_id()
    proof = _dpop_proof()
    binds = fapi2.binds_refresh_tokens(request.client.row)  # public and FAPI 2.0 clients
    if isinstance(user, Principal) and proof is not None and binds:
        if user.grant.cnf_jkt is None:
            user.grant.cnf_jkt = proof.jkt  # RFC 9449 §5: refresh tokens bound to the key
    device_cert = _mtls_certificate()
    if isinstance(user, Principal) and device_cert is not None and binds:
        if user.grant.cnf_x5t is None:
            user.grant.cnf_x5t = device_cert.thumbprint  # RFC 8705 §4: ... and to the certificate
    if isinstance(user, Principal) and token.get("refresh_token"):
        days = runtime().config.refresh_token_lifetime_days
        scope = token.get("scope", "")
        if isinstance(getattr(request, "refresh_token", None), RefreshRecord):
            # RFC 6749 §6: the new refresh token has exactly the scope of the one it replaces,
            # even when this refresh asked for less (the access token has the narrower scope)
            scope = request.refresh_token.row.scope
        s.add(
            RefreshToken(
                token_digest=runtime_keys().token_digest(token["refresh_token"]),
                grant_id=user.grant.id,
                scope=scope,
                expires_at=utcnow() + dt.timedelta(days=days),
            )
        )
    uow.record(
        action="token.issue",
        outcome="success",
        actor=client_id,
        subject=user.account.id if isinstance(user, Principal) else client_id,
        reason=request.payload.grant_type or "",
        details={"scope": token.get("scope", "")},
    )


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ValidToken:
    claims: dict[str, Any]


def decode_access_token(session: Session, token: str) -> ValidToken | None:
    """Verify one of our JWT access tokens (RFC 9068 §4) and that it was not revoked."""
    if not token or len(token) > 4096:
        return None
    try:
        decoded = jwt.decode(token, key_cache().get(session).verify_set, algorithms=["ES256", "RS256"])
    except (JoseError, ValueError):
        return None
    # RFC 9068 §4: typ must be at+jwt
    if decoded.header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
        return None
    claims = dict(decoded.claims)
    try:
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": runtime().config.issuer},
            exp={"essential": True},
            jti={"essential": True},
        ).validate(claims)
    except JoseError:
        return None
    conn = session.connection()  # Core: every protected request passes here
    if conn.execute(_SELECT_REVOKED_JTI, {"jti": claims["jti"]}).first() is not None:
        return None
    gid = claims.get("gid")
    if gid:
        grant = conn.execute(_SELECT_GRANT_STATE, {"gid": gid}).first()
        if grant is None or grant.revoked_at is not None:
            return None
    return ValidToken(claims)


_REVOKED = cast(Table, RevokedAccessToken.__table__)
_GRANTS = cast(Table, Grant.__table__)
_SELECT_REVOKED_JTI = select(_REVOKED.c.jti).where(_REVOKED.c.jti == bindparam("jti"))
_SELECT_GRANT_STATE = select(_GRANTS.c.revoked_at).where(_GRANTS.c.id == bindparam("gid"))
_REFRESH = cast(Table, RefreshToken.__table__)
_SELECT_REFRESH_STATE = select(_REFRESH.c.used_at, _REFRESH.c.answer_sealed).where(
    _REFRESH.c.token_digest == bindparam("digest")
)


def find_token(token: str, token_type_hint: str | None) -> Any:
    """("access_token", claims) or ("refresh_token", RefreshRecord) for /introspect and /revoke.

    RFC 7009 §2.1 / RFC 7662 §2.1: the hint only says where to look first; a token not found
    there is looked for under the other type (a wrong hint must not leave an access token working
    while /revoke answers 200)."""
    lookups = [_access_token, _refresh_token]
    if token_type_hint == "refresh_token":
        lookups.reverse()
    for lookup in lookups:
        found = lookup(uow.db(), token)
        if found is not None:
            return found
    return None


def _access_token(s: Session, token: str) -> Any:
    valid = decode_access_token(s, token)
    return ("access_token", valid.claims) if valid is not None else None


def _refresh_token(s: Session, token: str) -> Any:
    row = s.get(RefreshToken, runtime_keys().token_digest(token)) if len(token) <= 200 else None
    grant = s.get(Grant, row.grant_id) if row is not None else None
    return ("refresh_token", RefreshRecord(row, grant)) if row is not None and grant is not None else None


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH

    def query_token(self, token: str, token_type_hint: str | None) -> Any:
        return find_token(token, token_type_hint)

    def check_params(self, request: Any, client: Any) -> None:
        # RFC 7662 §2.1 / RFC 7009 §2.1: an unknown hint is no error; the search covers all types
        if "token" not in request.form:
            raise InvalidRequestError()

    def check_permission(self, token: Any, client: OAuthClient, request: Any) -> bool:
        # RFC 7662 §4: only the client the token was issued to may introspect it.
        kind, value = token
        if kind == "access_token":
            return bool(value.get("client_id") == client.get_client_id())
        return bool(value.grant.client_id == client.get_client_id())

    def create_introspection_payload(self, token: Any) -> dict[str, Any]:
        if not token:
            return {"active": False}  # RFC 7662 §2.2
        return self.introspect_token(token)

    def introspect_token(self, token: Any) -> dict[str, Any]:
        kind, value = token
        if kind == "access_token":
            return access_token_introspection(value)
        rec: RefreshRecord = value
        if rec.is_revoked() or rec.is_expired():
            return {"active": False}
        return {
            "active": True,
            "token_type": "refresh_token",
            "scope": rec.row.scope,
            "client_id": rec.grant.client_id,
            "exp": int(rec.row.expires_at.timestamp()),
            "iss": runtime().config.issuer,
        }


def access_token_introspection(value: dict[str, Any]) -> dict[str, Any]:
    """RFC 7662 §2.2 for one of our valid access tokens (its verified claims)."""
    keys = ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti", "acr", "auth_time", "cnf")
    out = {k: value[k] for k in keys if k in value}
    # RFC 9449 §6.2: a DPoP-bound token is of type DPoP (the resource must ask for a proof)
    bound = "jkt" in (value.get("cnf") or {})
    out.update({"active": True, "token_type": "DPoP" if bound else "Bearer"})
    return out


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ALL_AUTH

    def query_token(self, token: str, token_type_hint: str | None) -> Any:
        return find_token(token, token_type_hint)

    check_params = Introspection.check_params

    def check_permission(self, token: Any, client: OAuthClient, request: Any) -> bool:
        return Introspection.check_permission(self, token, client, request)

    def authenticate_token(self, request: Any, client: OAuthClient) -> Any:
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        if token and not self.check_permission(token, client, request):
            return None  # RFC 7009 §2.1: the token was not issued to this client: ignore
        return token

    def revoke_token(self, token: Any, request: Any) -> None:
        s = uow.db()
        kind, value = token
        if kind == "access_token":
            exp = dt.datetime.fromtimestamp(int(value["exp"]), dt.UTC)
            if s.get(RevokedAccessToken, value["jti"]) is None:
                s.add(RevokedAccessToken(jti=value["jti"], expires_at=exp))
            subject = value["jti"]
        else:
            # RFC 7009 §2.1: revoking a refresh token SHOULD revoke the grant's access tokens.
            revoke_grant(s, value.grant.id, "revoked by client (RFC 7009)")
            subject = value.grant.id
        uow.record(
            action="token.revoke",
            outcome="success",
            actor=request.client.get_client_id(),
            subject=subject,
            reason=kind,
        )


# --------------------------------------------------------------------------- assembly


class Rfc9207Issuer(IssuerParameter):  # type: ignore[misc]
    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer  # RFC 9207 §2: `iss` in every authorization response


# Built once: the token endpoint looks up a client on every request. A Core row reads like the
# ORM row (attribute per column) and costs a fraction of an ORM load.
_CLIENTS = cast(Table, Client.__table__)
_SEEN_JTI = cast(Table, SeenJti.__table__)
_SELECT_CLIENT = select(_CLIENTS).where(_CLIENTS.c.client_id == bindparam("cid"))
_SELECT_SEEN_JTI = select(_SEEN_JTI.c.key).where(_SEEN_JTI.c.key == bindparam("key"))


def client_row(session: Session, client_id: str) -> Client | None:
    """A registered client's row (disabled ones too), as a Core row (reads like the ORM row).

    Read once per request: /authorize and the login POST that finishes it need the same client
    several times (Authlib validates the request twice, the subject, the page's name of the
    service). Kept for the request's own database session only (a retried request reads again)."""
    cache: dict[str, Any] | None = None
    if has_request_context():
        held = g.get("_client_rows")
        if held is None or held[0] is not session:
            held = g._client_rows = (session, {})
        cache = held[1]
        if client_id in cache:
            return cast(Client | None, cache[client_id])
    row = session.connection().execute(_SELECT_CLIENT, {"cid": client_id}).first()
    if cache is not None:
        cache[client_id] = row
    return cast(Client | None, row)


def query_client(client_id: str) -> OAuthClient | None:
    if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
        return None
    row = client_row(uow.db(), client_id)
    if row is None or row.disabled:
        return None
    return OAuthClient(row)


class PublicUrlRequest(FlaskOAuth2Request):  # type: ignore[misc]
    """Authlib's Flask request with the URL the public uses: the issuer, then the path.

    Authlib refuses a request whose URL is not https (InsecureTransportError). Behind the
    TLS-terminating proxy (docs/operations.md) requests reach cityid over plain http, with the
    Host header the proxy passes on (HAProxy and nginx's common `proxy_set_header Host $host`
    pass the client's): a URL rebuilt from them is neither the one the client used nor one to
    trust. The issuer is the public https URL, checked at start-up (idp.config.issuer_problem).
    """

    def __init__(self, request: Any, issuer: str) -> None:
        query = request.query_string.decode("latin-1")
        uri = f"{issuer}{request.path}" + (f"?{query}" if query else "")
        # FlaskOAuth2Request.__init__ with this URI in place of request.url
        OAuth2Request.__init__(self, method=request.method, uri=uri, headers=request.headers)
        self._request = request
        self.payload = FlaskOAuth2Payload(request)


def endpoint_proof(headers: Any, path: str) -> dpop.DpopProof | None:
    """The DPoP proof of a POST to our endpoint ``path`` (/token, /par), or None without one
    (RFC 9449 §4.3: htu is the endpoint's public URL; a server nonce where configured, §8)."""
    rt = runtime()
    return dpop.pushed_proof(
        uow.db(),
        headers,
        url=f"{rt.config.issuer}{path}",
        nonce_key=rt.keys.token,
        require_nonce=rt.config.dpop_require_nonce,
    )


def with_dpop_nonce(resp: R) -> R:
    """``resp`` with a fresh server nonce when nonces are required (RFC 9449 §8, §8.2)."""
    rt = runtime()
    if rt.config.dpop_require_nonce:
        resp.headers["DPoP-Nonce"] = dpop.make_nonce(rt.keys.token)
    return resp


def client_secret_basic(query_client: Callable[[str], Any], request: Any) -> Any:
    """Authlib's ``client_secret_basic``, with credentials that are no base64 of UTF-8 (a byte
    over 0x7F in the header, RFC 7617 §2) taken as no credentials: ``invalid_client`` (RFC 6749
    §5.2) where Authlib raised ``ValueError`` (a 500) at every endpoint that authenticates."""
    try:
        return authenticate_client_secret_basic(query_client, request)
    except ValueError:  # UnicodeDecodeError too
        return None


class CityidAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    issuer = ""  # set by create_server

    def create_oauth2_request(self, request: Any) -> FlaskOAuth2Request:
        # The token endpoint (idp.oauth.token_endpoint) runs outside Flask's request context and
        # passes its own request; the views pass none and mean Flask's.
        return PublicUrlRequest(request if request is not None else flask_request, self.issuer)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "after_authenticate_client" and kwargs.get("client") is not None:
            # the audit entry of a refusal after client authentication names the client
            g.authenticated_client_id = kwargs["client"].get_client_id()
        super().send_signal(name, *args, **kwargs)


def create_server(app: Flask) -> AuthorizationServer:
    cfg = app.extensions["cityid"].config
    errors.install()  # RFC 6749 §5.2: descriptions built from request values never raise
    server = CityidAuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.issuer = cfg.issuer
    server.scopes_supported = None
    server._client_auth = ClientAuth(query_client)
    generator = AccessTokenGenerator(
        issuer=cfg.issuer, alg="ES256", refresh_token_generator=_refresh_token_generator
    )
    generator.expires_generator = lambda client, grant_type: cfg.access_token_lifetime_seconds
    server.register_token_generator("default", generator)
    server.register_client_auth_method("client_secret_basic", client_secret_basic)
    server.register_client_auth_method(
        "private_key_jwt",
        PrivateKeyJwt(issuer=cfg.issuer, issuer_audience_only=cfg.client_assertion_issuer_audience_only),
    )
    server.register_grant(AuthorizationCodeGrant, [PkceS256(required=True), OpenIDConnect()])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_extension(Rfc9207Issuer(cfg.issuer))
    server.register_endpoint(Introspection)
    server.register_endpoint(Revocation)
    return server
