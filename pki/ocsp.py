"""OCSP responder logic (RFC 6960), over the database; no HTTP here.

Answers are signed by the delegated OCSP signer (RFC 6960 §4.2.2.2). Answers without a nonce
are cached in ``ca_ocsp_cache`` and re-signed at half their validity; revocation deletes the
cached answer in its own transaction, so the next request already sees it.

Only certificates this CA has a record of are answered with a signature. A serial it never
issued is answered ``unauthorized`` (RFC 5019 §2.2.3, kept by RFC 9919: a responder without an
authoritative answer for the certificate), the same unsigned bytes for every serial: a signed
``unknown`` names the serial, so it cannot be signed in advance, and an anonymous client asking
for fresh serials would make the responder sign for each request. So what a request costs does
not depend on the serial asked for: one read, then cached bytes or the constant refusal; a
signature only for a certificate of ours, once per half validity (or per nonce, RFC 8954).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import Connection, Dialect, Table, and_, bindparam, delete, insert, select
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import utcnow
from pki.ca import CertificateAuthority
from pki.models import OCSP_CACHE, PENDING, REVOKED, CaCertificate
from pki.serials import serial_hex
from pki.setup import current_ocsp_signer

NOT_ISSUED_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # RFC 6960 §2.2
_FLAGS = {
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha1": hashes.SHA1(),  # noqa: S303 (RFC 5019 §2.1.1: CertID with SHA-1 is what clients send)
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


# The hot path: built once, so that any request costs one compiled, cached SELECT. It finds the
# certificate (is it ours?) and its cached answer, if any, by their primary keys: no row means a
# serial this CA never issued.
_CERTS = cast(Table, CaCertificate.__table__)
_CACHED = (
    select(OCSP_CACHE.c.der, OCSP_CACHE.c.refresh_after)
    .select_from(
        _CERTS.outerjoin(
            OCSP_CACHE,
            and_(
                OCSP_CACHE.c.issuer_id == _CERTS.c.issuer_id,
                OCSP_CACHE.c.serial == _CERTS.c.serial,
                OCSP_CACHE.c.hash_alg == bindparam("hash_alg"),
            ),
        )
    )
    .where(_CERTS.c.serial == bindparam("serial"), _CERTS.c.issuer_id == bindparam("issuer_id"))
)


@dataclass(frozen=True)
class OcspAnswer:
    der: bytes
    response_status: str  # RFC 6960 §4.2.1 OCSPResponseStatus name
    cert_status: str | None = None  # good | revoked | unknown, for successful answers
    cached: bool = False
    max_age: int = 0  # seconds a cache in front of us may keep it (RFC 5019 §6.2)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> OcspAnswer:
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
    name = {
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformedRequest",
        ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized",
        ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internalError",
    }.get(status, status.name)
    return OcspAnswer(der, name)


def malformed() -> OcspAnswer:
    return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


# RFC 5019 §2.2.3: "unauthorized" where the responder has no authoritative answer; built once
NOT_ISSUED = _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)


def internal_error() -> OcspAnswer:
    return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)


def decode_get_path(encoded: str) -> bytes | None:
    """RFC 6960 Appendix A.1: the URL-decoded path element is base64(DER request).

    Only leading slashes go: a request is a DER SEQUENCE, so its base64 starts with ``M``, but it
    may well end with ``/``, a base64 digit."""
    text = encoded.strip().lstrip("/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None


@dataclass(frozen=True)
class Question:
    """One well-formed request for a certificate of ours (RFC 6960 §4.1.1)."""

    serial: int
    algorithm: str  # the CertID hash: sha1 | sha256 | sha384 | sha512
    nonce: bytes | None

    @property
    def stored_serial(self) -> str | None:
        """The serial as stored, or None for one we can never have issued (RFC 5280 §4.1.2.2)."""
        return serial_hex(self.serial) if 0 < self.serial < 2**160 else None


def parse(ca: CertificateAuthority, der: bytes) -> Question | OcspAnswer:
    """Read a DER OCSPRequest; an unsuccessful answer if it cannot be answered (RFC 6960 §2.3)."""
    try:
        request = ocsp.load_der_ocsp_request(der)
        algorithm = request.hash_algorithm.name
        name_hash, key_hash, serial = (
            request.issuer_name_hash,
            request.issuer_key_hash,
            request.serial_number,
        )
        extensions = request.extensions
    except (ValueError, UnsupportedAlgorithm, NotImplementedError):
        # RFC 6960 §4.2.1: not a single well-formed OCSPRequest we can read
        return malformed()
    if algorithm not in _HASHES:
        return malformed()
    if ca.ocsp_issuer_hashes.get(algorithm) != (name_hash, key_hash):
        # RFC 6960 §2.3: we are not authoritative for this issuer
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    nonce: bytes | None = None
    for ext in extensions:
        if isinstance(ext.value, x509.OCSPNonce):
            nonce = ext.value.nonce
            # RFC 8954 §2.1: nonces of 1 to 32 octets; others are malformedRequest
            if not 1 <= len(nonce) <= 32:
                return malformed()
    return Question(serial, algorithm, nonce)


def respond(
    session: Session, ca: CertificateAuthority, request_der: bytes, *, now: dt.datetime | None = None
) -> OcspAnswer:
    """Answer one DER OCSPRequest. Never raises for bad input: it answers malformedRequest."""
    question = parse(ca, request_der)
    if isinstance(question, OcspAnswer):
        return question
    now = now or utcnow()
    return cached(session, ca, question, now) or sign(session, ca, question, now)


def cached(
    db: Session | Connection, ca: CertificateAuthority, question: Question, now: dt.datetime
) -> OcspAnswer | None:
    """The answer that needs no signature: the pre-signed one from ``ca_ocsp_cache`` if there is
    a fresh one, ``unauthorized`` for a serial never issued here; None when :func:`sign` must
    answer. One primary-key SELECT, no lock. The cache *is* database state: a revocation deletes
    the row in its own transaction, so every process sees the new status on its next request."""
    serial = question.stored_serial
    if serial is None:  # RFC 5280 §4.1.2.2: not a serial any CA of ours can have issued
        return NOT_ISSUED
    params = {"issuer_id": ca.id, "serial": serial, "hash_alg": question.algorithm}
    return _answer_from(db.execute(_CACHED, params).first(), question, now)


def _answer_from(row: Any, question: Question, now: dt.datetime) -> OcspAnswer | None:
    """What a ``_CACHED`` row (or its absence) answers without signing."""
    if row is None:
        return NOT_ISSUED  # RFC 5019 §2.2.3: no record of it, no signature for it
    if question.nonce is not None or row[0] is None:  # RFC 8954 §2.1: a nonce is echoed, not cached
        return None
    der, refresh_after = bytes(row[0]), _utc(row[1])
    if now >= refresh_after:
        return None
    # RFC 5019 §6.2: HTTP caches may keep it until we would re-sign it
    return OcspAnswer(der, "successful", cached=True, max_age=int((refresh_after - now).total_seconds()))


class CacheReader:
    """:func:`cached` for a hot path: the same SELECT, compiled once for the engine's dialect and
    run on a bare DBAPI connection, without SQLAlchemy's per-statement execution machinery and
    without its transaction events (on SQLite those ``BEGIN IMMEDIATE``, i.e. take the write
    lock: a plain SELECT here runs in autocommit mode and takes none)."""

    def __init__(self, dialect: Dialect) -> None:
        compiled = _CACHED.compile(dialect=dialect)
        self._sql = compiled.string
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None

    def lookup(
        self, dbapi: DBAPIConnection, ca: CertificateAuthority, question: Question, now: dt.datetime
    ) -> OcspAnswer | None:
        """Like :func:`cached`; ends the read transaction it may have begun (PostgreSQL)."""
        serial = question.stored_serial
        if serial is None:
            return NOT_ISSUED
        params = {"issuer_id": ca.id, "serial": serial, "hash_alg": question.algorithm}
        cursor = dbapi.cursor()
        try:
            cursor.execute(self._sql, params if self._order is None else [params[k] for k in self._order])
            row = cursor.fetchone()
        finally:
            cursor.close()
            # no snapshot outlives the request, so that the next one sees newer commits (sqlite3
            # in autocommit mode, as db.make_engine sets it, says it has none open)
            if getattr(dbapi.driver_connection, "in_transaction", True):
                dbapi.rollback()
        return _answer_from(row, question, now)


def _utc(value: dt.datetime | str) -> dt.datetime:
    """A timestamp as the driver returns it: SQLite's UTC text or a datetime (PostgreSQL)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def sign(session: Session, ca: CertificateAuthority, question: Question, now: dt.datetime) -> OcspAnswer:
    """Sign a fresh answer from the certificate's row; cache it when it carries no nonce."""
    serial = question.stored_serial
    if serial is None:
        return NOT_ISSUED
    # The signer first: renewing it commits the session (issue_batch), which would release the
    # row lock below and let a revocation slip between our read and our cache write.
    signer = current_ocsp_signer(session, ca, now=now)
    # lock the row: a revocation in flight cannot slip between our read and our cache write
    lock = question.nonce is None
    row = session.get(CaCertificate, serial, with_for_update=lock)
    if row is None or row.issuer_id != ca.id:
        return NOT_ISSUED  # RFC 5019 §2.2.3 (a caller that skipped ``cached``)
    revocation_time: dt.datetime | None = None
    reason: x509.ReasonFlags | None = None
    if row.status == PENDING:
        # RFC 6960 §2.2: a serial that was never (completely) issued is "revoked" on hold, 1970
        status, status_name = ocsp.OCSPCertStatus.REVOKED, "revoked"
        revocation_time, reason = NOT_ISSUED_TIME, x509.ReasonFlags.certificate_hold
    elif row.status == REVOKED:
        status, status_name = ocsp.OCSPCertStatus.REVOKED, "revoked"
        revocation_time = row.revoked_at
        reason = _FLAGS.get(row.revocation_reason or 0)
    else:
        status, status_name = ocsp.OCSPCertStatus.GOOD, "good"
    this_update = now.replace(microsecond=0)
    validity = dt.timedelta(minutes=ca.settings.ocsp_validity_minutes)
    name_hash, key_hash = ca.ocsp_issuer_hashes[question.algorithm]
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            name_hash,
            key_hash,
            question.serial,
            _HASHES[question.algorithm],
            status,
            this_update,
            this_update + validity,  # RFC 5019 §2.2.4: nextUpdate present
            revocation_time,
            reason,
        )
        # RFC 6960 §4.2.2.3: responder identified by the SHA-1 of its key (RFC 5019 §2.2.3)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
        # RFC 6960 §4.2.2.2: the delegated signer's certificate travels with the answer
        .certificates([signer.certificate])
    )
    if question.nonce is not None:
        # RFC 8954 §2.1 / RFC 6960 §4.4.1: echo the nonce
        builder = builder.add_extension(x509.OCSPNonce(question.nonce), critical=False)
    der = builder.sign(ca.key_store.signer(signer.key_ref), hashes.SHA256()).public_bytes(
        serialization.Encoding.DER
    )
    refresh_after = this_update + validity / 2
    if question.nonce is None:
        _cache(session, ca, row.serial, question.algorithm, this_update, refresh_after, der)
    return OcspAnswer(
        der,
        "successful",
        status_name,
        cached=False,
        max_age=int((refresh_after - now).total_seconds()) if question.nonce is None else 0,
    )


def _cache(
    session: Session,
    ca: CertificateAuthority,
    serial: str,
    algorithm: str,
    this_update: dt.datetime,
    refresh_after: dt.datetime,
    der: bytes,
) -> None:
    c = OCSP_CACHE.c
    try:
        session.execute(
            delete(OCSP_CACHE).where(c.issuer_id == ca.id, c.serial == serial, c.hash_alg == algorithm)
        )
        session.execute(
            insert(OCSP_CACHE).values(
                issuer_id=ca.id,
                serial=serial,
                hash_alg=algorithm,
                this_update=this_update,
                refresh_after=refresh_after,
                der=der,
            )
        )
        session.commit()
    except IntegrityError:  # another worker cached the same answer at the same moment
        session.rollback()
