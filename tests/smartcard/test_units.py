"""Module-level tests of the smartcard hot paths (no HTTP), on every database backend.

What the per-process caches (parsed certificates, the validated issuing CA, imported DPoP keys)
must never change: status, device and ``jti`` come from the database on every call, and a warm
cache still refuses what a cold one refuses.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import pki
from attestation import AndroidApp, AndroidKeyEvidence, RevocationList, TrustStore
from db import transaction, utcnow
from idp.accounts import create_account
from idp.config import CaConfig, Config
from idp.instance import InstanceKeys
from idp.models import SeenJti
from idp.oauth import dpop
from policies import Level
from smartcard import authenticate, challenges, proof, replay
from smartcard.enroll import EnrolRequest, EnrolResult, enrol
from smartcard.errors import (
    AccessDenied,
    BindingMismatch,
    CertificateRevoked,
    InvalidCertificate,
    InvalidChallenge,
    InvalidProof,
)
from smartcard.evidence import TestCa, make_android_key_attestation, make_test_root
from smartcard.models import AUTH, ENROL, PENDING, Challenge, Device, SeenProof
from smartcard.revoke import revoke_device
from smartcard.settings import SmartcardSettings
from smartcard.softtoken import DpopSigner, SoftToken, es256_jws

ISSUER = "https://login.test.invalid"
APPROVE = f"{ISSUER}/api/smartcard/approve"
PACKAGE = "de.musterstadt.cityapp"
DIGEST = hashlib.sha256(b"unit test app").digest()


@dataclass
class Card:
    """A CA, a citizen account, trust in a TEST attestation root, and a way to enrol."""

    sessions: sessionmaker[Session]
    ca: pki.CertificateAuthority
    settings: SmartcardSettings
    root: TestCa
    account: str
    other_account: str
    tmp: Path

    def enrol(self, account: str | None = None) -> tuple[SoftToken, EnrolResult]:
        account = account or self.account
        key = ec.generate_private_key(ec.SECP256R1())
        token = SoftToken(self.tmp, {"server": ISSUER}, key)
        with transaction(self.sessions) as s:
            issued, _ = challenges.create(
                s, purpose=ENROL, account_id=account, ttl=dt.timedelta(minutes=5), now=utcnow()
            )
        chain = make_android_key_attestation(
            key.public_key(), challenges.b64url_decode(issued.value, "c"), PACKAGE, DIGEST, root=self.root
        )
        with transaction(self.sessions) as s:
            result = enrol(
                s,
                self.ca,
                self.settings,
                EnrolRequest(account, issued.value, token.csr(), AndroidKeyEvidence(tuple(chain)), "phone"),
                now=utcnow(),
            )
        token.state["certificate"] = result.certificate_pem.decode()
        return token, result

    def login(self, sid: str = "sid-1", account: str | None = None) -> authenticate.PendingChallenge:
        account = account or self.account
        with transaction(self.sessions) as s:
            authenticate.start(
                s,
                self.settings,
                account_id=account,
                session_sid=sid,
                service_name="Bürgeramt",
                amount=None,
                level=Level.SUBSTANTIAL,
                now=utcnow(),
            )
            return authenticate.pending_for(s, "", account, utcnow())[-1]

    def answer(self, token: SoftToken, item: authenticate.PendingChallenge, **over: Any) -> str:
        claims: dict[str, Any] = {
            "challenge": item.challenge,
            "binding_code": item.binding_code,
            "service_name": item.service_name,
            "amount": None,
            "decision": "approve",
            **over,
        }
        return token.proof("POST", APPROVE, **claims)

    def approve(self, answer: str) -> authenticate.Approval:
        with transaction(self.sessions) as s:
            return authenticate.approve(s, self.ca, self.settings, answer, url=APPROVE, now=utcnow())


@pytest.fixture
def card(db_sessions: sessionmaker[Session], tmp_path: Path) -> Iterator[Card]:
    cfg = Config(
        data_dir=tmp_path,
        issuer=ISSUER,
        secret_key=secrets.token_urlsafe(32),
        key_passphrase=secrets.token_urlsafe(32),
    )
    keys = InstanceKeys.from_config(cfg)
    ca_cfg = CaConfig()
    store = pki.open_key_store(ca_cfg, tmp_path, cfg.key_passphrase)
    with transaction(db_sessions) as s:
        pki.init_ca(s, ca_cfg, store, ISSUER)
        account = create_account(
            s, keys, "erika@example.org", "correct horse battery", verified=True, actor="admin"
        ).id
        other = create_account(
            s, keys, "max@example.org", "correct horse battery", verified=True, actor="admin"
        ).id
    with db_sessions() as s:
        ca = pki.load_ca(s, ca_cfg, store, ISSUER)
    root = make_test_root()
    settings = SmartcardSettings(
        trust=TrustStore.of(
            google_roots=[root.certificate],
            android_revocations=RevocationList.from_json(b'{"entries": {}}', fetched_at=utcnow()),
        ),
        apps=(AndroidApp(PACKAGE, frozenset({DIGEST})),),
    )
    yield Card(db_sessions, ca, settings, root, account, other, tmp_path)


# --------------------------------------------------------------------------- enrolment


def test_enrolment_writes_the_device_row_with_the_issued_certificate(card: Card) -> None:
    _token, result = card.enrol()
    with card.sessions() as s:
        row = s.get(Device, result.device_id)
        assert row is not None and row.account_id == card.account
        assert (row.cert_serial, row.cert_fingerprint) == (result.serial, result.fingerprint_sha256)
        assert pki.status(s, result.serial).status == "issued"
        used = s.execute(select(Challenge).where(Challenge.purpose == ENROL)).scalars().one()
        assert used.state == "used"


def test_enrolment_challenge_is_single_use(card: Card) -> None:
    with transaction(card.sessions) as s:
        issued, _ = challenges.create(
            s, purpose=ENROL, account_id=card.account, ttl=dt.timedelta(minutes=5), now=utcnow()
        )
    with transaction(card.sessions) as s:
        challenges.consume(s, issued.value, purpose=ENROL, account_id=card.account, now=utcnow())
    with card.sessions() as s, pytest.raises(InvalidChallenge, match="already used"):
        challenges.consume(s, issued.value, purpose=ENROL, account_id=card.account, now=utcnow())


def test_enrolment_challenge_of_another_account_is_refused(card: Card) -> None:
    with transaction(card.sessions) as s:
        issued, _ = challenges.create(
            s, purpose=ENROL, account_id=card.other_account, ttl=dt.timedelta(minutes=5), now=utcnow()
        )
    with card.sessions() as s, pytest.raises(InvalidChallenge, match="another account"):
        challenges.consume(s, issued.value, purpose=ENROL, account_id=card.account, now=utcnow())


# --------------------------------------------------------------------------- device proofs


def test_device_proof_jti_is_single_use_rfc9449_11_1(card: Card) -> None:
    token, _ = card.enrol()
    item = card.login()
    answer = card.answer(token, item, decision="deny")
    assert card.approve(answer).decision == "denied"
    with pytest.raises(InvalidProof, match="replayed"):
        card.approve(answer)


def test_revoked_certificate_is_refused_at_once_with_warm_caches_rfc5280_6_3(card: Card) -> None:
    token, result = card.enrol()
    card.approve(card.answer(token, card.login("a")))  # caches warm for this certificate
    with transaction(card.sessions) as s:
        pki.revoke(s, card.ca, result.serial, "keyCompromise")
    with pytest.raises(CertificateRevoked, match="keyCompromise"):
        card.approve(card.answer(token, card.login("b")))


def test_removed_device_is_refused_with_warm_caches(card: Card) -> None:
    token, result = card.enrol()
    card.approve(card.answer(token, card.login("a")))
    with transaction(card.sessions) as s:
        revoke_device(s, card.ca, result.device_id, actor="test", reason="lost", now=utcnow())
    with pytest.raises(CertificateRevoked):
        card.approve(card.answer(token, card.login("b")))


def test_certificate_from_a_lookalike_issuer_is_refused_after_the_issuer_is_cached_rfc5280_6_1(
    card: Card,
) -> None:
    token, _ = card.enrol()
    card.approve(card.answer(token, card.login("a")))  # the real issuing CA is now validated
    real = x509.load_der_x509_certificate(token.certificate_der)
    forger = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder(
            issuer_name=real.issuer,  # same name as our issuing CA, another key
            subject_name=real.subject,
            public_key=token.key.public_key(),
            serial_number=x509.random_serial_number(),
            not_valid_before=real.not_valid_before_utc,
            not_valid_after=real.not_valid_after_utc,
            extensions=list(real.extensions),
        )
        .sign(forger, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    claims = {"jti": secrets.token_urlsafe(8), "htm": "POST", "htu": APPROVE, "iat": int(time.time())}
    header = {"typ": proof.TYP, "alg": "ES256", "x5c": [base64.b64encode(forged).decode()]}
    with card.sessions() as s, pytest.raises(InvalidCertificate, match="path validation"):
        proof.verify(
            s, card.ca, es256_jws(token.key, header, claims), method="POST", url=APPROVE, now=utcnow()
        )


def test_certificate_outside_its_validity_is_refused_with_warm_caches_rfc5280_6_1_3(card: Card) -> None:
    token, result = card.enrol()
    card.approve(card.answer(token, card.login("a")))
    later = result.not_after + dt.timedelta(seconds=1)
    answer = card.answer(token, card.login("b"))
    with card.sessions() as s, pytest.raises(InvalidCertificate, match="expired"):
        proof.verify(s, card.ca, answer, method="POST", url=APPROVE, now=later)


def test_path_check_of_a_new_issuing_ca_is_done_in_full(card: Card) -> None:
    """Another CA object (e.g. after a key rotation) is validated against its root again."""
    token, _ = card.enrol()
    cert = x509.load_der_x509_certificate(token.certificate_der)
    proof.check_path(card.ca, cert, utcnow())
    stranger = make_test_root("a root we do not trust")
    other = dataclasses.replace(card.ca, root_certificate=stranger.certificate)
    with pytest.raises(x509.verification.VerificationError):
        proof.check_path(other, cert, utcnow())


# --------------------------------------------------------------------------- PKI-2FA answers


def test_pki2fa_challenge_is_answered_once(card: Card) -> None:
    token, _ = card.enrol()
    item = card.login()
    assert card.approve(card.answer(token, item)).decision == "approved"
    with pytest.raises(InvalidChallenge, match="already answered"):
        card.approve(card.answer(token, item))


def test_refused_answer_leaves_the_challenge_pending(card: Card) -> None:
    token, _ = card.enrol()
    item = card.login()
    with pytest.raises(BindingMismatch):
        card.approve(card.answer(token, item, binding_code="AAA-AAA"))
    with card.sessions() as s:
        row = s.execute(select(Challenge).where(Challenge.purpose == AUTH)).scalars().one()
        assert row.state == PENDING and row.device_id is None
        assert s.execute(select(SeenProof)).first() is None  # the refused proof's jti not kept
    assert card.approve(card.answer(token, item)).decision == "approved"


def test_device_of_another_account_cannot_answer(card: Card) -> None:
    token, _ = card.enrol(card.other_account)
    item = card.login()
    with pytest.raises(AccessDenied):
        card.approve(card.answer(token, item))


def test_unknown_challenge_is_refused(card: Card) -> None:
    token, _ = card.enrol()
    item = card.login()
    fake = dataclasses.replace(item, challenge=challenges.b64url(secrets.token_bytes(32)))
    with pytest.raises(InvalidChallenge, match="unknown"):
        card.approve(card.answer(token, fake))


# --------------------------------------------------------------------------- single use in the DB


def test_first_use_is_shared_through_the_database_and_forgotten_on_rollback(card: Card) -> None:
    table = SeenProof.__table__
    later = utcnow() + dt.timedelta(minutes=2)
    with card.sessions() as s:
        assert replay.first_use(s, table, "k1", later)
        assert not replay.first_use(s, table, "k1", later)  # same transaction
        s.rollback()
    with transaction(card.sessions) as s:
        assert replay.first_use(s, table, "k1", later)  # the rolled-back use left nothing
    with card.sessions() as s:  # another session (as another process would) sees it
        assert not replay.first_use(s, table, "k1", later)


# --------------------------------------------------------------------------- DPoP (RFC 9449)


def _verify_dpop(s: Session, proof_jwt: str, **over: Any) -> dpop.DpopProof:
    args: dict[str, Any] = {
        "method": "GET",
        "url": f"{ISSUER}/api/demo/resource",
        "nonce_key": b"k" * 32,
        "require_nonce": False,
        "access_token": "at",
    }
    args.update(over)
    return dpop.verify_proof(s, proof_jwt, **args)


def test_dpop_proof_replay_is_refused_across_sessions_rfc9449_11_1(card: Card) -> None:
    signer = DpopSigner()
    p = signer.proof("GET", f"{ISSUER}/api/demo/resource", "at")
    with transaction(card.sessions) as s:
        assert _verify_dpop(s, p).jkt == signer.jkt
    with card.sessions() as s, pytest.raises(dpop.DpopError, match="replayed"):
        _verify_dpop(s, p)
    with card.sessions() as s:
        assert s.execute(select(SeenJti)).scalars().one().key.startswith(f"dpop:{signer.jkt}:")


def test_dpop_cached_keys_never_verify_another_keys_proof_rfc9449_4_3_7(card: Card) -> None:
    a, b = DpopSigner(), DpopSigner()
    url = f"{ISSUER}/api/demo/resource"
    with transaction(card.sessions) as s:  # both keys now imported and cached
        assert _verify_dpop(s, a.proof("GET", url, "at")).jkt == a.jkt
        assert _verify_dpop(s, b.proof("GET", url, "at")).jkt == b.jkt
    # a proof signed by a's key, naming b's public key in its header
    claims = {
        "jti": secrets.token_urlsafe(8),
        "htm": "GET",
        "htu": url,
        "iat": int(time.time()),
        "ath": dpop.access_token_hash("at"),
    }
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": b.key.as_dict(private=False)}
    forged = jws.serialize_compact(header, json.dumps(claims).encode(), a.key)
    with card.sessions() as s, pytest.raises(dpop.DpopError, match="signature"):
        _verify_dpop(s, forged)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"method": "POST"}, "htm"),  # RFC 9449 §4.3 (9)
        ({"url": f"{ISSUER}/other"}, "htu"),  # RFC 9449 §4.3 (10)
        ({"access_token": "another"}, "ath"),  # RFC 9449 §4.3 (13)
        ({"require_nonce": True}, "nonce"),  # RFC 9449 §4.3 (11), §8
    ],
)
def test_dpop_proof_checks_hold_with_a_cached_key(card: Card, over: dict[str, Any], message: str) -> None:
    signer = DpopSigner()
    url = f"{ISSUER}/api/demo/resource"
    with transaction(card.sessions) as s:
        _verify_dpop(s, signer.proof("GET", url, "at"))  # the key is cached now
    with card.sessions() as s, pytest.raises(dpop.DpopError, match=message):
        _verify_dpop(s, signer.proof("GET", url, "at"), **over)
