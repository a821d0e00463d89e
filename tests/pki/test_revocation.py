"""Revocation: RFC 5280 reason codes, idempotence, hold and release, audit, shard CRLs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

import pki
from db.audit import AuditEvent
from pki import crl, errors
from pki.models import CaCrlState
from tests.pki.helpers import DEVICE_ID, make_csr, openssl_verify, pem


def _device(session: Session, ca: pki.CertificateAuthority) -> pki.IssueResult:
    return pki.issue(session, ca, pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID))


def _last_audit(session: Session) -> AuditEvent:
    return session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).scalar_one()


def _crl_number(session: Session, ca: pki.CertificateAuthority, scope: str) -> int:
    state = session.get(CaCrlState, (ca.id, scope))
    assert state is not None
    return state.crl_number


def test_revocation_is_in_the_shard_crl_at_once_and_openssl_rejects_the_chain_rfc5280_5_3_1(
    db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    issued = _device(db_session, ca)
    shard = str(pki.status(db_session, issued.serial).shard)
    number_before = _crl_number(db_session, ca, shard)
    st = pki.revoke(db_session, ca, issued.serial, "keyCompromise", actor="admin")
    assert st.status == "revoked" and st.revocation_reason == "keyCompromise"
    # regenerated during revoke(), for this shard only
    assert _crl_number(db_session, ca, shard) == number_before + 1
    state = db_session.get(CaCrlState, (ca.id, shard))
    assert state is not None and state.der is not None
    listed = x509.load_der_x509_crl(state.der).get_revoked_certificate_by_serial_number(
        issued.certificate.serial_number
    )
    assert listed is not None
    assert listed.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    done = openssl_verify(
        tmp_path,
        pem(ca.root_certificate),
        pem(ca.certificate),
        issued.certificate_pem,
        [pem(x509.load_der_x509_crl(state.der))],
    )
    assert done.returncode != 0 and "certificate revoked" in done.stdout + done.stderr
    audit = _last_audit(db_session)
    assert (audit.action, audit.outcome, audit.reason, audit.actor) == (
        "pki.certificate.revoke",
        "success",
        "keyCompromise",
        "admin",
    )


def test_other_shards_are_not_re_signed_on_revocation(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    issued = _device(db_session, ca)
    shard = pki.status(db_session, issued.serial).shard
    others = {s: _crl_number(db_session, ca, str(s)) for s in range(ca.crl_shards) if s != shard}
    pki.revoke(db_session, ca, issued.serial, "superseded")
    assert {s: _crl_number(db_session, ca, str(s)) for s in others} == others
    # the full CRL is marked stale and re-signed when next asked for
    full = x509.load_der_x509_crl(crl.current(db_session, ca, crl.FULL))
    assert full.get_revoked_certificate_by_serial_number(issued.certificate.serial_number)


def test_revoking_twice_is_idempotent(db_session: Session, ca: pki.CertificateAuthority) -> None:
    issued = _device(db_session, ca)
    first = pki.revoke(db_session, ca, issued.serial, "keyCompromise")
    second = pki.revoke(db_session, ca, issued.serial, "superseded")
    assert second.revoked_at == first.revoked_at
    assert second.revocation_reason == "keyCompromise"
    assert _last_audit(db_session).outcome == "info"


def test_hold_can_be_released_and_nothing_else_can_rfc5280_5_3_1(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    held = _device(db_session, ca)
    pki.revoke(db_session, ca, held.serial, "certificateHold")
    assert pki.reinstate(db_session, ca, held.serial).status == "issued"
    shard = pki.status(db_session, held.serial).shard
    current = x509.load_der_x509_crl(crl.current(db_session, ca, str(shard)))
    assert current.get_revoked_certificate_by_serial_number(held.certificate.serial_number) is None

    final = _device(db_session, ca)
    pki.revoke(db_session, ca, final.serial, "keyCompromise")
    with pytest.raises(errors.NotOnHold):
        pki.reinstate(db_session, ca, final.serial)
    assert _last_audit(db_session).outcome == "denied"
    with pytest.raises(errors.NotOnHold):
        pki.reinstate(db_session, ca, _device(db_session, ca).serial)


def test_a_hold_may_become_a_final_revocation(db_session: Session, ca: pki.CertificateAuthority) -> None:
    issued = _device(db_session, ca)
    pki.revoke(db_session, ca, issued.serial, "certificateHold")
    st = pki.revoke(db_session, ca, issued.serial, "keyCompromise")
    assert st.revocation_reason == "keyCompromise"


@pytest.mark.parametrize("serial", ["00" * 20, "ff" * 21, "not-hex", "1234"])
def test_revoking_an_unknown_serial_is_refused_and_audited(
    serial: str, db_session: Session, ca: pki.CertificateAuthority
) -> None:
    with pytest.raises(errors.UnknownCertificate):
        pki.revoke(db_session, ca, serial, "keyCompromise")
    audit = _last_audit(db_session)
    assert (audit.outcome, audit.reason) == ("denied", "unknown_certificate")


@pytest.mark.parametrize("reason", ["removeFromCRL", "because", ""])
def test_reasons_outside_rfc5280_5_3_1_are_refused(
    reason: str, db_session: Session, ca: pki.CertificateAuthority
) -> None:
    issued = _device(db_session, ca)
    with pytest.raises(errors.BadRevocationReason):
        pki.revoke(db_session, ca, issued.serial, reason)
    assert pki.status(db_session, issued.serial).status == "issued"


def test_serials_are_accepted_with_colons_and_upper_case(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    issued = _device(db_session, ca)
    typed = ":".join(issued.serial[i : i + 2] for i in range(0, 40, 2)).upper()
    assert pki.revoke(db_session, ca, typed, "key_compromise").status == "revoked"


def test_abandoned_pending_certificates_are_revoked(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    def die(_serial: str) -> None:
        raise KeyboardInterrupt  # the process is interrupted right after signing

    with pytest.raises(KeyboardInterrupt):
        pki.issue(
            db_session,
            ca,
            pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID),
            hooks=pki.IssueHooks(after_sign=die),
        )
    db_session.rollback()
    pending = pki.list_certificates(db_session, status="pending")
    assert len(pending) == 1
    later = pki.revoke_abandoned(db_session, ca, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert later == [pending[0].serial]
    assert pki.status(db_session, pending[0].serial).status == "revoked"
