"""Fixtures for the WebAuthn tests: a relying party over a real database, soft authenticators,
and (for the browser tests) the provider served on ``localhost``."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session

from attestation import AnchorSet, WebAuthnTrust
from db import utcnow
from idp.models import Account, LoginSession
from idp.webauthn import WebAuthnSettings
from smartcard.evidence import TestCa, make_test_root
from tests.idp.conftest import idp_factory
from tests.webauthn.soft_authenticator import SoftAuthenticator

__all__ = ["idp_factory"]  # the provider fixture, shared with tests/idp

RP_ID = "id.stadt.de"
ORIGIN = "https://id.stadt.de"
TRUSTED_AAGUID = bytes.fromhex("c17e0000c17e0000c17e0000c17e0000")


@pytest.fixture(scope="session")
def test_root() -> TestCa:
    """TEST attestation root made at run time: trusted only by the settings below."""
    return make_test_root()


@pytest.fixture
def settings(test_root: TestCa) -> WebAuthnSettings:
    """TEST-ONLY trust: the TEST root anchors the soft authenticator's AAGUID."""
    return WebAuthnSettings(
        rp_id=RP_ID,
        rp_name="Musterstadt City Account",
        origins=frozenset({ORIGIN}),
        formats=frozenset({"packed", "none"}),
        trust=WebAuthnTrust(roots_by_aaguid={TRUSTED_AAGUID: AnchorSet([test_root.certificate])}),
    )


@dataclass
class Citizen:
    account_id: str
    session_digest: str


def _citizen(session: Session) -> Citizen:
    acct = Account(email_enc=b"sealed", email_index=secrets.token_hex(32), email_verified_at=utcnow())
    session.add(acct)
    session.flush()
    login = LoginSession(
        id_digest=secrets.token_hex(32),
        account_id=acct.id,
        expires_at=utcnow() + dt.timedelta(hours=1),
        csrf_secret=secrets.token_hex(16),
        factors="{}",
    )
    session.add(login)
    session.flush()
    return Citizen(acct.id, login.id_digest)


@pytest.fixture
def alice(db_session: Session) -> Citizen:
    return _citizen(db_session)


@pytest.fixture
def bob(db_session: Session) -> Citizen:
    return _citizen(db_session)


@pytest.fixture
def attested_key(test_root: TestCa) -> SoftAuthenticator:
    return SoftAuthenticator(aaguid=TRUSTED_AAGUID, root=test_root)


@pytest.fixture
def passkey() -> Iterator[SoftAuthenticator]:
    """No attestation (format ``none``), like most synced passkeys."""
    yield SoftAuthenticator(aaguid=b"\x00" * 16)
