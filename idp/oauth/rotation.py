"""Refresh token rotation with a grace window for retries (RFC 9700 §4.14.2).

A rotated refresh token presented again means it leaked, and the whole grant is revoked. But a
city app on a flaky mobile network retries a refresh whose answer it never received, or sends
two refreshes at once: without a grace window it loses the grant, including the winning
request's tokens. Within ``refresh_token_grace_seconds`` of the rotation, the *same* client,
presenting the token with the same DPoP key and the same certificate (where the rotation had
them) and asking for the same scope, gets the rotation's answer again: the identical refresh and
access token, never new ones (as Ory Hydra's ``rotation_grace_period``). Anything else is the
replay it always was.

The window is only for a client that can prove it is the one the tokens went to: a confidential
client (it authenticates at the token endpoint) or a sender-constrained refresh token (DPoP key,
certificate). For a public client with unbound tokens the "same client" is just a client_id
anyone can send: its replay revokes the family as ever (RFC 9700 §4.14.2: theft detection), and
no answer is kept for it.

The answer is kept sealed (AES-256-GCM, ``InstanceKeys.token_answer``, bound to the digest of
the rotated token as associated data) on the rotated token's row: refresh tokens themselves are
stored as keyed digests only, and the plaintext exists nowhere else. It is cleared as soon as
its successor is rotated or the grant is revoked, and by the background purge once past any
window (idp.serve.purge_expired); past the window it is never opened.

Concurrency: the grant claims the old token (one UPDATE ... WHERE used_at IS NULL) before it
makes new tokens. Of two requests at once, exactly one claims it; on PostgreSQL the other's
UPDATE waits for the winner's commit and then reads the kept answer; SQLite (BEGIN IMMEDIATE)
runs them one after the other, and the second finds the token used. Either way both answer 200
with the same tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag

from idp.crypto import Sealer, equal


@dataclass(frozen=True)
class RotationAnswer:
    """What one rotation answered, and to whom."""

    token: dict[str, Any]  # the RFC 6749 §5.1 answer: access_token, refresh_token, expires_in, ...
    issued_at: int  # unix time
    client_id: str
    jkt: str | None  # RFC 9449 §6.1: the DPoP key the access token is bound to
    x5t: str | None  # RFC 8705 §3.1: the certificate it is bound to
    scope_asked: str  # the refresh request's scope parameter ("" without one)


@dataclass(frozen=True)
class Retry:
    """A refresh request presenting a token again: who asks, with what."""

    client_id: str
    jkt: str | None
    x5t: str | None
    scope_asked: str
    confidential: bool = False  # the client authenticated at the token endpoint (RFC 6749 §2.3)


def eligible(confidential: bool, jkt: str | None, x5t: str | None) -> bool:
    """The grace window applies: a confidential client, or tokens bound to a DPoP key or a
    certificate (RFC 9700 §4.14.2: a public client's unbound refresh token is rotated without
    mercy, its replay is the theft detection)."""
    return confidential or jkt is not None or x5t is not None


def _context(token_digest: str) -> str:
    return f"refresh-answer:{token_digest}"


def seal(sealer: Sealer, token_digest: str, answer: RotationAnswer) -> bytes:
    body = {
        "token": answer.token,
        "issued_at": answer.issued_at,
        "client_id": answer.client_id,
        "jkt": answer.jkt,
        "x5t": answer.x5t,
        "scope_asked": answer.scope_asked,
    }
    return sealer.seal(json.dumps(body).encode(), _context(token_digest))


def unseal(sealer: Sealer, token_digest: str, sealed: bytes | None) -> RotationAnswer | None:
    """The answer sealed for ``token_digest``, or None (none kept, or not ours: a row's sealed
    answer copied onto another row fails its associated data)."""
    if not sealed:
        return None
    try:
        body = json.loads(sealer.open(sealed, _context(token_digest)))
    except (InvalidTag, ValueError):
        return None
    return RotationAnswer(
        token=body["token"],
        issued_at=int(body["issued_at"]),
        client_id=body["client_id"],
        jkt=body["jkt"],
        x5t=body["x5t"],
        scope_asked=body["scope_asked"],
    )


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return equal(a, b)


def refusal(
    answer: RotationAnswer | None, retry: Retry, *, used_at: float, now: float, grace_seconds: int
) -> str | None:
    """Why presenting a rotated token again is a replay (the grant must be revoked), or None when
    it is the same client's retry within the grace window. The checks, in order:"""
    if grace_seconds <= 0:
        return "(no grace window)"
    if now - used_at > grace_seconds:
        return "after the grace window"
    if not eligible(retry.confidential, retry.jkt, retry.x5t):
        return "by a public client without sender-constrained tokens"  # RFC 9700 §4.14.2
    if answer is None:
        # never kept (rotated with the window off), or cleared: its successor was rotated since
        return "after its successor was used"
    if not equal(retry.client_id, answer.client_id):
        return "by another client"
    if not _same(retry.jkt, answer.jkt):
        return "with another DPoP key"  # RFC 9449 §5: the tokens are bound to the rotation's key
    if not _same(retry.x5t, answer.x5t):
        return "with another certificate"  # RFC 8705 §3: ... or to its certificate
    if retry.scope_asked != answer.scope_asked:
        return "asking another scope"  # not a retry of the same request
    return None


def again(answer: RotationAnswer, now: float | None = None) -> dict[str, Any]:
    """The rotation's answer once more: the same tokens; ``expires_in`` (RFC 6749 §5.1: the
    lifetime of the access token) counts from the rotation, as the token's own ``exp`` does."""
    token = dict(answer.token)
    elapsed = int((time.time() if now is None else now) - answer.issued_at)
    if isinstance(token.get("expires_in"), int):
        token["expires_in"] = max(0, token["expires_in"] - max(0, elapsed))
    return token
