"""Citizen accounts: register, verify e-mail, password login and reset, change of address. No Flask."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

import idna
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from zxcvbn import zxcvbn

from db import audit, utcnow
from idp import throttle
from idp.crypto import hash_password, random_token, verify_password
from idp.instance import InstanceKeys, normalise_email
from idp.models import Account, EmailToken

# Deliberately simple: one @, no spaces, a dot in the domain; the verification link proves it.
# No white space, no control characters and none of RFC 5322's specials, which would let an
# address written into a mail header name another recipient ("a<b@example.org").
_ATOM = r"[^@\s\x00-\x1f\x7f<>()\[\]\\,;:\"]"
EMAIL_RE = re.compile(rf"^{_ATOM}{{1,64}}@{_ATOM}+\.{_ATOM}{{2,}}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024


class AccountError(Exception):
    code = "account_error"


class InvalidEmail(AccountError):
    code = "invalid_email"


class WeakPassword(AccountError):
    code = "weak_password"


class GuessablePassword(WeakPassword):
    code = "guessable_password"


class EmailTaken(AccountError):
    code = "email_taken"


class InvalidLink(AccountError):
    code = "invalid_link"


@dataclass(frozen=True)
class LoginOutcome:
    # The account the address names, for a wrong password too: the audit log and the citizen's
    # security log show the failed attempt (ASVS V7.2.1). Logged in only when reason is "ok".
    account: Account | None
    reason: str  # "ok", "bad_credentials", "unverified", "disabled"


def email_of(keys: InstanceKeys, account: Account) -> str:
    return keys.personal_data.open(account.email_enc, f"email:{account.id}").decode()


# zxcvbn's estimate of the guesses an attacker needs, below which a password is refused: such a
# password is in the lists of leaked passwords, a word or a name, or a simple pattern.
MIN_GUESSES_LOG10 = 6
_ESTIMATED_PREFIX = 72  # zxcvbn's own limit; what follows cannot make a guessable start strong


def check_password_policy(password: str, context: Iterable[str] = ()) -> None:
    """NIST SP 800-63B §5.1.1.2: at least 8 characters (we ask 10), long passphrases allowed, no
    composition rules, and no password that is "commonly used, expected, or compromised": checked
    offline with zxcvbn (frequency lists of leaked passwords, dictionary words and names,
    keyboard walks, repeats, sequences, dates), with ``context`` (the address, the city's name)
    as known words."""
    if len(password) < MIN_PASSWORD or len(password) > MAX_PASSWORD:
        raise WeakPassword(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    words = sorted(
        {
            w
            for text in context
            # the whole, the parts around the @ (anna.schmidt), and each word (anna, schmidt)
            for w in (text.lower(), *text.lower().split("@"), *re.split(r"[^\w]+", text.lower()))
            if len(w) >= 3
        }
    )
    estimate = zxcvbn(password[:_ESTIMATED_PREFIX], user_inputs=words[:50])
    if float(estimate["guesses_log10"]) < MIN_GUESSES_LOG10:
        raise GuessablePassword("password is common, a word or a simple pattern")


def checked_email(email: str) -> str:
    """The normalised address, or :class:`InvalidEmail`."""
    email = normalise_email(email)
    local, _, domain = email.rpartition("@")
    if len(email) > 254 or not EMAIL_RE.match(email) or "=?" in local or not _domain_as_written(domain):
        raise InvalidEmail("not a valid e-mail address")
    return email


def _domain_as_written(domain: str) -> bool:
    """A host name (RFC 5890 LDH or IDN labels, no trailing dot) written as IDNA writes it back
    in Unicode (RFC 5891, UTS 46): one spelling per mailbox. Invisible characters (zero-width
    space, soft hyphen) and full-width letters, which the mapping drops or folds, the xn-- form
    of a Unicode domain and RFC 2047 encoded-words would each make one mailbox look like many
    addresses (many accounts, and a way round the one-mail-a-minute limit)."""
    if domain.endswith("."):
        return False
    try:
        return bool(idna.decode(idna.encode(domain, uts46=True)) == domain)
    except (idna.IDNAError, UnicodeError):
        return False


def create_account(
    session: Session,
    keys: InstanceKeys,
    email: str,
    password: str,
    *,
    locale: str = "de",
    verified: bool = False,
    actor: str,
    context: Iterable[str] = (),
) -> Account:
    """``actor``: "self" for the citizen on /register (the account counts as self-registered,
    idp.privacy purges it if never confirmed), "admin", "demo"."""
    email = checked_email(email)
    check_password_policy(password, [email, *context])
    index = keys.email_lookup(email)
    # Hashed before the address is looked up: a taken address answers no sooner than a new one
    # (no account enumeration by timing, OWASP WSTG-IDNT-04).
    password_hash = hash_password(password)
    if session.execute(select(Account.id).where(Account.email_index == index)).first():
        raise EmailTaken("an account with this e-mail exists")
    acct = Account(
        email_index=index,
        email_enc=b"",
        password_hash=password_hash,
        locale=locale,
        email_verified_at=utcnow() if verified else None,
        self_registered=actor == "self",  # the citizen on /register, not an admin or the demo
    )
    try:
        # Two registrations of one address at once (a double click): the second insert waits for
        # the first and meets the unique index; the same answer as the check above, no 500.
        with session.begin_nested():
            session.add(acct)
            session.flush()
    except IntegrityError:
        raise EmailTaken("an account with this e-mail exists") from None
    acct.email_enc = keys.personal_data.seal(email.encode(), f"email:{acct.id}")
    throttle.clear(session, index)  # guesses against the address before it was anyone's account
    audit.record(
        session,
        action="account.create",
        outcome="success",
        actor=actor,
        subject=acct.id,
        reason="registered" if actor == "self" else "added by admin",
    )
    return acct


def find_by_email(session: Session, keys: InstanceKeys, email: str, *, lock: bool = False) -> Account | None:
    """The account of ``email``. ``lock``: the row locked for this transaction (PostgreSQL), for a
    link about to be issued: a purge erasing the account meanwhile is waited for (then: None)."""
    q = select(Account).where(Account.email_index == keys.email_lookup(email))
    return session.execute(q.with_for_update() if lock else q).scalar()


def check_login(session: Session, keys: InstanceKeys, email: str, password: str) -> LoginOutcome:
    """Verify e-mail + password. Always hashes once, so timing does not reveal accounts."""
    acct = find_by_email(session, keys, email) if len(email) <= 254 else None
    ok = verify_password(acct.password_hash if acct else None, password[:MAX_PASSWORD])
    if not ok or acct is None:
        return LoginOutcome(acct, "bad_credentials")
    if acct.disabled:
        return LoginOutcome(None, "disabled")
    if acct.email_verified_at is None:
        return LoginOutcome(acct, "unverified")
    return LoginOutcome(acct, "ok")


def issue_email_token(
    session: Session,
    keys: InstanceKeys,
    account: Account,
    purpose: str,
    lifetime: dt.timedelta,
    *,
    new_email: str | None = None,
) -> str:
    token = random_token(32)
    session.add(
        EmailToken(
            token_digest=keys.token_digest(token),
            account_id=account.id,
            purpose=purpose,
            expires_at=utcnow() + lifetime,
            new_email_enc=None
            if new_email is None
            else keys.personal_data.seal(new_email.encode(), f"{EMAIL_CHANGE}:{account.id}"),
        )
    )
    return token


def consume_email_token(session: Session, keys: InstanceKeys, token: str, purpose: str) -> Account:
    """Single use: the UPDATE that marks it used is the check, so two clicks cannot both win."""
    return _consume(session, keys, token, purpose)[0]


def check_email_token(session: Session, keys: InstanceKeys, token: str, purpose: str) -> EmailToken:
    """The link's row if it could be used now (:class:`InvalidLink` otherwise); uses nothing up."""
    if not token or len(token) > 200:
        raise InvalidLink("malformed link")
    row = session.get(EmailToken, keys.token_digest(token))
    if row is None or row.purpose != purpose:
        raise InvalidLink("unknown link")
    if row.used_at is not None:
        raise InvalidLink("link already used")
    if row.expires_at <= utcnow():
        raise InvalidLink("link expired")
    return row


def _consume(session: Session, keys: InstanceKeys, token: str, purpose: str) -> tuple[Account, EmailToken]:
    row = check_email_token(session, keys, token, purpose)
    res = session.execute(
        update(EmailToken)
        .where(EmailToken.token_digest == row.token_digest, EmailToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidLink("link already used")
    acct = session.get(Account, row.account_id)
    if acct is None:
        raise InvalidLink("account gone")
    return acct, row


def set_password(session: Session, account: Account, password: str, context: Iterable[str] = ()) -> None:
    """``context``: words the password must not be built on (the address, the city's name)."""
    check_password_policy(password, context)
    account.password_hash = hash_password(password)
    account.password_changed_at = utcnow()
    throttle.clear(session, account.email_index)  # a new password ends a run of failed guesses
    # Whoever knew the old password may have asked for a change of address or a reset: those
    # links die with it (the citizen changes the password after the notice, for exactly this).
    cancel_links(session, account.id, (EMAIL_CHANGE, "reset"))


def cancel_links(session: Session, account_id: str, purposes: tuple[str, ...] | None = None) -> None:
    """Mark the account's unused links (of ``purposes``, or all) as used."""
    q = update(EmailToken).where(EmailToken.account_id == account_id, EmailToken.used_at.is_(None))
    if purposes is not None:
        q = q.where(EmailToken.purpose.in_(purposes))
    session.execute(q.values(used_at=utcnow()))


def mark_email_verified(account: Account) -> None:
    """A followed single-use link proved control of the address."""
    if account.email_verified_at is None:
        account.email_verified_at = utcnow()


EMAIL_CHANGE = "email_change"


@dataclass(frozen=True)
class EmailChange:
    account: Account
    old_email: str
    new_email: str


def change_email(session: Session, keys: InstanceKeys, token: str) -> EmailChange:
    """Follow a change-of-address link: the link sent to the new address proves control of it.

    Single use like every link; :class:`EmailTaken` if another account has taken the address
    since the link was sent. Every other unused link of the account ends with this one.
    """
    acct, row = _consume(session, keys, token, EMAIL_CHANGE)
    if acct.disabled:
        raise InvalidLink("account disabled")
    if row.new_email_enc is None:
        raise InvalidLink("link carries no address")
    new_email = keys.personal_data.open(row.new_email_enc, f"{EMAIL_CHANGE}:{acct.id}").decode()
    index = keys.email_lookup(new_email)
    if session.execute(select(Account.id).where(Account.email_index == index, Account.id != acct.id)).first():
        raise EmailTaken("the address belongs to another account")
    old_email, old_index = email_of(keys, acct), acct.email_index
    acct.email_index = index
    acct.email_enc = keys.personal_data.seal(new_email.encode(), f"email:{acct.id}")
    acct.email_verified_at = utcnow()  # the followed link proved control of the new address
    try:
        session.flush()  # the unique address index decides a race between two accounts, here
    except IntegrityError as exc:
        raise EmailTaken("the address belongs to another account") from exc
    # Every other link of the account went to an address that is no longer its own, or asked for
    # another change: none of them may still act on the account.
    cancel_links(session, acct.id)
    throttle.clear(session, old_index)
    throttle.clear(session, index)  # guesses against the address before it was this account's
    return EmailChange(acct, old_email, new_email)


def mask_email(email: str) -> str:
    """``fr***@example.org``: enough for its owner to recognise, little for anyone else."""
    local, _, domain = email.partition("@")
    return f"{local[:2]}***@{domain}"
