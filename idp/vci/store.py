"""The credential issuer's storage: library cards, status entries, pre-authorized offers,
access tokens and c_nonces. No Flask; the caller's unit of work commits."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import struct
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db import utcnow
from idp.crypto import Sealer, equal, keyed_digest, random_token
from idp.vci.models import CredentialAccess, CredentialOffer, LibraryCard, StatusEntry

OFFER_LIFETIME = dt.timedelta(minutes=10)
ACCESS_LIFETIME = dt.timedelta(minutes=5)
NONCE_LIFETIME = dt.timedelta(minutes=5)
TX_CODE_ATTEMPTS = 3


@dataclass(frozen=True)
class Card:
    id: str
    number: str
    given_name: str
    family_name: str
    library: str
    valid_until: dt.date
    revoked: bool


def _ctx(account_id: str, what: str) -> str:
    return f"vci-card-{what}:{account_id}"


def grant_card(
    session: Session,
    sealer: Sealer,
    *,
    account_id: str,
    number: str,
    given_name: str,
    family_name: str,
    library: str,
    valid_until: dt.date,
) -> LibraryCard:
    """Grant (or renew) the account's library card."""
    row = session.execute(
        select(LibraryCard).where(LibraryCard.account_id == account_id)
    ).scalar_one_or_none()
    if row is None:
        row = LibraryCard(account_id=account_id)
        session.add(row)
    row.number_enc = sealer.seal(number.encode(), _ctx(account_id, "number"))
    row.name_enc = sealer.seal(
        json.dumps({"given_name": given_name, "family_name": family_name}).encode(), _ctx(account_id, "name")
    )
    row.library = library
    row.valid_until = valid_until
    row.revoked_at = None
    session.flush()
    return row


def card_of(session: Session, sealer: Sealer, account_id: str) -> Card | None:
    row = session.execute(
        select(LibraryCard).where(LibraryCard.account_id == account_id)
    ).scalar_one_or_none()
    if row is None:
        return None
    names = json.loads(sealer.open(row.name_enc, _ctx(account_id, "name")))
    return Card(
        row.id,
        sealer.open(row.number_enc, _ctx(account_id, "number")).decode(),
        names["given_name"],
        names["family_name"],
        row.library,
        row.valid_until,
        row.revoked_at is not None,
    )


def revoke_card(session: Session, account_id: str) -> int:
    """Revoke the card and set the status bit of every credential issued for it (Token Status
    List §7.1: INVALID). Returns how many credentials were revoked."""
    row = session.execute(
        select(LibraryCard).where(LibraryCard.account_id == account_id)
    ).scalar_one_or_none()
    if row is None:
        return 0
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    res = session.execute(
        update(StatusEntry)
        .where(StatusEntry.card_id == row.id, StatusEntry.revoked.is_(False))
        .values(revoked=True)
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


def new_status_entry(session: Session, card_id: str) -> int:
    entry = StatusEntry(card_id=card_id)
    session.add(entry)
    session.flush()
    return int(entry.idx)


def status_bits(session: Session) -> tuple[int, list[int]]:
    """(list size, revoked indices)."""
    size = session.execute(select(func.max(StatusEntry.idx))).scalar() or 0
    revoked = list(session.execute(select(StatusEntry.idx).where(StatusEntry.revoked.is_(True))).scalars())
    return int(size) + 1, revoked


# --------------------------------------------------------------------------- offers, tokens


def create_offer(session: Session, key: bytes, account_id: str) -> tuple[str, str]:
    """A pre-authorized code (256 bits) and a 6-digit transaction code (OpenID4VCI 1.0 §4.1.1),
    both stored only as keyed digests. An earlier unused offer of the account is withdrawn."""
    now = utcnow()
    session.execute(
        update(CredentialOffer)
        .where(CredentialOffer.account_id == account_id, CredentialOffer.used_at.is_(None))
        .values(used_at=now)
    )
    code = random_token(32)
    tx_code = f"{secrets.randbelow(10**6):06d}"
    session.add(
        CredentialOffer(
            code_digest=keyed_digest(key, f"vci-code\x00{code}"),
            account_id=account_id,
            tx_code_digest=keyed_digest(key, f"vci-tx\x00{code}\x00{tx_code}"),
            expires_at=now + OFFER_LIFETIME,
        )
    )
    return code, tx_code


class GrantError(Exception):
    def __init__(self, error: str, description: str, *, count: bool = False) -> None:
        self.error = error
        self.description = description
        self.count = count  # a wrong tx_code: count it (count_failure) even though the request fails
        super().__init__(f"{error}: {description}")


def redeem_offer(session: Session, key: bytes, code: str, tx_code: str) -> str:
    """OpenID4VCI 1.0 §6.1: the pre-authorized code (single use) with its tx_code; after three
    wrong tx_codes the offer is spent (a 6-digit code must not be guessable). Returns the
    account id or raises GrantError."""
    if not code or len(code) > 100 or len(tx_code) > 20:
        raise GrantError("invalid_grant", "unknown pre-authorized code")
    row = session.get(CredentialOffer, keyed_digest(key, f"vci-code\x00{code}"))
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        raise GrantError("invalid_grant", "unknown, used or expired pre-authorized code")
    if not equal(row.tx_code_digest, keyed_digest(key, f"vci-tx\x00{code}\x00{tx_code}")):
        raise GrantError("invalid_grant", "wrong tx_code", count=True)
    # RFC 6749 §4.1.2 / OpenID4VCI 1.0 §6.1: single use, also against a concurrent redemption
    # (PostgreSQL READ COMMITTED: both may have read the offer unused): one UPDATE flips used_at
    claimed = session.execute(
        update(CredentialOffer)
        .where(CredentialOffer.code_digest == row.code_digest, CredentialOffer.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise GrantError("invalid_grant", "unknown, used or expired pre-authorized code")
    return row.account_id


def count_failure(session: Session, key: bytes, code: str) -> None:
    """A wrong tx_code; the third spends the offer (run after the refused request's rollback)."""
    digest = keyed_digest(key, f"vci-code\x00{code}")
    # counted in the database (failures + 1), not read-modify-write: concurrent wrong guesses
    # must not overwrite each other's count and so get more than TX_CODE_ATTEMPTS tries
    offer = CredentialOffer
    session.execute(
        update(CredentialOffer)
        .where(offer.code_digest == digest, offer.used_at.is_(None))
        .values(failures=offer.failures + 1)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(CredentialOffer)
        .where(offer.code_digest == digest, offer.used_at.is_(None), offer.failures >= TX_CODE_ATTEMPTS)
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def issue_access(session: Session, key: bytes, account_id: str) -> str:
    token = random_token(32)
    session.add(
        CredentialAccess(
            token_digest=keyed_digest(key, f"vci-access\x00{token}"),
            account_id=account_id,
            expires_at=utcnow() + ACCESS_LIFETIME,
        )
    )
    return token


def access_account(session: Session, key: bytes, token: str) -> str | None:
    if not token or len(token) > 100:
        return None
    row = session.get(CredentialAccess, keyed_digest(key, f"vci-access\x00{token}"))
    if row is None or row.expires_at <= utcnow():
        return None
    return row.account_id


# --------------------------------------------------------------------------- c_nonce


def make_nonce(key: bytes, now: dt.datetime) -> str:
    """OpenID4VCI 1.0 §7: an unpredictable c_nonce; stateless (time + 128 random bits + MAC),
    single use is enforced when a proof presents it."""
    body = struct.pack(">Q", int(now.timestamp())) + secrets.token_bytes(16)
    mac = hmac.new(key, body, hashlib.sha256).digest()[:16]
    return (body + mac).hex()


def nonce_fresh(key: bytes, nonce: str, now: dt.datetime) -> bool:
    try:
        raw = bytes.fromhex(nonce)
    except ValueError:
        return False
    if len(raw) != 40:
        return False
    body, mac = raw[:24], raw[24:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()[:16]):
        return False
    at = dt.datetime.fromtimestamp(struct.unpack(">Q", body[:8])[0], dt.UTC)
    return now - NONCE_LIFETIME <= at <= now + dt.timedelta(seconds=5)
