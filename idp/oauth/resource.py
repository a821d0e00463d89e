"""Protected resources of cityid (userinfo, the demo resource): Bearer and DPoP tokens.

RFC 6750 §2.1 / §3 for Bearer, RFC 9449 §7 for DPoP: a DPoP-bound token (``cnf.jkt``) is only
accepted with the ``DPoP`` scheme and a proof by the bound key that names this request and
this token (``ath``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify, request

from db import utcnow
from idp import uow
from idp.crypto import equal
from idp.oauth import dpop
from idp.oauth.errors import safe_description
from idp.oauth.server import decode_access_token
from idp.runtime import runtime


@dataclass
class ResourceError(Exception):
    status: int
    error: str
    description: str
    scheme: str = "Bearer"

    def response(self) -> Response:
        resp = jsonify(error=self.error, error_description=self.description)
        resp.status_code = self.status
        if self.scheme == "any":
            # RFC 6750 §3.1: no credentials, no error code; both schemes we take (RFC 9449 §7.1)
            resp.headers["WWW-Authenticate"] = f"Bearer, {dpop.www_authenticate()}"
        elif self.scheme == "DPoP":
            resp.headers["WWW-Authenticate"] = dpop.www_authenticate(self.error, self.description)
        else:
            resp.headers["WWW-Authenticate"] = (
                f'Bearer error="{self.error}", error_description="{safe_description(self.description)}"'
            )
        if self.error == "use_dpop_nonce":
            resp.headers["DPoP-Nonce"] = dpop.make_nonce(runtime().keys.token)
        return resp


def authenticate(required_scope: str | None = None) -> dict[str, Any]:
    """Return the claims of a valid access token for this request, or raise ResourceError."""
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    scheme_l = scheme.lower()
    if not auth:
        raise ResourceError(401, "invalid_token", "access token missing", scheme="any")
    if scheme_l not in ("bearer", "dpop") or not token:
        raise ResourceError(401, "invalid_request", "use the Bearer or DPoP scheme", scheme="any")
    claims = decode_access_token(uow.db(), token.strip())
    if claims is None:
        uow.record(
            action="resource.refuse",
            outcome="denied",
            actor="unknown",
            subject=request.path,
            reason="invalid or revoked token",
        )
        raise ResourceError(
            401,
            "invalid_token",
            "the access token is not valid",
            scheme="DPoP" if scheme_l == "dpop" else "Bearer",
        )
    c = claims.claims
    jkt = (c.get("cnf") or {}).get("jkt")
    if jkt:
        if scheme_l != "dpop":  # RFC 9449 §7.2: a bound token presented as Bearer
            raise ResourceError(401, "invalid_token", "this token is DPoP-bound", scheme="DPoP")
        cfg = runtime().config
        try:
            proof = dpop.verify_proof(
                uow.db(),
                dpop.header_value(request.headers),
                method=request.method,
                url=f"{cfg.issuer}{request.path}",
                nonce_key=runtime().keys.token,
                require_nonce=cfg.dpop_require_nonce,
                access_token=token.strip(),
            )
        except dpop.DpopError as exc:
            uow.record(
                action="resource.refuse",
                outcome="denied",
                actor=c.get("client_id", ""),
                subject=request.path,
                reason=f"{exc.error}: {exc.description}",
            )
            raise ResourceError(401, exc.error, exc.description, scheme="DPoP") from exc
        if not equal(proof.jkt, jkt):  # §7.1: the key the token is bound to
            uow.record(
                action="resource.refuse",
                outcome="denied",
                actor=c.get("client_id", ""),
                subject=request.path,
                reason="DPoP key does not match cnf.jkt",
            )
            raise ResourceError(
                401, "invalid_dpop_proof", "proof key does not match the token", scheme="DPoP"
            )
    x5t = (c.get("cnf") or {}).get("x5t#S256")
    if x5t:
        # RFC 8705 §3.2: the request must come over mTLS with the certificate the token is bound to
        from idp.oauth import mtls

        try:
            cert = mtls.presented(request.headers, runtime().config.mtls_client_cert_header)
        except mtls.MtlsError:
            cert = None
        problem = None if mtls.matches(x5t, cert) else "certificate does not match cnf.x5t#S256"
        if problem is None and cert is not None:
            try:  # RFC 5280 §6.1.3, as at the token endpoint: a removed device's certificate is done
                mtls.device_certificate(uow.db(), cert, utcnow())
            except mtls.MtlsError as exc:
                problem = str(exc)
        if problem is not None:
            uow.record(
                action="resource.refuse",
                outcome="denied",
                actor=c.get("client_id", ""),
                subject=request.path,
                reason=problem,
            )
            raise ResourceError(401, "invalid_token", "the certificate the token is bound to is not accepted")
    if scheme_l == "dpop" and not jkt:
        raise ResourceError(401, "invalid_token", "token is not DPoP-bound", scheme="DPoP")
    if required_scope and required_scope not in str(c.get("scope", "")).split():
        raise ResourceError(
            403, "insufficient_scope", f"needs scope {required_scope}", scheme="DPoP" if jkt else "Bearer"
        )
    return dict(c)
