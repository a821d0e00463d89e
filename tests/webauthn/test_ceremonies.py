"""Server side of the WebAuthn ceremonies (``idp.webauthn``) against a real database, driven
by a software authenticator built on fido2's data classes. Each refusal is a typed error."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp import webauthn as wa
from idp.webauthn_models import WebAuthnChallenge, WebAuthnCredential
from policies import Level, WebAuthnFacts
from smartcard.evidence import make_test_root
from tests.webauthn.conftest import ORIGIN, TRUSTED_AAGUID, Citizen
from tests.webauthn.soft_authenticator import AT, UP, UV, SoftAuthenticator

NOW = dt.datetime.now(dt.UTC)


def _register(
    db: Session, settings: wa.WebAuthnSettings, who: Citizen, key: SoftAuthenticator, **create: Any
) -> wa.Registered:
    options = wa.begin_registration(
        db,
        settings,
        account_id=who.account_id,
        user_name="alice@example.org",
        session_digest=who.session_digest,
        now=NOW,
    )
    create = dict(create)  # callers pass parametrize dicts shared between backends
    response = key.create(options, origin=create.pop("origin", ORIGIN), **create)
    return wa.finish_registration(
        db,
        settings,
        account_id=who.account_id,
        session_digest=who.session_digest,
        response=response,
        name="Key",
        now=NOW,
    )


def _begin(db: Session, settings: wa.WebAuthnSettings, who: Citizen) -> dict[str, Any]:
    return wa.begin_authentication(
        db, settings, account_id=who.account_id, session_digest=who.session_digest, now=NOW
    )


def _finish(
    db: Session, settings: wa.WebAuthnSettings, who: Citizen, response: Any, now: dt.datetime = NOW
) -> Any:
    return wa.finish_authentication(
        db, settings, account_id=who.account_id, session_digest=who.session_digest, response=response, now=now
    )


# --------------------------------------------------------------------------- registration


def test_trusted_packed_attestation_reaches_substantial(db_session, settings, alice, attested_key):
    done = _register(db_session, settings, alice, attested_key)
    assert done.attestation_format == "packed" and done.attestation_trusted
    assert done.max_level is Level.SUBSTANTIAL
    assert wa.account_webauthn_facts(db_session, alice.account_id) == {
        "webauthn": (WebAuthnFacts(done.credential_id, Level.SUBSTANTIAL),)
    }


def test_passkey_without_attestation_stays_low(db_session, settings, alice, passkey):
    done = _register(db_session, settings, alice, passkey)
    assert done.attestation_format == "none" and not done.attestation_trusted
    assert done.max_level is Level.LOW
    assert "attestation_unproven" in done.reason


def test_self_attestation_stays_low_webauthn_8_2(db_session, settings, alice):
    key = SoftAuthenticator(aaguid=TRUSTED_AAGUID)  # no root: self attestation by the credential key
    done = _register(db_session, settings, alice, key, fmt="packed")
    assert not done.attestation_trusted and done.max_level is Level.LOW


def test_packed_under_an_untrusted_root_stays_low(db_session, settings, alice):
    key = SoftAuthenticator(aaguid=TRUSTED_AAGUID, root=make_test_root("someone else's root"))
    done = _register(db_session, settings, alice, key)
    assert not done.attestation_trusted and done.max_level is Level.LOW
    assert "UntrustedRoot" in done.reason


def test_forged_attestation_signature_is_refused(db_session, settings, alice, attested_key):
    with pytest.raises(wa.AttestationRefused, match="attestation"):
        _register(db_session, settings, alice, attested_key, tamper_signature=True)
    assert db_session.execute(select(WebAuthnCredential)).first() is None


def test_format_not_allowed_is_refused(db_session, settings, alice, passkey):
    import dataclasses

    strict = dataclasses.replace(settings, formats=frozenset({"packed"}))
    with pytest.raises(wa.AttestationRefused):
        _register(db_session, strict, alice, passkey)


def test_same_credential_twice_is_refused_webauthn_7_1_step_22(
    db_session, settings, alice, bob, attested_key
):
    _register(db_session, settings, alice, attested_key)
    with pytest.raises(wa.CredentialExists):
        _register(db_session, settings, bob, attested_key)


@pytest.mark.parametrize(
    ("create", "error"),
    [
        pytest.param({"origin": "https://evil.example"}, wa.OriginMismatch, id="fail/origin-7.1-step-9"),
        pytest.param({"rp_id": "evil.example"}, wa.RpIdMismatch, id="fail/rp-id-hash-7.1-step-13"),
        pytest.param({"flags": UV | AT}, wa.UserNotPresent, id="fail/up-flag-7.1-step-14"),
        pytest.param({"kind": "webauthn.get"}, wa.MalformedResponse, id="fail/type-7.1-step-7"),
        pytest.param({"challenge": b"x" * 32}, wa.ChallengeUnknown, id="fail/challenge-7.1-step-8"),
        pytest.param({"flags": UP | UV}, wa.MalformedResponse, id="fail/no-attested-credential-data"),
    ],
)
def test_registration_refusals(db_session, settings, alice, attested_key, create, error):
    with pytest.raises(error):
        _register(db_session, settings, alice, attested_key, **create)


@pytest.mark.parametrize(
    "response",
    [None, "garbage", {}, {"rawId": "!!", "response": {}}, {"id": "a", "rawId": "b", "response": {"x": 1}}],
)
def test_hostile_registration_json_is_malformed(db_session, settings, alice, response):
    with pytest.raises(wa.MalformedResponse):
        wa.finish_registration(
            db_session,
            settings,
            account_id=alice.account_id,
            session_digest=alice.session_digest,
            response=response,
            name="x",
            now=NOW,
        )


def test_registration_challenge_is_single_use_webauthn_13_4_3(db_session, settings, alice, attested_key):
    options = wa.begin_registration(
        db_session,
        settings,
        account_id=alice.account_id,
        user_name="a",
        session_digest=alice.session_digest,
        now=NOW,
    )
    response = attested_key.create(options, origin=ORIGIN)
    kw = {"account_id": alice.account_id, "session_digest": alice.session_digest, "name": "k", "now": NOW}
    wa.finish_registration(db_session, settings, response=response, **kw)
    with pytest.raises(wa.ChallengeUnknown):
        wa.finish_registration(db_session, settings, response=response, **kw)


# --------------------------------------------------------------------------- authentication


@pytest.fixture
def registered(db_session, settings, alice, attested_key) -> SoftAuthenticator:
    _register(db_session, settings, alice, attested_key)
    return attested_key


def test_assertion_by_attested_key_gives_its_level(db_session, settings, alice, registered):
    done = _finish(
        db_session, settings, alice, registered.get(_begin(db_session, settings, alice), origin=ORIGIN)
    )
    assert done.max_level is Level.SUBSTANTIAL and done.sign_count == 1
    row = db_session.execute(select(WebAuthnCredential)).scalar_one()
    assert row.sign_count == 1 and row.last_used_at is not None


def test_challenge_replay_is_refused_webauthn_13_4_3(db_session, settings, alice, registered):
    response = registered.get(_begin(db_session, settings, alice), origin=ORIGIN)
    _finish(db_session, settings, alice, response)
    with pytest.raises(wa.ChallengeUnknown):
        _finish(db_session, settings, alice, response)


def test_a_new_ceremony_voids_the_earlier_challenge(db_session, settings, alice, registered):
    first = registered.get(_begin(db_session, settings, alice), origin=ORIGIN)
    _begin(db_session, settings, alice)
    with pytest.raises(wa.ChallengeUnknown):
        _finish(db_session, settings, alice, first)


def test_expired_challenge_is_refused(db_session, settings, alice, registered):
    response = registered.get(_begin(db_session, settings, alice), origin=ORIGIN)
    with pytest.raises(wa.ChallengeUnknown, match="expired"):
        _finish(
            db_session, settings, alice, response, now=NOW + settings.challenge_ttl + dt.timedelta(seconds=1)
        )


def test_challenge_of_another_browser_session_is_refused_webauthn_7_2_step_12(
    db_session, settings, alice, registered
):
    response = registered.get(_begin(db_session, settings, alice), origin=ORIGIN)
    thief = Citizen(alice.account_id, "0" * 64)
    with pytest.raises(wa.ChallengeUnknown):
        _finish(db_session, settings, thief, response)


def test_registration_challenge_does_not_serve_authentication(db_session, settings, alice, registered):
    options = wa.begin_registration(
        db_session,
        settings,
        account_id=alice.account_id,
        user_name="a",
        session_digest=alice.session_digest,
        now=NOW,
    )
    response = registered.get(
        {"publicKey": {"challenge": options["publicKey"]["challenge"], "rpId": "id.stadt.de"}}, origin=ORIGIN
    )
    with pytest.raises(wa.ChallengeUnknown):
        _finish(db_session, settings, alice, response)


@pytest.mark.parametrize(
    ("get", "error"),
    [
        pytest.param({"origin": "https://evil.example"}, wa.OriginMismatch, id="fail/origin-7.2-step-13"),
        pytest.param(
            {"origin": "http://id.stadt.de"}, wa.OriginMismatch, id="fail/origin-scheme-7.2-step-13"
        ),
        pytest.param({"rp_id": "stadt.de"}, wa.RpIdMismatch, id="fail/rp-id-hash-7.2-step-15"),
        pytest.param({"flags": UV}, wa.UserNotPresent, id="fail/up-flag-7.2-step-16"),
        pytest.param({"kind": "webauthn.create"}, wa.MalformedResponse, id="fail/type-7.2-step-11"),
        pytest.param(
            {"user_handle": b"someone-else"}, wa.CredentialNotAllowed, id="fail/user-handle-7.2-step-6"
        ),
    ],
)
def test_authentication_refusals(db_session, settings, alice, registered, get, error):
    options = _begin(db_session, settings, alice)
    get = dict(get)  # the parametrize dict is shared between backends: do not mutate it
    response = registered.get(options, origin=get.pop("origin", ORIGIN), **get)
    with pytest.raises(error):
        _finish(db_session, settings, alice, response)


def test_signature_by_another_key_is_refused_webauthn_7_2_step_20(db_session, settings, alice, registered):
    from cryptography.hazmat.primitives.asymmetric import ec

    response = registered.get(
        _begin(db_session, settings, alice), origin=ORIGIN, key=ec.generate_private_key(ec.SECP256R1())
    )
    with pytest.raises(wa.SignatureInvalid):
        _finish(db_session, settings, alice, response)


@pytest.mark.parametrize("counter", [1, 0], ids=["fail/equal", "fail/lower"])
def test_sign_count_regression_is_refused_as_clone_webauthn_6_1_1(
    db_session, settings, alice, registered, counter
):
    _finish(
        db_session, settings, alice, registered.get(_begin(db_session, settings, alice), origin=ORIGIN)
    )  # 1
    clone = registered.get(_begin(db_session, settings, alice), origin=ORIGIN, counter=counter)
    with pytest.raises(wa.SignCountRegression) as refused:
        _finish(db_session, settings, alice, clone)
    assert (
        "possible cloned authenticator" in refused.value.detail
        and refused.value.error == "cloned_authenticator"
    )


def test_counter_zero_on_both_sides_is_accepted(db_session, settings, alice, passkey):
    """WebAuthn L2 §6.1.1: authenticators without a counter always send 0 (synced passkeys)."""
    _register(db_session, settings, alice, passkey)
    for _ in range(2):
        _finish(
            db_session,
            settings,
            alice,
            passkey.get(_begin(db_session, settings, alice), origin=ORIGIN, counter=0),
        )


def test_credential_of_another_account_is_refused(db_session, settings, alice, bob, registered, passkey):
    _register(db_session, settings, bob, passkey)  # bob has a credential of his own
    response = registered.get(_begin(db_session, settings, bob), origin=ORIGIN)  # alice's key, bob's ceremony
    with pytest.raises(wa.CredentialNotAllowed):
        _finish(db_session, settings, bob, response)


def test_unknown_credential_is_refused(db_session, settings, alice, registered):
    stranger = SoftAuthenticator()
    with pytest.raises(wa.CredentialUnknown):
        _finish(db_session, settings, alice, stranger.get(_begin(db_session, settings, alice), origin=ORIGIN))


def test_no_credentials_no_ceremony(db_session, settings, alice):
    with pytest.raises(wa.CredentialUnknown):
        _begin(db_session, settings, alice)
    assert db_session.execute(select(WebAuthnChallenge)).first() is None


# --------------------------------------------------------------------------- management and settings


def test_rename_and_remove_only_own_credentials(db_session, settings, alice, bob, registered):
    (key,) = wa.list_credentials(db_session, alice.account_id)
    with pytest.raises(wa.CredentialUnknown):
        wa.rename_credential(db_session, bob.account_id, key.id, "mine now")
    with pytest.raises(wa.CredentialUnknown):
        wa.remove_credential(db_session, bob.account_id, key.id)
    assert wa.rename_credential(db_session, alice.account_id, key.id, "Blue key") == "Key"
    assert wa.remove_credential(db_session, alice.account_id, key.id) == "Blue key"
    assert wa.list_credentials(db_session, alice.account_id) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("  Blue\u200b key\n", "Blue key"), ("x" * 100, "x" * 64), (None, "default"), ("\x00\x07", "default")],
)
def test_credential_names_are_cleaned(raw, expected):
    assert wa.clean_name(raw, "default") == expected.replace("\u200b", "")


def test_rp_id_must_be_a_suffix_of_the_origin():
    with pytest.raises(ValueError, match="suffix"):
        wa.WebAuthnSettings(
            rp_id="stadt.de", rp_name="x", origins=frozenset({"https://evil.de"}), formats=frozenset()
        )


def test_privacy_hooks_export_without_key_material_and_erase(db_session, settings, alice, registered):
    import idp.views.webauthn  # noqa: F401 - registers the hooks
    from idp import privacy

    assert wa.export_credentials in privacy.EXPORT_HOOKS and wa.delete_credentials in privacy.DELETE_HOOKS
    (entry,) = wa.export_credentials(db_session, None, alice.account_id)["security_keys"]
    assert entry["max_level"] == "substantial" and "public_key" not in entry
    wa.delete_credentials(db_session, alice.account_id)
    assert wa.list_credentials(db_session, alice.account_id) == []
