"""Pushed authorization requests (RFC 9126): storage of the pushed parameters.

A client pushes its authorization request over an authenticated back channel and gets a
`request_uri`; the browser then carries only `client_id` and `request_uri`, so the request's
parameters can neither be read nor changed on the way. The HTTP side (client authentication,
validation as at the authorization endpoint) is in `idp.views.oidc`.

Lifetime: the request_uri must be first used at the authorization endpoint within
``LIFETIME`` (RFC 9126 §2.2). The same authorization may then come back to it while the citizen
logs in and steps up (RFC 9126 §4 allows repeats for reloads), until ``CONTINUE`` after the push
at most, and never after a code was issued from it (one-time use, RFC 9126 §4).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from idp.crypto import equal, random_token
from idp.instance import InstanceKeys
from idp.models import PushedRequest

PREFIX = "urn:ietf:params:oauth:request_uri:"  # RFC 9126 §2.2
LIFETIME = dt.timedelta(seconds=90)
CONTINUE = dt.timedelta(minutes=30)
MAX_REQUEST_URI = 200


class ParError(Exception):
    """`invalid_request_uri` (OIDC Core §3.1.2.6, RFC 9101 §7): unknown, expired or used."""

    error = "invalid_request_uri"


@dataclass(frozen=True)
class Pushed:
    digest: str
    params: list[tuple[str, str]]
    front_channel: bool = False  # POSTed by the browser, not pushed by the client (see push)


def _context(digest: str) -> str:
    return f"par:{digest}"


def push(
    session: Session,
    keys: InstanceKeys,
    client_id: str,
    params: list[tuple[str, str]],
    now: dt.datetime,
    *,
    front_channel: bool = False,
) -> tuple[str, int]:
    """Store a validated pushed request; return its request_uri and lifetime in seconds.

    ``front_channel``: an authorization request the browser POSTed (OIDC Core §3.1.2.1), kept
    the same way so that its parameters never appear in a URL; it proves nothing about the
    client and is validated at the authorization endpoint like any other request."""
    reference = random_token(32)  # 256 bits: the request_uri is a bearer reference
    request_uri = PREFIX + reference
    digest = keys.token_digest(request_uri)
    session.add(
        PushedRequest(
            digest=digest,
            client_id=client_id,
            params_enc=keys.personal_data.seal(json.dumps(params).encode(), _context(digest)),
            created_at=now,
            expires_at=now + LIFETIME,
            front_channel=front_channel,
        )
    )
    return request_uri, int(LIFETIME.total_seconds())


def resolve(
    session: Session, keys: InstanceKeys, request_uri: str, client_id: str, now: dt.datetime
) -> Pushed:
    """The pushed parameters for an authorization request that names them."""
    if not request_uri.startswith(PREFIX) or len(request_uri) > MAX_REQUEST_URI:
        raise ParError("not a request_uri of this server")
    digest = keys.token_digest(request_uri)
    row = session.get(PushedRequest, digest)
    if row is None:
        raise ParError("unknown request_uri")
    if not equal(row.client_id, client_id):  # RFC 9126 §4: the same client
        raise ParError("request_uri of another client")
    if row.consumed_at is not None:
        raise ParError("request_uri already used")  # RFC 9126 §4: one-time use
    if row.first_used_at is None:
        if row.expires_at <= now:
            raise ParError("request_uri expired")  # RFC 9126 §2.2 expires_in
        row.first_used_at = now
    elif row.created_at + CONTINUE <= now:
        raise ParError("request_uri expired")
    params = json.loads(keys.personal_data.open(row.params_enc, _context(digest)))
    return Pushed(digest, [(str(k), str(v)) for k, v in params], front_channel=row.front_channel)


def consume(session: Session, digest: str, now: dt.datetime) -> bool:
    """Mark used when a code is issued from it; False if another request got there first."""
    res = session.execute(
        update(PushedRequest)
        .where(PushedRequest.digest == digest, PushedRequest.consumed_at.is_(None))
        .values(consumed_at=now)
    )
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def purge(session: Session, now: dt.datetime) -> None:
    """Requests never used within their lifetime go at once; used ones when the login they
    started can no longer continue."""
    session.execute(
        delete(PushedRequest).where(
            (PushedRequest.created_at < now - CONTINUE)
            | (PushedRequest.first_used_at.is_(None) & (PushedRequest.expires_at <= now))
        )
    )
