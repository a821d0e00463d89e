"""The verifier core against PIDs made by the independent SD-JWT implementation (walletsim)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from jwcrypto import jwk

from idp.eid.wallet import errors
from idp.eid.wallet.verify import StatusLists, TrustList, verify_presentation
from walletsim.holder import Holder, forged_disclosure
from walletsim.pid import TestPidProvider

AUD = "x509_san_dns:id.musterstadt.example"
NAMES = ["given_name", "family_name", "birthdate", "place_of_birth", "issuing_country"]
STATUS = "https://pid.test.example/status/1"


@pytest.fixture(scope="module")
def provider() -> TestPidProvider:
    return TestPidProvider(status_uri=STATUS)


def _verify(
    provider: TestPidProvider, vp: str, *, trust: TrustList | None = None, nonce: str = "n-1"
) -> object:
    tl = trust or TrustList.from_pem(provider.root_pem)
    fetched: list[str] = []

    def fetch(uri: str) -> bytes:
        fetched.append(uri)
        return provider.status_list_token().encode()

    return verify_presentation(
        vp, trust=tl, nonce=nonce, audience=AUD, now=datetime.now(UTC), status=StatusLists(tl, fetch)
    )


def test_valid_pid_presentation_is_accepted_with_only_disclosed_claims(provider: TestPidProvider) -> None:
    h = Holder([], None, None)
    cred, _idx = provider.issue(h.key)
    got = _verify(provider, h.present(cred, ["given_name", "family_name"], nonce="n-1", aud=AUD))
    assert got.claims["given_name"] == "Erika" and got.claims["family_name"] == "Mustermann"  # type: ignore[attr-defined]
    assert "birthdate" not in got.claims  # type: ignore[attr-defined]  # not disclosed, not seen


def _refused(provider: TestPidProvider, **kw: object) -> type[Exception]:
    h = Holder([], None, None)
    issue_kw = {k: kw.pop(k) for k in ("lifetime", "iat", "vct") if k in kw}
    cred, idx = provider.issue(h.key, **issue_kw)  # type: ignore[arg-type]
    if kw.pop("revoke", False):
        provider.revoke(idx)
    present = {"nonce": "n-1", "aud": AUD}
    present.update({k: kw.pop(k) for k in ("nonce", "aud") if k in kw})  # type: ignore[misc]
    vp = h.present(cred, NAMES, **present, **kw)  # type: ignore[arg-type]
    with pytest.raises(errors.WalletError) as e:
        _verify(provider, vp)
    return type(e.value)


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        pytest.param({"nonce": "n-2"}, errors.NonceMismatch, id="wrong-nonce"),
        pytest.param({"aud": "x509_san_dns:evil.example"}, errors.AudienceMismatch, id="other-verifier-aud"),
        pytest.param(
            {"extra_disclosures": (forged_disclosure("given_name", "Mallory"),)},
            errors.DisclosureNotInCredential,
            id="digest-not-in-credential",
        ),
        pytest.param({"revoke": True}, errors.Revoked, id="revoked-status-bit"),
        pytest.param(
            {"iat": datetime.now(UTC) - timedelta(days=100), "lifetime": timedelta(days=90)},
            errors.CredentialExpired,
            id="expired-pid",
        ),
        pytest.param(
            {"kb_key": jwk.JWK.generate(kty="EC", crv="P-256")}, errors.KeyBindingInvalid, id="kb-other-key"
        ),
        pytest.param({"vct": "urn:eudi:ehic:1"}, errors.WrongType, id="not-a-pid"),
    ],
)
def test_presentation_refusals_sd_jwt_7_1(
    provider: TestPidProvider, kw: dict[str, object], error: type
) -> None:
    assert _refused(provider, **kw) is error


def test_stale_key_binding_jwt_is_refused_sd_jwt_7_3(provider: TestPidProvider) -> None:
    h = Holder([], None, None)
    cred, _ = provider.issue(h.key)
    old = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
    with pytest.raises(errors.StaleKeyBinding):
        _verify(provider, h.present(cred, NAMES, nonce="n-1", aud=AUD, iat=old))


def test_issuer_outside_trust_list_is_refused(provider: TestPidProvider) -> None:
    stranger = TestPidProvider(status_uri=STATUS, cn="Unlisted PID Provider")
    h = Holder([], None, None)
    cred, _ = stranger.issue(h.key)
    vp = h.present(cred, NAMES, nonce="n-1", aud=AUD)
    with pytest.raises(errors.UntrustedIssuer):
        _verify(provider, vp, trust=TrustList.from_pem(provider.root_pem))


def test_status_list_is_cached_not_fetched_per_presentation(provider: TestPidProvider) -> None:
    tl = TrustList.from_pem(provider.root_pem)
    calls: list[str] = []

    def fetch(uri: str) -> bytes:
        calls.append(uri)
        return provider.status_list_token().encode()

    lists = StatusLists(tl, fetch)
    h = Holder([], None, None)
    for _ in range(3):
        cred, _ = provider.issue(h.key)
        vp = h.present(cred, NAMES, nonce="n", aud=AUD)
        verify_presentation(vp, trust=tl, nonce="n", audience=AUD, now=datetime.now(UTC), status=lists)
    assert calls == [STATUS]


def test_status_list_signed_by_untrusted_key_means_status_unavailable(provider: TestPidProvider) -> None:
    stranger = TestPidProvider(status_uri=STATUS, cn="Unlisted")
    tl = TrustList.from_pem(provider.root_pem)
    h = Holder([], None, None)
    cred, _ = provider.issue(h.key)
    vp = h.present(cred, NAMES, nonce="n", aud=AUD)
    lists = StatusLists(tl, lambda uri: stranger.status_list_token().encode())
    with pytest.raises(errors.StatusUnavailable):
        verify_presentation(vp, trust=tl, nonce="n", audience=AUD, now=datetime.now(UTC), status=lists)


def test_plain_http_status_list_is_refused_outside_simulation() -> None:
    local = TestPidProvider(status_uri="http://127.0.0.1:9/status/1")
    tl = TrustList.from_pem(local.root_pem)
    h = Holder([], None, None)
    cred, _ = local.issue(h.key)
    vp = h.present(cred, NAMES, nonce="n", aud=AUD)
    fetch = lambda uri: local.status_list_token().encode()  # noqa: E731
    with pytest.raises(errors.MalformedPresentation):
        verify_presentation(
            vp, trust=tl, nonce="n", audience=AUD, now=datetime.now(UTC), status=StatusLists(tl, fetch)
        )
    lists = StatusLists(tl, fetch, allow_loopback_http=True)  # walletsim on this machine
    verify_presentation(vp, trust=tl, nonce="n", audience=AUD, now=datetime.now(UTC), status=lists)


def test_pid_without_place_of_birth_is_refused_so_the_recognition_key_stays_distinct() -> None:
    """Every input of the recognition key is required: without the place of birth everyone of the
    same name and birth date in the issuing country would share one key, and one's wallet would
    log in to the account the other linked."""
    from idp.eid.wallet.connector import WalletConnector, recognition_key

    conn = WalletConnector(
        verifier=None,  # type: ignore[arg-type]  # only the result is made here
        trust=None,  # type: ignore[arg-type]
        status=None,  # type: ignore[arg-type]
        base_url="https://id.musterstadt.example",
        pseudonym_key=b"k" * 32,
    )
    claims = {"given_name": "Erika", "family_name": "Mustermann", "birthdate": "1964-08-12"}
    claims |= {"issuing_country": "DE"}
    with pytest.raises(errors.ClaimMissing):
        conn._result(claims, "https://pid.test.example", datetime.now(UTC))
    born = conn._result(claims | {"place_of_birth": {"locality": "Berlin"}}, "iss", datetime.now(UTC))
    key = recognition_key(b"k" * 32, {**claims, "place_of_birth": "Berlin"})
    assert born.pseudonym == key
