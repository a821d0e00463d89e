"""Glue between HTTP requests, the database and the pure ``policies`` package.

Other areas (virtual smartcards, WebAuthn, eID) contribute what an account can do through
``ACCOUNT_FACT_HOOKS``: callables ``(session, account_id) -> dict`` with any of the keys
``devices``, ``webauthn`` (tuples of policy facts) and ``eid_level``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from idp.models import Account, Client, LoginSession
from policies import (
    AccountFacts,
    AcrClaimRequest,
    AuthnRequestFacts,
    ClientPolicy,
    Factor,
    FactorKind,
    Level,
    SessionFacts,
    parse_acr,
)

ACCOUNT_FACT_HOOKS: list[Callable[[Session, str], Mapping[str, Any]]] = []


class BadClaimsParameter(ValueError):
    pass


def parse_claims_acr(raw: str | None) -> AcrClaimRequest | None:
    """OIDC Core §5.5 / §5.5.1.1: the `acr` member of the `id_token` claims request."""
    if not raw:
        return None
    try:
        claims = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise BadClaimsParameter("claims is not JSON") from exc
    if not isinstance(claims, dict):
        raise BadClaimsParameter("claims must be a JSON object")
    acr = (claims.get("id_token") or {}).get("acr") if isinstance(claims.get("id_token"), dict) else None
    if acr is None:
        return None
    if not isinstance(acr, dict):
        raise BadClaimsParameter("claims.id_token.acr must be an object")
    values = acr.get("values") or ([acr["value"]] if "value" in acr else [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadClaimsParameter("acr values must be strings")
    return AcrClaimRequest(values=tuple(values), essential=bool(acr.get("essential")))


def valid_max_age(value: str | None) -> bool:
    """OIDC Core §3.1.2.1: max_age is a non-negative integer of seconds (ASCII digits only:
    ``str.isdigit`` also takes "²", which ``int`` refuses)."""
    return value is None or (value.isascii() and value.isdigit() and len(value) <= 12)


def request_facts(values: Mapping[str, str], requested_at: dt.datetime, scope: str) -> AuthnRequestFacts:
    max_age = values.get("max_age")
    # An RFC 9470 step-up arrives as ordinary acr_values and max_age (RFC 9470 §4): nothing in
    # the request tells it apart, so it is honoured as a voluntary acr_values wish (the target
    # level is raised to it), and the resource server checks the acr of the new token.
    return AuthnRequestFacts(
        requested_at=requested_at,
        scopes=frozenset(scope.split()),
        acr_values=tuple(values.get("acr_values", "").split()),
        acr_claim=parse_claims_acr(values.get("claims")),
        max_age=int(max_age) if max_age is not None and valid_max_age(max_age) else None,
        prompt=frozenset(values.get("prompt", "").split()),
    )


def client_policy(client: Client) -> ClientPolicy:
    level = parse_acr(client.min_level) if client.min_level else None
    return ClientPolicy(client_id=client.client_id, minimum_level=level or Level.LOW)


def scope_levels(config_levels: Mapping[str, str], client: Client) -> dict[str, Level]:
    out: dict[str, Level] = {}
    for scope, acr in {**config_levels, **json.loads(client.scope_levels or "{}")}.items():
        level = parse_acr(acr)
        if level is not None:
            out[scope] = level
    return out


def session_facts(s: LoginSession | None) -> SessionFacts:
    if s is None or s.account_id is None:
        return SessionFacts()
    factors = []
    for kind, value in json.loads(s.factors).items():
        ts, level = (value, None) if isinstance(value, int) else (value[0], value[1])
        factors.append(
            Factor(
                kind=FactorKind(kind),
                auth_time=dt.datetime.fromtimestamp(ts, dt.UTC),
                level=Level(level) if level is not None else None,
            )
        )
    return SessionFacts(tuple(factors))


def account_facts(session: Session, account: Account) -> AccountFacts:
    extra: dict[str, Any] = {"devices": (), "webauthn": (), "eid_level": None}
    for hook in ACCOUNT_FACT_HOOKS:
        for key, value in hook(session, account.id).items():
            if key in ("devices", "webauthn"):
                extra[key] = tuple(extra[key]) + tuple(value)
            elif key == "eid_level" and value is not None:
                extra[key] = value
    return AccountFacts(
        email_verified=account.email_verified_at is not None,
        has_password=account.password_hash is not None,
        devices=extra["devices"],
        webauthn=extra["webauthn"],
        eid_level=extra["eid_level"],
    )


def holds_strong_factor(session: Session, account: Account) -> bool:
    """Whether the account has a means at *substantial* or above: an enrolled device or a
    passkey that reaches it, or a linked ID card (``eid_level`` only says a card *could* be
    used, so the link itself is asked for).

    Such an account binds or removes a factor of that kind only in a session that proved that
    level recently (eIDAS Implementing Regulation 2015/1502, Annex 2.2.4: replacing a means
    relies on a valid means of the same or higher level; NIST SP 800-63B §6.1.2.1). Without one
    (the first device or passkey), the password is enough and the citizen is told by e-mail.
    """
    from idp.eid_store import link_of_account

    facts = account_facts(session, account)
    reached = [d.max_level for d in facts.devices] + [w.max_level for w in facts.webauthn]
    if any(level is not None and level >= Level.SUBSTANTIAL for level in reached):
        return True
    # a linked card counts while an eID connector can use it (else the guard would lock out a
    # citizen whose only strong means is a card nobody can read any more)
    return facts.eid_level is not None and link_of_account(session, account.id) is not None
