"""eID storage: links (account <-> sector pseudonym), verified attributes, seen SAML assertion
IDs, and the pending eID state between start, callback and completion. No Flask.

Every function takes the request's SQLAlchemy session; the caller's unit of work commits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import utcnow
from idp.crypto import Sealer, equal, keyed_digest
from idp.eid.connector import EidAttribute, EidResult, PendingEid
from idp.eid_models import EidLink, EidPending, EidSeenAssertion, EidVerifiedAttribute
from policies import Level

PENDING_LIFETIME = dt.timedelta(minutes=15)


class LinkRefused(Exception):
    """Linking would join one eID to two accounts, or two eIDs to one account."""

    def __init__(self, code: str, text: str) -> None:
        self.code = code
        self.text = text
        super().__init__(f"{code}: {text}")


@dataclass(frozen=True)
class VerifiedAttribute:
    name: str
    value: str
    source: str
    level: Level
    verified_at: dt.datetime
    simulation: bool


# --------------------------------------------------------------------------- links


def pseudonym_digest(key: bytes, issuer: str, pseudonym: str) -> str:
    """Blind index of a pseudonym, scoped to the eID service that issued it."""
    return keyed_digest(key, f"{issuer}\x00{pseudonym}")


def link_by_pseudonym(session: Session, digest: str) -> EidLink | None:
    return session.execute(select(EidLink).where(EidLink.pseudonym_digest == digest)).scalar_one_or_none()


def link_of_account(session: Session, account_id: str) -> EidLink | None:
    return session.execute(select(EidLink).where(EidLink.account_id == account_id)).scalar_one_or_none()


def link(
    session: Session,
    sealer: Sealer,
    *,
    account_id: str,
    digest: str,
    connector: str,
    result: EidResult,
) -> tuple[EidLink, bool]:
    """Link the eID to the account (or refresh an existing link). Returns (link, created).

    Refuses a pseudonym linked to another account and an account linked to another eID: an
    eID identifies one person, an account belongs to one person.
    """
    by_pseudonym = link_by_pseudonym(session, digest)
    if by_pseudonym is not None and by_pseudonym.account_id != account_id:
        raise LinkRefused("pseudonym_linked_elsewhere", "this eID is linked to another account")
    by_account = link_of_account(session, account_id)
    if by_account is not None and not equal(by_account.pseudonym_digest, digest):
        raise LinkRefused("account_linked_to_other_eid", "this account is linked to another eID")
    now = utcnow()
    created = by_account is None
    row = by_account or EidLink(account_id=account_id, pseudonym_digest=digest, linked_at=now)
    row.connector = connector
    row.issuer = result.issuer[:300]
    row.level = int(result.level)
    row.simulation = result.simulation
    row.last_used_at = now
    if created:
        session.add(row)
        session.flush()
    _store_attributes(session, sealer, row, result)
    return row, created


def unlink(session: Session, account_id: str) -> bool:
    """Remove the account's ID card link and its verified attributes (a new card has a new
    pseudonym; a lost card must not log in): the service desk's way out. True if there was one."""
    row = link_of_account(session, account_id)
    if row is None:
        return False
    session.execute(delete(EidVerifiedAttribute).where(EidVerifiedAttribute.link_id == row.id))
    session.delete(row)
    return True


def _store_attributes(session: Session, sealer: Sealer, row: EidLink, result: EidResult) -> None:
    """Replace the link's attributes with this authentication's: the newest word counts."""
    session.execute(delete(EidVerifiedAttribute).where(EidVerifiedAttribute.link_id == row.id))
    for attr in result.attributes:
        session.add(
            EidVerifiedAttribute(
                link_id=row.id,
                name=attr.name[:64],
                value_enc=sealer.seal(attr.value.encode(), f"eid-attribute:{row.id}:{attr.name}"),
                source=attr.source[:300],
                level=int(attr.level),
                verified_at=result.auth_time,
            )
        )


def verified_attributes(session: Session, sealer: Sealer, account_id: str) -> list[VerifiedAttribute]:
    row = link_of_account(session, account_id)
    if row is None:
        return []
    rows = session.execute(
        select(EidVerifiedAttribute)
        .where(EidVerifiedAttribute.link_id == row.id)
        .order_by(EidVerifiedAttribute.name)
    ).scalars()
    return [
        VerifiedAttribute(
            name=a.name,
            value=sealer.open(a.value_enc, f"eid-attribute:{row.id}:{a.name}").decode(),
            source=a.source,
            level=Level(a.level),
            verified_at=a.verified_at,
            simulation=row.simulation,
        )
        for a in rows
    ]


# --------------------------------------------------------------------------- replay


class DbReplayStore:
    """``idp.eid.ReplayStore`` on the database: the primary key makes ``seen`` atomic (of two
    concurrent inserts of one ID, the second fails on the unique constraint)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def seen(self, assertion_id: str, expires: dt.datetime) -> bool:
        digest = hashlib.sha256(assertion_id.encode()).hexdigest()
        s = self._session
        s.execute(delete(EidSeenAssertion).where(EidSeenAssertion.expires_at <= utcnow()))
        if s.get(EidSeenAssertion, digest) is not None:
            return True
        try:
            with s.begin_nested():
                s.add(EidSeenAssertion(id_digest=digest, expires_at=expires))
        except IntegrityError:
            return True
        return False


# --------------------------------------------------------------------------- pending state


def _pending_json(p: PendingEid) -> bytes:
    d = dataclasses.asdict(p)
    d["minimum_level"] = int(p.minimum_level)
    d["created_at"] = p.created_at.isoformat()
    return json.dumps(d).encode()


def _pending_from(raw: bytes) -> PendingEid:
    d: dict[str, Any] = json.loads(raw)
    d["minimum_level"] = Level(d["minimum_level"])
    d["created_at"] = dt.datetime.fromisoformat(d["created_at"])
    return PendingEid(**d)


def _result_json(r: EidResult) -> bytes:
    return json.dumps(
        {
            "pseudonym": r.pseudonym,
            "level": int(r.level),
            "acr": r.acr,
            "issuer": r.issuer,
            "auth_time": r.auth_time.isoformat(),
            "attributes": [[a.name, a.value, a.source, int(a.level)] for a in r.attributes],
            "authn_context": r.authn_context,
            "simulation": r.simulation,
        }
    ).encode()


def _result_from(raw: bytes) -> EidResult:
    d = json.loads(raw)
    return EidResult(
        pseudonym=d["pseudonym"],
        level=Level(d["level"]),
        acr=d["acr"],
        issuer=d["issuer"],
        auth_time=dt.datetime.fromisoformat(d["auth_time"]),
        attributes=tuple(EidAttribute(n, v, s, Level(lv)) for n, v, s, lv in d["attributes"]),
        authn_context=d["authn_context"],
        simulation=bool(d["simulation"]),
    )


def state_digest(key: bytes, state: str) -> str:
    return keyed_digest(key, f"eid-state\x00{state}")


def save_pending(
    session: Session,
    sealer: Sealer,
    *,
    digest: str,
    session_digest: str,
    pending: PendingEid,
    client_id: str | None,
) -> None:
    session.execute(delete(EidPending).where(EidPending.expires_at <= utcnow()))
    session.add(
        EidPending(
            state_digest=digest,
            session_digest=session_digest,
            connector=pending.connector,
            pending_enc=sealer.seal(_pending_json(pending), f"eid-pending:{digest}"),
            client_id=client_id,
            expires_at=utcnow() + PENDING_LIFETIME,
        )
    )


def find_pending(session: Session, sealer: Sealer, digest: str) -> tuple[EidPending, PendingEid] | None:
    row = session.get(EidPending, digest)
    if row is None or row.expires_at <= utcnow():
        return None
    return row, _pending_from(sealer.open(row.pending_enc, f"eid-pending:{digest}"))


def store_result(sealer: Sealer, row: EidPending, result: EidResult, *, handover_digest: str) -> None:
    """Keep the verified answer with the digest of the one-time handover secret that only the
    browser which delivered the answer receives (see ``idp.views.eid.callback``)."""
    sealed = {**json.loads(_result_json(result)), "handover": handover_digest}
    row.result_enc = sealer.seal(json.dumps(sealed).encode(), f"eid-result:{row.state_digest}")


def claim_result(
    session: Session, sealer: Sealer, row: EidPending, result: EidResult, *, handover_digest: str
) -> bool:
    """The callback's answer, once: stored only while none is (one UPDATE ... WHERE result_enc
    IS NULL), so that of two concurrent callbacks for one state (PostgreSQL READ COMMITTED: both
    read it unanswered) the second cannot replace the first's answer. False if another was first."""
    sealed = {**json.loads(_result_json(result)), "handover": handover_digest}
    won = session.execute(
        update(EidPending)
        .where(EidPending.state_digest == row.state_digest, EidPending.result_enc.is_(None))
        .values(result_enc=sealer.seal(json.dumps(sealed).encode(), f"eid-result:{row.state_digest}"))
        .execution_options(synchronize_session=False)
    )
    return bool(won.rowcount == 1)  # type: ignore[attr-defined]


def handover_matches(sealer: Sealer, row: EidPending, handover_digest: str) -> bool:
    if row.result_enc is None:
        return False
    stored = json.loads(sealer.open(row.result_enc, f"eid-result:{row.state_digest}")).get("handover", "")
    return bool(stored) and equal(str(stored), handover_digest)


def result_of(sealer: Sealer, row: EidPending) -> EidResult | None:
    if row.result_enc is None:
        return None
    return _result_from(sealer.open(row.result_enc, f"eid-result:{row.state_digest}"))


def consume_pending(session: Session, digest: str) -> None:
    """Single use: delete the row (idempotent, also run again after a rollback)."""
    session.execute(delete(EidPending).where(EidPending.state_digest == digest))
