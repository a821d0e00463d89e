"""The eID callback's answer is stored once, also under concurrency (PostgreSQL READ COMMITTED)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from db import transaction, utcnow
from idp import eid_store
from idp.crypto import Sealer
from idp.eid.connector import EidResult, PendingEid
from idp.eid_models import EidPending
from idp.models import LoginSession
from policies import Level


def _result(pseudonym: str) -> EidResult:
    return EidResult(
        pseudonym=pseudonym,
        level=Level.HIGH,
        acr=Level.HIGH.acr,
        issuer="urn:test",
        auth_time=utcnow(),
        attributes=(),
        authn_context=Level.HIGH.acr,
    )


def test_a_concurrent_second_callback_cannot_replace_the_first_answer(db_sessions: Any) -> None:
    """Single use of the callback (SAML Profiles §4.1.4.5; OpenID4VP 1.0 §8.2): of two callbacks
    for one state that both read it unanswered, the second is refused and the first's answer,
    with its handover secret, stays. Modelled deterministically: this transaction read the
    pending state, then the other callback's answer lands."""
    sealer = Sealer(b"k" * 32)
    with transaction(db_sessions) as s:
        s.add(
            LoginSession(
                id_digest="s" * 64, csrf_secret="c" * 32, expires_at=utcnow() + dt.timedelta(hours=1)
            )
        )
        s.flush()
        eid_store.save_pending(
            s,
            sealer,
            digest="d" * 64,
            session_digest="s" * 64,
            pending=PendingEid("wallet", "rid", "state", Level.HIGH, utcnow()),
            client_id=None,
        )
    with transaction(db_sessions) as s:
        row = s.get(EidPending, "d" * 64)
        assert row is not None and row.result_enc is None  # read as unanswered
        assert eid_store.claim_result(s, sealer, row, _result("first"), handover_digest="h1")
    with transaction(db_sessions) as s:
        stale = EidPending(state_digest="d" * 64, result_enc=None)  # what the loser read
        assert not eid_store.claim_result(s, sealer, stale, _result("second"), handover_digest="h2")
    with db_sessions() as s:
        row = s.get(EidPending, "d" * 64)
        assert row is not None
        kept = eid_store.result_of(sealer, row)
        assert kept is not None and kept.pseudonym == "first"
        assert eid_store.handover_matches(sealer, row, "h1")
