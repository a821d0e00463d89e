"""OCSP responder logic (RFC 6960) over the database, without HTTP."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import pki
from pki.models import CaOcspCache
from pki.ocsp import decode_get_path
from tests.pki.helpers import DEVICE_ID, lint_ocsp, make_csr, name


def _device(session: Session, ca: pki.CertificateAuthority) -> pki.IssueResult:
    return pki.issue(session, ca, pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID))


def _request(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _answer(session: Session, ca: pki.CertificateAuthority, der: bytes) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(pki.respond(session, ca, der).der)


def _verify_delegated_signature(resp: ocsp.OCSPResponse, ca: pki.CertificateAuthority) -> None:
    # RFC 6960 §4.2.2.2: signed by a certificate the CA issued with id-kp-OCSPSigning
    (signer,) = resp.certificates
    assert signer.issuer == ca.certificate.subject
    signer.verify_directly_issued_by(ca.certificate)
    assert (
        ExtendedKeyUsageOID.OCSP_SIGNING
        in signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    signer.extensions.get_extension_for_class(x509.OCSPNoCheck)  # RFC 6960 §4.2.2.2.1
    key = signer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert resp.signature_hash_algorithm is not None
    key.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(resp.signature_hash_algorithm))


def test_good_then_revoked_at_once_rfc6960_2_2(
    db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    issued = _device(db_session, ca)
    req = _request(issued.certificate, ca.certificate)
    good = _answer(db_session, ca, req)
    assert good.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert good.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert good.next_update_utc is not None and good.next_update_utc > good.this_update_utc
    _verify_delegated_signature(good, ca)
    assert lint_ocsp(pki.respond(db_session, ca, req).der, tmp_path) == ""

    assert pki.respond(db_session, ca, req).cached  # the second answer comes from the cache
    pki.revoke(db_session, ca, issued.serial, "keyCompromise")
    revoked = _answer(db_session, ca, req)
    assert revoked.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason == x509.ReasonFlags.key_compromise
    assert lint_ocsp(pki.respond(db_session, ca, req).der, tmp_path) == ""


def _unissued(ca: pki.CertificateAuthority, serial: int, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        *_issuer_hashes(ca.certificate, hashes.SHA1()), serial, hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def test_a_serial_the_ca_never_issued_is_unauthorized_without_signing_anything_rfc5019_2_2_3(
    db_session: Session, ca: pki.CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 5019 §2.2.3 (RFC 9919 §2.2.3): a responder without an answer for a certificate says
    # "unauthorized" (unsigned, the same bytes for every serial), so an anonymous request for a
    # serial of its choice costs no signature: cost per request is the same for any serial.
    issued = _device(db_session, ca)  # the OCSP signer exists: signing would be possible
    signatures: list[str] = []
    real_signer = ca.key_store.signer

    def counting_signer(key_ref: str) -> Any:
        signatures.append(key_ref)
        return real_signer(key_ref)

    monkeypatch.setattr(ca.key_store, "signer", counting_signer)
    serials = [issued.certificate.serial_number + 1, 1, 2**159 + 12345, 0, 2**200]
    answers = [pki.respond(db_session, ca, _unissued(ca, s)) for s in serials]
    answers.append(pki.respond(db_session, ca, _unissued(ca, serials[0], nonce=b"\x07" * 16)))
    assert {a.response_status for a in answers} == {"unauthorized"}
    assert len({a.der for a in answers}) == 1  # one constant answer
    assert all(a.max_age == 0 for a in answers)  # "no-store": a serial may be issued later
    assert signatures == []
    assert db_session.scalar(select(func.count()).select_from(CaOcspCache)) == 0  # nothing stored
    # the issued certificate is still answered, signed
    good = _answer(db_session, ca, _request(issued.certificate, ca.certificate))
    assert good.certificate_status == ocsp.OCSPCertStatus.GOOD and signatures


def _issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    n, k = hashes.Hash(algorithm), hashes.Hash(algorithm)
    n.update(issuer.subject.public_bytes())
    k.update(
        issuer.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    return n.finalize(), k.finalize()


def test_nonce_is_echoed_and_such_answers_are_not_cached_rfc8954_2_1(
    db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    issued = _device(db_session, ca)
    nonce = b"\x42" * 16
    answer = pki.respond(db_session, ca, _request(issued.certificate, ca.certificate, nonce=nonce))
    resp = ocsp.load_der_ocsp_response(answer.der)
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert not answer.cached and answer.max_age == 0
    assert lint_ocsp(answer.der, tmp_path) == ""


@pytest.mark.parametrize("length", [0, 33])
def test_nonce_outside_1_to_32_octets_is_a_malformed_request_rfc8954_2_1(
    length: int, db_session: Session, ca: pki.CertificateAuthority
) -> None:
    issued = _device(db_session, ca)
    answer = pki.respond(db_session, ca, _request(issued.certificate, ca.certificate, nonce=b"\x01" * length))
    assert answer.response_status == "malformedRequest"


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_cert_ids_with_sha2_are_answered_in_kind_rfc6960_4_1_1(
    algorithm: hashes.HashAlgorithm, db_session: Session, ca: pki.CertificateAuthority
) -> None:
    issued = _device(db_session, ca)
    resp = _answer(db_session, ca, _request(issued.certificate, ca.certificate, algorithm=algorithm))
    assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert resp.hash_algorithm.name == algorithm.name


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00", b"\x30\x80", b"GET / HTTP/1.1", b"\x30\x03\x02\x01\x01", b"\xff" * 1000],
    ids=["empty", "zero", "indefinite", "text", "wrong-structure", "junk"],
)
def test_malformed_requests_get_malformed_request_never_an_exception_rfc6960_2_3(
    garbage: bytes, db_session: Session, ca: pki.CertificateAuthority
) -> None:
    answer = pki.respond(db_session, ca, garbage)
    assert answer.response_status == "malformedRequest"
    resp = ocsp.load_der_ocsp_response(answer.der)
    assert resp.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_request_for_another_issuer_is_unauthorized_rfc6960_2_3(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    other = (
        x509.CertificateBuilder()
        .subject_name(name(CN="Other CA"))
        .issuer_name(name(CN="Other CA"))
        .public_key(other_key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(other_key, hashes.SHA256())
    )
    issued = _device(db_session, ca)
    answer = pki.respond(db_session, ca, _request(issued.certificate, other))
    assert answer.response_status == "unauthorized"


def test_a_pending_serial_is_revoked_on_hold_since_1970_rfc6960_2_2(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    captured: dict[str, bytes] = {}

    def stop(serial: str) -> None:
        captured["serial"] = serial.encode()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pki.issue(
            db_session,
            ca,
            pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID),
            hooks=pki.IssueHooks(after_sign=stop),
        )
    db_session.rollback()
    serial = int(captured["serial"], 16)
    req = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(*_issuer_hashes(ca.certificate, hashes.SHA1()), serial, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    resp = _answer(db_session, ca, req)
    assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_time_utc == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert resp.revocation_reason == x509.ReasonFlags.certificate_hold


def test_cached_answers_are_re_signed_before_next_update(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    issued = _device(db_session, ca)
    req = _request(issued.certificate, ca.certificate)
    first = pki.respond(db_session, ca, req)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=ca.settings.ocsp_validity_minutes * 0.6)
    second = pki.respond(db_session, ca, req, now=later)
    assert not second.cached and second.der != first.der
    resp = ocsp.load_der_ocsp_response(second.der)
    assert resp.next_update_utc is not None and resp.next_update_utc > later


@pytest.mark.parametrize("der", [b"\x30\x01\xff", b"\x30\x03\x02\x01\x3f", b"\x30\x02\x05\x00"])
def test_get_requests_whose_base64_ends_in_a_slash_decode_rfc6960_appendix_a1(der: bytes) -> None:
    text = base64.b64encode(der).decode()
    assert decode_get_path(text) == der
    assert decode_get_path("/" + text) == der  # a doubled slash in front of the path element
    if text.endswith("/"):
        assert decode_get_path(text[:-1]) != der  # the slash is a base64 digit, not decoration


def test_a_revocation_while_the_signer_is_renewed_is_never_answered_good_from_the_cache_rfc6960_2_2(
    db_session: Session, db_sessions: sessionmaker[Session], ca: pki.CertificateAuthority, monkeypatch: Any
) -> None:
    """Renewing the OCSP signer commits the responder's session; a revocation committed at that
    moment must still show, and no "good" may be cached for half the validity."""
    import pki.ocsp as ocsp_mod
    from pki.models import CaAuthority

    issued = _device(db_session, ca)
    signer = db_session.query(CaAuthority).filter_by(kind="ocsp-signer", active=True).one()
    now = signer.not_after - dt.timedelta(days=1)  # the signer is due for renewal
    renew = ocsp_mod.current_ocsp_signer

    def renew_then_a_revocation_commits(session: Session, ca_: Any, **kw: Any) -> Any:
        result = renew(session, ca_, **kw)  # commits the responder's session
        with db_sessions() as other:  # the citizen removes the device right now
            pki.revoke(other, ca_, issued.serial, "keyCompromise", now=now)
        return result

    monkeypatch.setattr(ocsp_mod, "current_ocsp_signer", renew_then_a_revocation_commits)
    req = _request(issued.certificate, ca.certificate)
    pki.respond(db_session, ca, req, now=now)
    monkeypatch.setattr(ocsp_mod, "current_ocsp_signer", renew)
    db_session.rollback()
    again = pki.respond(db_session, ca, req, now=now + dt.timedelta(minutes=1))
    assert ocsp.load_der_ocsp_response(again.der).certificate_status == ocsp.OCSPCertStatus.REVOKED


def _signers(session: Session) -> int:
    from pki.models import CaAuthority
    from pki.setup import OCSP_SIGNER

    q = select(func.count()).select_from(CaAuthority).where(CaAuthority.kind == OCSP_SIGNER)
    return int(session.execute(q).scalar_one())


def test_only_the_worker_that_claims_a_due_rotation_makes_a_new_ocsp_signer_rfc6960_4_2_2_2(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    # Several workers found the signer due at once and each made a signer key and certificate.
    from sqlalchemy import update

    from pki.errors import OcspSignerBusy
    from pki.models import CaAuthority
    from pki.setup import OCSP_SIGNER, ROTATION_CLAIM_TTL, current_ocsp_signer

    now = dt.datetime.now(dt.UTC)
    current = current_ocsp_signer(db_session, ca, now=now)
    due = now + (current.not_after - now) - dt.timedelta(days=1)  # a day before it expires
    claim = update(CaAuthority).where(CaAuthority.id == ca.id)
    db_session.execute(claim.values(rotation_claimed_at=due))  # another worker is at it
    db_session.commit()
    assert current_ocsp_signer(db_session, ca, now=due).serial == current.serial and _signers(db_session) == 1
    # its worker died: after the claim's time another may rotate, and only once
    later = due + ROTATION_CLAIM_TTL + dt.timedelta(seconds=1)
    renewed = current_ocsp_signer(db_session, ca, now=later)
    assert renewed.serial != current.serial and _signers(db_session) == 2
    assert (
        current_ocsp_signer(db_session, ca, now=later).serial == renewed.serial and _signers(db_session) == 2
    )
    # no usable signer at all while another worker makes the first: try again, never a second one
    db_session.execute(update(CaAuthority).where(CaAuthority.kind == OCSP_SIGNER).values(active=False))
    db_session.execute(claim.values(rotation_claimed_at=later))
    db_session.commit()
    with pytest.raises(OcspSignerBusy):
        current_ocsp_signer(db_session, ca, now=later)
    assert _signers(db_session) == 2


def test_a_worker_that_claims_just_after_another_rotated_keeps_the_new_signer(
    db_session: Session, ca: pki.CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It read the old signer as due; the other worker's whole rotation ended (and freed the claim)
    # before its claim: it must not make a third signer.
    from pki import setup as setup_mod
    from pki.models import CaAuthority
    from pki.setup import current_ocsp_signer, rotate_ocsp_signer

    now = dt.datetime.now(dt.UTC)
    first = current_ocsp_signer(db_session, ca, now=now)
    due = first.not_after - dt.timedelta(days=1)
    claim = setup_mod._claim_rotation

    def another_worker_rotated_first(session: Session, ca_: Any, at: dt.datetime) -> bool:
        rotate_ocsp_signer(session, ca_, now=at)  # commits, and frees the claim
        return claim(session, ca_, at)

    monkeypatch.setattr(setup_mod, "_claim_rotation", another_worker_rotated_first)
    got = current_ocsp_signer(db_session, ca, now=due)
    assert got.serial != first.serial and _signers(db_session) == 2
    assert db_session.get(CaAuthority, ca.id).rotation_claimed_at is None  # type: ignore[union-attr]
