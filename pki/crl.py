"""CRLs (RFC 5280 §5): one full CRL and ``crl_shards`` partitioned CRLs per issuing CA.

Each certificate is given a shard at issuance (``serial mod shards``) and its CRL distribution
point names that shard's URL; each shard CRL carries an issuingDistributionPoint naming the
same URL (RFC 5280 §5.2.5), so a relying party fetches 1/n of the revocations. The full CRL
(no IDP) covers everything. CRL numbers are monotonic per scope (RFC 5280 §5.2.3).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import String, func, select, type_coerce, update
from sqlalchemy.orm import Session

from db import driver, utcnow
from pki.ca import CertificateAuthority
from pki.crl_der import Entry, encode_entries, splice_and_sign
from pki.errors import BadRequest
from pki.keystore import Signer
from pki.models import CERTIFICATES, REVOKED, CaCrlState

FULL = "full"
ROOT = "root"
LIBRARY_LIMIT = 20_000  # above this many entries, splice them in (pki/crl_der.py)
ROOT_CRL_VALIDITY = dt.timedelta(days=365)  # the root key may be offline between signings


def scopes(ca: CertificateAuthority) -> list[str]:
    return [FULL, *(str(n) for n in range(ca.crl_shards))]


def check_scope(ca: CertificateAuthority, scope: str) -> str:
    if scope in (FULL, ROOT) or (scope.isdigit() and int(scope) < ca.crl_shards):
        return scope
    raise BadRequest(f"no CRL {scope!r}")


def _revoked_entries(
    session: Session, ca: CertificateAuthority, scope: str, now: dt.datetime
) -> Iterator[Entry]:
    c = CERTIFICATES.c
    # RFC 5280 §5.1.2.6: keep an entry until one regular CRL after the certificate expired
    keep_after = now - 2 * dt.timedelta(hours=ca.settings.crl_next_update_hours)
    # The revocation date as the driver gives it: UTC text on SQLite (no per-row datetime
    # objects for a million rows), an aware datetime on PostgreSQL; crl_der reads both.
    columns = (c.serial, type_coerce(c.revoked_at, String), c.revocation_reason)
    if scope == FULL:
        # Most rows of a large CA end up revoked or expired: a sequential scan beats a million
        # index look-ups, so the conditions are written so that no index applies (2x on SQLite).
        query = select(*columns).where(
            func.coalesce(c.issuer_id, "") == ca.id,
            func.coalesce(c.status, "") == REVOKED,
            c.not_after > keep_after,
        )
    else:
        query = select(*columns).where(
            c.issuer_id == ca.id, c.status == REVOKED, c.shard == int(scope), c.not_after > keep_after
        )
    # SQLAlchemy Row objects for a million entries would cost as much as encoding them
    return cast(Iterator[Entry], driver.rows(session, query))


def build_crl(
    *,
    issuer: x509.Certificate,
    signer: Signer,
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
    entries: Iterable[Entry],
    distribution_point: str | None,
) -> bytes:
    """Sign a CRL; in one pass (no per-entry builder copies), splicing when it is large."""
    entries = iter(entries)
    first = list(itertools.islice(entries, LIBRARY_LIMIT + 1))
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    extensions: list[x509.Extension[x509.ExtensionType]] = [
        # RFC 5280 §5.2.1: authorityKeyIdentifier MUST be included
        _ext(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
        # RFC 5280 §5.2.3: cRLNumber MUST be included, non-critical, monotonically increasing
        _ext(x509.CRLNumber(number), False),
    ]
    if distribution_point is not None:
        # RFC 5280 §5.2.5: a partitioned CRL names its scope; the extension is critical
        idp = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(distribution_point)],
            relative_name=None,
            only_contains_user_certs=False,
            only_contains_ca_certs=False,
            only_some_reasons=None,
            indirect_crl=False,
            only_contains_attribute_certs=False,
        )
        extensions.append(_ext(idp, True))
    # RFC 5280 §5.1.2.4/5: thisUpdate and nextUpdate (MUST for conforming CAs), whole seconds
    this_update = this_update.replace(microsecond=0)
    next_update = next_update.replace(microsecond=0)
    if len(first) <= LIBRARY_LIMIT:
        revoked = [_library_entry(*e) for e in first]
        crl = x509.CertificateRevocationListBuilder(
            issuer.subject, this_update, next_update, extensions, revoked
        ).sign(signer, hashes.SHA256())
        return crl.public_bytes(Encoding.DER)
    template = x509.CertificateRevocationListBuilder(
        issuer.subject, this_update, next_update, extensions, []
    ).sign(signer, hashes.SHA256())
    return splice_and_sign(template, encode_entries(itertools.chain(first, entries)), signer)


def _ext(value: x509.ExtensionType, critical: bool) -> x509.Extension[x509.ExtensionType]:
    return x509.Extension(value.oid, critical, value)


_REASONS = {flag: _ext(x509.CRLReason(flag), False) for flag in x509.ReasonFlags}
_CODE_TO_FLAG = {
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}


def _library_entry(serial_hex: str, when: dt.datetime | str, reason: int | None) -> x509.RevokedCertificate:
    # RFC 5280 §5.3.1: omit reasonCode rather than use unspecified (0)
    exts = [_REASONS[_CODE_TO_FLAG[reason]]] if reason else []
    if isinstance(when, str):  # SQLite's UTC text
        when = dt.datetime.fromisoformat(when[:19]).replace(tzinfo=dt.UTC)
    return x509.RevokedCertificateBuilder(int(serial_hex, 16), when.replace(microsecond=0), exts).build()


def _state(session: Session, ca: CertificateAuthority, scope: str) -> CaCrlState:
    row = session.execute(
        select(CaCrlState).where(CaCrlState.issuer_id == ca.id, CaCrlState.scope == scope).with_for_update()
    ).scalar()
    if row is None:
        row = CaCrlState(issuer_id=ca.id, scope=scope, crl_number=0, stale=True)
        session.add(row)
        session.flush()
    return row


def generate(
    session: Session, ca: CertificateAuthority, scope: str, *, now: dt.datetime | None = None
) -> bytes:
    """Sign a new CRL for ``scope`` (``full`` or a shard number) in the caller's transaction."""
    check_scope(ca, scope)
    if scope == ROOT:
        raise BadRequest("the root's CRL is signed by `cityid ca init` with the root key")
    now = now or utcnow()
    state = _state(session, ca, scope)
    entries = _revoked_entries(session, ca, scope, now)
    number = state.crl_number + 1
    next_update = now + dt.timedelta(hours=ca.settings.crl_next_update_hours)
    der = build_crl(
        issuer=ca.certificate,
        signer=ca.signer(),
        number=number,
        this_update=now,
        next_update=next_update,
        entries=entries,
        distribution_point=None if scope == FULL else ca.urls.shard_crl(int(scope)),
    )
    state.crl_number = number
    state.this_update = now.replace(microsecond=0)
    state.next_update = next_update.replace(microsecond=0)
    state.stale = False
    state.der = der
    return der


def mark_stale(session: Session, ca: CertificateAuthority, *scopes_: str) -> None:
    session.execute(
        update(CaCrlState)
        .where(CaCrlState.issuer_id == ca.id, CaCrlState.scope.in_(scopes_))
        .values(stale=True)
    )


def _needs_refresh(state: CaCrlState | None, now: dt.datetime) -> bool:
    if state is None or state.der is None or state.stale:
        return True
    if state.this_update is None or state.next_update is None:
        return True
    # refresh at half-life, so that a cached copy is never served past nextUpdate
    return now >= state.this_update + (state.next_update - state.this_update) / 2


def current(
    session: Session, ca: CertificateAuthority, scope: str, *, now: dt.datetime | None = None
) -> bytes:
    """The CRL to publish for ``scope``, regenerated (and committed) if stale or half-expired."""
    check_scope(ca, scope)
    now = now or utcnow()
    issuer_id = ca.root_id if scope == ROOT else ca.id
    state = session.execute(
        select(CaCrlState).where(CaCrlState.issuer_id == issuer_id, CaCrlState.scope == scope)
    ).scalar()
    if scope == ROOT:
        if state is None or state.der is None:
            raise BadRequest("no root CRL: run `cityid ca init`")
        return state.der
    if not _needs_refresh(state, now):
        assert state is not None and state.der is not None
        return state.der
    session.rollback()
    locked = _state(session, ca, scope)  # another process may have refreshed it meanwhile
    if not _needs_refresh(locked, now):
        assert locked.der is not None
        der = locked.der
        session.commit()
        return der
    der = generate(session, ca, scope, now=now)
    session.commit()
    return der
