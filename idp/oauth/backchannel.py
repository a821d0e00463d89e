"""OpenID Connect Back-Channel Logout 1.0, delivered from a database outbox with retries.

Rows are claimed with a short lease in one transaction and delivered outside it, so that no
database lock is held during HTTP and a process that dies mid-delivery leaves the row to be
retried when its lease expires.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from db import audit, first_unclaimed, transaction, utcnow
from idp.crypto import random_token
from idp.keys import KeyCache
from idp.models import Client, Grant, LoginSession, LogoutOutbox

EVENT = "http://schemas.openid.net/event/backchannel-logout"
LEASE = dt.timedelta(seconds=60)
MAX_ATTEMPTS = 10
TIMEOUT = 5.0


def logout_token(
    session: Session,
    keys: KeyCache,
    *,
    issuer: str,
    client: Client,
    sub: str | None,
    sid: str | None,
) -> str:
    """OIDC Back-Channel Logout §2.4: iss, aud, iat, exp, jti, events, sub and/or sid; no nonce."""
    key = keys.get(session).signing[client.id_token_alg]
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": client.client_id,
        "iat": now,
        "exp": now + 120,
        "jti": random_token(16),
        "events": {EVENT: {}},
    }
    if sub:
        claims["sub"] = sub
    if sid:
        claims["sid"] = sid
    # §2.4: typ "logout+jwt" (explicit typing, RFC 8725 §3.11)
    return jwt.encode({"alg": client.id_token_alg, "kid": key.kid, "typ": "logout+jwt"}, claims, key)


def enqueue_for_session(
    session: Session, keys: KeyCache, *, issuer: str, sid: str, subject_key: bytes
) -> int:
    """Queue a logout token for every client that holds a grant in this browser session."""
    from idp.oauth.subjects import subject_for

    n = 0
    grants = session.execute(select(Grant).where(Grant.sid == sid)).scalars().all()
    seen: set[str] = set()
    for g in grants:
        if g.client_id in seen:
            continue
        seen.add(g.client_id)
        client = session.get(Client, g.client_id)
        if client is None or not client.backchannel_logout_uri or g.account_id is None:
            continue
        token = logout_token(
            session,
            keys,
            issuer=issuer,
            client=client,
            sub=subject_for(subject_key, client, g.account_id),
            sid=sid,
        )
        session.add(
            LogoutOutbox(
                client_id=client.client_id,
                url=client.backchannel_logout_uri,
                logout_token=token,
                next_attempt_at=utcnow(),
            )
        )
        n += 1
    return n


@dataclass(frozen=True)
class Delivery:
    id: str
    url: str
    token: str
    attempts: int


@dataclass(frozen=True)
class Ended:
    sessions: int
    grants: int
    notices: int


def end_sessions(
    session: Session,
    keys: KeyCache,
    *,
    issuer: str,
    subject_key: bytes,
    account_id: str,
    reason: str,
    keep_sid: str | None = None,
) -> Ended:
    """End the account's browser sessions (all, or all but ``keep_sid``) as a logout would.

    Every service holding a grant from one of them is told by back-channel logout, and those
    grants are revoked (their refresh and access tokens stop working): what a password change or
    reset needs so that a session an attacker holds ends at the services too (OWASP Session
    Management). Grants from sessions that have since expired count as well. Grants without a
    browser session (devices) stay.
    """
    from idp.oauth.server import revoke_grant

    # sessions with a live grant or still logged in; the others ended (and were told) before
    granted = select(Grant.sid).where(
        Grant.account_id == account_id, Grant.sid.is_not(None), Grant.revoked_at.is_(None)
    )
    browsers = select(LoginSession.sid).where(LoginSession.account_id == account_id)
    sids: set[str] = {sid for sid in session.execute(granted.union(browsers)).scalars() if sid is not None}
    sids.discard(keep_sid or "")
    notices = sum(
        enqueue_for_session(session, keys, issuer=issuer, sid=sid, subject_key=subject_key)
        for sid in sorted(sids)
    )
    grant_ids = list(
        session.execute(
            select(Grant.id).where(
                Grant.account_id == account_id, Grant.sid.in_(sids), Grant.revoked_at.is_(None)
            )
        ).scalars()
    )
    for gid in grant_ids:
        revoke_grant(session, gid, reason)
    gone = session.execute(
        delete(LoginSession).where(LoginSession.account_id == account_id, LoginSession.sid.in_(sids))
    )
    return Ended(sessions=int(gone.rowcount or 0), grants=len(grant_ids), notices=notices)  # type: ignore[attr-defined]


def end_client_grants(
    session: Session,
    keys: KeyCache,
    *,
    issuer: str,
    subject_key: bytes,
    account_id: str,
    client_id: str,
    reason: str,
) -> int:
    """The citizen withdrew consent from one service: every grant the service holds from this
    account is revoked (its refresh and access tokens stop working), and the service is told to
    end the citizen's sessions: a logout token with ``sub`` and no ``sid`` (Back-Channel Logout
    §2.4: all of this subject's sessions at the service). Returns the grants revoked."""
    from idp.oauth.server import revoke_grant
    from idp.oauth.subjects import subject_for

    grant_ids = list(
        session.execute(
            select(Grant.id).where(
                Grant.account_id == account_id, Grant.client_id == client_id, Grant.revoked_at.is_(None)
            )
        ).scalars()
    )
    for gid in grant_ids:
        revoke_grant(session, gid, reason)
    client = session.get(Client, client_id)
    if grant_ids and client is not None and client.backchannel_logout_uri:
        sub = subject_for(subject_key, client, account_id)
        token = logout_token(session, keys, issuer=issuer, client=client, sub=sub, sid=None)
        session.add(
            LogoutOutbox(
                client_id=client_id,
                url=client.backchannel_logout_uri,
                logout_token=token,
                next_attempt_at=utcnow(),
            )
        )
    return len(grant_ids)


def _renewed(session: Session, keys: KeyCache, token: str) -> str:
    """The queued logout token signed anew with fresh ``iat``/``exp`` (same ``jti``, ``sub``,
    ``sid``): a retry an hour later must not carry a token the service has to reject as expired
    (Back-Channel Logout §2.6 step 3)."""
    decoded = jwt.decode(token, keys.get(session).verify_set)  # our own, from our database
    alg = decoded.header["alg"]
    key = keys.get(session).signing[alg]
    now = int(time.time())
    claims = {**decoded.claims, "iat": now, "exp": now + 120}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "logout+jwt"}, claims, key)


def _claim_one(sessions: sessionmaker[Session], keys: KeyCache) -> Delivery | None:
    """Lease the oldest due row. One at a time: a lease covers one delivery (at most TIMEOUT to
    connect plus TIMEOUT to read), never a batch that could outlast it."""
    now = utcnow()
    with transaction(sessions) as s:
        q = (
            select(LogoutOutbox)
            .where(
                LogoutOutbox.delivered_at.is_(None),
                LogoutOutbox.failed_at.is_(None),
                LogoutOutbox.next_attempt_at <= now,
            )
            .order_by(LogoutOutbox.next_attempt_at)
        )
        r = first_unclaimed(s, q)
        if r is None:
            return None
        r.attempts += 1
        r.next_attempt_at = now + LEASE
        try:
            token = _renewed(s, keys, r.logout_token)
        except (JoseError, ValueError, KeyError):  # signed with a key that is gone: send as queued
            token = r.logout_token
        return Delivery(r.id, r.url, token, r.attempts)


# One delivery ends after this long whatever the service does (a socket timeout bounds each read,
# not a response trickled a byte at a time); below LEASE, so no other worker claims it meanwhile.
DEADLINE = 15.0
MAX_RESPONSE = 4096  # what is read of the service's answer


def post_logout_token(url: str, token: str) -> str | None:
    """§2.5: POST the form-encoded ``logout_token``; 200 (or 204) means done. None on success,
    else what went wrong. No redirects are followed; at most MAX_RESPONSE bytes are read; the
    whole exchange ends after DEADLINE (the socket is shut down from a timer)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL"
    body = urlencode({"logout_token": token}).encode()
    conn: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=TIMEOUT, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    except ValueError:  # a port out of range
        return "not an http(s) URL"
    expired = threading.Event()

    def abort() -> None:
        expired.set()
        if conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(DEADLINE, abort)
    timer.start()
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "cityid"}
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(MAX_RESPONSE)
        status = resp.status
    except (OSError, http.client.HTTPException) as exc:
        return "deadline passed" if expired.is_set() else type(exc).__name__
    finally:
        timer.cancel()
        conn.close()
    return None if status in (200, 204) else f"HTTP {status}"


def deliver_due(sessions: sessionmaker[Session], keys: KeyCache, *, limit: int = 50) -> int:
    """Deliver up to ``limit`` due logout tokens. Returns how many were delivered."""
    delivered = 0
    for _ in range(limit):
        d = _claim_one(sessions, keys)
        if d is None:
            break
        error = post_logout_token(d.url, d.token)
        with transaction(sessions) as s:
            row = s.get(LogoutOutbox, d.id)
            if row is None:
                continue
            if error is None:
                row.delivered_at = utcnow()
                delivered += 1
                audit.record(
                    s,
                    action="logout.backchannel",
                    outcome="success",
                    subject=row.client_id,
                    reason="delivered",
                )
            else:
                row.last_error = error
                if d.attempts >= MAX_ATTEMPTS:
                    row.failed_at = utcnow()
                    audit.record(
                        s,
                        action="logout.backchannel",
                        outcome="failure",
                        subject=row.client_id,
                        reason=f"gave up: {error}",
                    )
                else:
                    backoff = min(3600, 5 * 2**d.attempts)
                    row.next_attempt_at = utcnow() + dt.timedelta(seconds=backoff)
    return delivered


def pending_json(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        rows = s.execute(select(LogoutOutbox).where(LogoutOutbox.delivered_at.is_(None))).scalars()
        return json.dumps(
            [{"id": r.id, "client": r.client_id, "attempts": r.attempts, "error": r.last_error} for r in rows]
        )
