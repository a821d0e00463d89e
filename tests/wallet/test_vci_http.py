"""cityid as an OpenID4VCI 1.0 issuer, through HTTP: the walletsim holder receives the library
card by the pre-authorized code flow and by the authorization-code flow; the independent SD-JWT
implementation (sd-jwt, jwcrypto) verifies it against the city root; revocation shows in the
Token Status List."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
import zlib
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store
from jwcrypto import jwk, jws
from sd_jwt.holder import SDJWTHolder
from sd_jwt.verifier import SDJWTVerifier

import pki
from db import transaction
from idp.vci import store
from tests.idp.conftest import Browser, Idp
from tests.stepup.conftest import PASSWORD, Rp, eid_confirm, walk
from walletsim.holder import Holder, Receiver

EMAIL = "anna@example.org"


@pytest.fixture
def city(idp_factory: Any) -> Idp:
    idp: Idp = idp_factory(eid_connector="simulator", eid_simulator_enabled=True)
    cfg = idp.config
    key_store = pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase)
    with transaction(idp.sessions()) as s:
        pki.init_ca(s, cfg.ca, key_store, cfg.issuer)
    return idp


def _root(city: Idp) -> x509.Certificate:
    cfg = city.config
    with transaction(city.sessions()) as s:
        ca = pki.load_ca(s, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer)
        return ca.root_certificate


def _grant(city: Idp, account_id: str) -> None:
    with transaction(city.sessions()) as s:
        store.grant_card(
            s,
            city.keys.personal_data,
            account_id=account_id,
            number="SB-0042-17",
            given_name="Erika",
            family_name="Mustermann",
            library="Stadtbibliothek Musterstadt",
            valid_until=dt.date.today() + dt.timedelta(days=365),
        )


def _cli(city: Idp, *args: str) -> Any:
    from click.testing import CliRunner

    from cli import main as cli_main

    cfg = city.config
    env = {"CITYID_DATABASE_URL": cfg.database_url, "CITYID_SECRET_KEY": cfg.secret_key}
    env |= {"CITYID_KEY_PASSPHRASE": cfg.key_passphrase, "CITYID_ISSUER": cfg.issuer}
    return CliRunner().invoke(cli_main, [*args, "--data-dir", str(cfg.data_dir), "--json"], env=env)


def _holder() -> Holder:
    return Holder([], requests.get, requests.post)


def independent_verify(credential: str, holder: Holder, root: x509.Certificate) -> dict[str, Any]:
    """The sd-jwt reference implementation as the verifier: issuer key from x5c, chained to the
    city root with cryptography's RFC 5280 path validation; key binding with a fresh nonce."""

    def issuer_key(iss: str, header: dict[str, Any]) -> jwk.JWK:
        chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"]]
        PolicyBuilder().store(Store([root])).extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        ).build_client_verifier().verify(chain[0], chain[1:])
        return jwk.JWK.from_pem(
            chain[0].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )

    h = SDJWTHolder(credential)
    h.create_presentation(
        {n: True for n in ("given_name", "family_name", "card_number", "valid_until", "library")},
        nonce="rp-nonce",
        aud="https://library.example",
        holder_key=holder.key,
        sign_alg="ES256",
    )
    v = SDJWTVerifier(
        h.sd_jwt_presentation, issuer_key, expected_aud="https://library.example", expected_nonce="rp-nonce"
    )
    payload: dict[str, Any] = v.get_verified_payload()
    return payload


def _status_bit(city: Idp, uri: str, idx: int, root: x509.Certificate) -> int:
    resp = requests.get(uri, timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/statuslist+jwt")
    token = jws.JWS()
    token.deserialize(resp.text)
    header = token.jose_header
    assert header["typ"] == "statuslist+jwt"
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    token.verify(
        jwk.JWK.from_pem(leaf.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    )
    payload = json.loads(token.payload)
    assert payload["sub"] == uri
    lst = zlib.decompress(base64.urlsafe_b64decode(payload["status_list"]["lst"] + "=="))
    return (lst[idx // 8] >> (idx % 8)) & 1


def _offer(city: Idp, browser: Browser) -> tuple[str, str]:
    """Log in with password and ID card (a strong factor), open My account's offer, press Add."""
    page = browser.login(EMAIL, PASSWORD, browser.follow(browser.get(f"{city.url}/login")))
    eid_confirm(browser, browser.follow(browser.get(f"{city.url}/login/eid")))
    page = browser.get(f"{city.url}/account/wallet-card")
    assert page.status_code == 200 and 'action="/account/wallet-card"' in page.text, page.text[:500]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    shown = browser.post(f"{city.url}/account/wallet-card", {"csrf_token": token.group(1)})
    assert shown.status_code == 200, shown.text[:500]
    offer = re.search(r'href="(openid-credential-offer://[^"]+)"', shown.text)
    tx = re.search(r'<strong class="code">(\d{6})</strong>', shown.text)
    assert offer and tx and 'src="data:image/svg+xml' in shown.text
    return html.unescape(offer.group(1)), tx.group(1)


def test_holder_receives_library_card_by_pre_authorized_code_and_independent_verifier_accepts(
    city: Idp,
) -> None:
    account = city.add_user(EMAIL)
    _grant(city, account)
    offer, tx_code = _offer(city, Browser(city))
    holder = _holder()
    receiver = Receiver(holder)
    wrong, _o = receiver.redeem_offer(offer, "000000" if tx_code != "000000" else "111111")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    token, parsed = receiver.redeem_offer(offer, tx_code)
    assert token.status_code == 200, token.text
    again, _o = receiver.redeem_offer(offer, tx_code)
    assert again.status_code == 400  # single use
    resp = receiver.request(parsed["credential_issuer"], token.json()["access_token"])
    assert resp.status_code == 200, resp.text
    credential = resp.json()["credentials"][0]["credential"]
    root = _root(city)
    claims = independent_verify(credential, holder, root)
    assert claims["vct"] == "urn:cityid:library-card:1"
    assert claims["card_number"] == "SB-0042-17" and claims["family_name"] == "Mustermann"
    status = claims["status"]["status_list"]
    assert _status_bit(city, status["uri"], status["idx"], root) == 0

    revoked = _cli(city, "credentials", "revoke", EMAIL, "library-card")
    assert revoked.exit_code == 0 and json.loads(revoked.output)["credentials"] == 1, revoked.output
    assert _status_bit(city, status["uri"], status["idx"], root) == 1  # INVALID (Token Status List §7.1)


def test_holder_receives_library_card_by_authorization_code_flow(city: Idp) -> None:
    account = city.add_user(EMAIL)
    _grant(city, account)
    cid, secret = city.add_client(
        name="Wallet", redirect_uris=["http://127.0.0.1:9/cb"], scope="openid library_card"
    )
    wallet = Rp(city, cid, secret)
    browser = Browser(city)
    url, verifier, _s = wallet.authorize_url(scope="openid library_card")
    _steps, page = walk(browser, browser.follow(browser.get(url)), EMAIL)
    token = wallet.redeem(page.headers["Location"], verifier)
    holder = _holder()
    resp = Receiver(holder).request(city.url, token["access_token"])
    assert resp.status_code == 200, resp.text
    claims = independent_verify(resp.json()["credentials"][0]["credential"], holder, _root(city))
    assert claims["library"] == "Stadtbibliothek Musterstadt"


def test_credential_refusals_proof_nonce_token(city: Idp) -> None:
    account = city.add_user(EMAIL)
    _grant(city, account)
    offer, tx_code = _offer(city, Browser(city))
    holder = _holder()
    receiver = Receiver(holder)
    token, _o = receiver.redeem_offer(offer, tx_code)
    at = token.json()["access_token"]
    meta = receiver.metadata(city.url)
    # a made-up c_nonce
    bad = receiver.request(city.url, at, nonce="00" * 40)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_nonce"
    # a proof for another issuer (aud)
    c_nonce = requests.post(meta["nonce_endpoint"], timeout=10).json()["c_nonce"]
    other = requests.post(
        meta["credential_endpoint"],
        json={
            "credential_configuration_id": "library_card",
            "proofs": {"jwt": [receiver.proof(city.url, c_nonce, aud="https://evil.example")]},
        },
        headers={"Authorization": f"Bearer {at}"},
        timeout=10,
    )
    assert other.status_code == 400 and other.json()["error"] == "invalid_proof"
    # the c_nonce is single use
    first = requests.post(
        meta["credential_endpoint"],
        json={
            "credential_configuration_id": "library_card",
            "proofs": {"jwt": [receiver.proof(city.url, c_nonce)]},
        },
        headers={"Authorization": f"Bearer {at}"},
        timeout=10,
    )
    assert first.status_code == 200, first.text
    replay = requests.post(
        meta["credential_endpoint"],
        json={
            "credential_configuration_id": "library_card",
            "proofs": {"jwt": [receiver.proof(city.url, c_nonce)]},
        },
        headers={"Authorization": f"Bearer {at}"},
        timeout=10,
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_nonce"
    # no token
    assert receiver.request(city.url, "nope").status_code == 401


def test_account_deletion_flips_the_status_bit(city: Idp) -> None:
    account = city.add_user(EMAIL)
    _grant(city, account)
    browser = Browser(city)
    offer, tx_code = _offer(city, browser)
    holder = _holder()
    receiver = Receiver(holder)
    token, _o = receiver.redeem_offer(offer, tx_code)
    credential = receiver.request(city.url, token.json()["access_token"]).json()["credentials"][0][
        "credential"
    ]
    root = _root(city)
    status = independent_verify(credential, holder, root)["status"]["status_list"]
    assert _status_bit(city, status["uri"], status["idx"], root) == 0
    page = browser.get(f"{city.url}/account/delete")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    gone = browser.post(
        f"{city.url}/account/delete", {"csrf_token": csrf.group(1), "password": PASSWORD, "confirm": "yes"}
    )
    assert gone.status_code in (200, 302, 303), gone.text[:300]
    with transaction(city.sessions()) as s:
        assert store.card_of(s, city.keys.personal_data, account) is None  # the card went with the account
    assert _status_bit(city, status["uri"], status["idx"], root) == 1  # ... and its credential reads INVALID


def test_dpop_bound_access_token_needs_its_proof_at_the_credential_endpoint(city: Idp) -> None:
    """RFC 9449 §7 (HAIP 1.0 asks for DPoP): a DPoP-bound token presented as Bearer is refused."""
    from tests.idp.conftest import query
    from tests.idp.dpop_client import DpopKey

    account = city.add_user(EMAIL)
    _grant(city, account)
    cid, secret = city.add_client(
        name="Wallet", redirect_uris=["http://127.0.0.1:9/cb"], scope="openid library_card"
    )
    wallet = Rp(city, cid, secret)
    browser = Browser(city)
    url, verifier, _s = wallet.authorize_url(scope="openid library_card")
    _steps, page = walk(browser, browser.follow(browser.get(url)), EMAIL)
    key = DpopKey()
    form = {
        "grant_type": "authorization_code",
        "code": query(page.headers["Location"])["code"],
        "redirect_uri": wallet.redirect_uri,
        "code_verifier": verifier,
    }

    def token_request() -> Any:
        proof = key.proof("POST", f"{city.url}/token")
        return requests.post(
            f"{city.url}/token", auth=(cid, secret or ""), data=form, headers={"DPoP": proof}, timeout=10
        )

    r = token_request()
    if r.status_code == 400 and r.json().get("error") == "use_dpop_nonce":
        key.nonce = r.headers["DPoP-Nonce"]
        r = token_request()
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
    at = r.json()["access_token"]
    holder = _holder()
    as_bearer = Receiver(holder).request(city.url, at)
    assert as_bearer.status_code == 401, as_bearer.text
    meta = Receiver(holder).metadata(city.url)

    def credential_request() -> Any:
        c_nonce = requests.post(meta["nonce_endpoint"], timeout=10).json()["c_nonce"]
        body = {
            "credential_configuration_id": "library_card",
            "proofs": {"jwt": [Receiver(holder).proof(city.url, c_nonce)]},
        }
        proof = key.proof("POST", meta["credential_endpoint"], access_token=at)
        return requests.post(
            meta["credential_endpoint"],
            json=body,
            headers={"Authorization": f"DPoP {at}", "DPoP": proof},
            timeout=10,
        )

    ok = credential_request()
    if ok.status_code == 401 and ok.json().get("error") == "use_dpop_nonce":
        key.nonce = ok.headers["DPoP-Nonce"]
        ok = credential_request()
    assert ok.status_code == 200, ok.text
    assert (
        independent_verify(ok.json()["credentials"][0]["credential"], holder, _root(city))["card_number"]
        == "SB-0042-17"
    )


def _offer_row(city: Idp, key: bytes) -> tuple[str, str, str]:
    account = city.add_user(EMAIL)
    with transaction(city.sessions()) as s:
        code, tx_code = store.create_offer(s, key, account)
    return account, code, tx_code


def test_pre_authorized_code_is_redeemed_once_even_when_a_concurrent_redemption_committed(
    city: Idp,
) -> None:
    """OpenID4VCI 1.0 §6.1: single use. On PostgreSQL (READ COMMITTED) two redemptions may both
    read the offer unused; the one that claims second must be refused, not get a second token.
    Modelled deterministically: this transaction read the offer, then the winner's claim lands."""
    key = b"k" * 32
    account, code, tx_code = _offer_row(city, key)
    digest = store.keyed_digest(key, f"vci-code\x00{code}")
    with transaction(city.sessions()) as s:
        row = s.get(store.CredentialOffer, digest)
        assert row is not None and row.used_at is None  # read as unused
        s.execute(  # the concurrent winner's claim
            store.update(store.CredentialOffer)
            .where(store.CredentialOffer.code_digest == digest)
            .values(used_at=store.utcnow())
            .execution_options(synchronize_session=False)
        )
        with pytest.raises(store.GrantError):
            store.redeem_offer(s, key, code, tx_code)
    assert account


def test_wrong_tx_codes_are_counted_without_lost_updates(city: Idp) -> None:
    """OpenID4VCI 1.0 §4.1.1 / §13.3: a 6-digit tx_code gets TX_CODE_ATTEMPTS tries in total;
    concurrent wrong guesses must not overwrite each other's count (read-modify-write)."""
    key = b"k" * 32
    _account, code, tx_code = _offer_row(city, key)
    digest = store.keyed_digest(key, f"vci-code\x00{code}")
    with transaction(city.sessions()) as s:
        row = s.get(store.CredentialOffer, digest)
        assert row is not None and row.failures == 0  # read before the others were counted
        s.execute(  # two concurrent wrong guesses counted meanwhile
            store.update(store.CredentialOffer)
            .where(store.CredentialOffer.code_digest == digest)
            .values(failures=store.TX_CODE_ATTEMPTS - 1)
            .execution_options(synchronize_session=False)
        )
        store.count_failure(s, key, code)
    with transaction(city.sessions()) as s:
        with pytest.raises(store.GrantError):  # the offer is spent: even the right code fails
            store.redeem_offer(s, key, code, tx_code)


def test_refused_credential_offer_is_audited_and_creates_no_offer(city: Idp) -> None:
    """Every security decision is audited: an offer asked for after a password-only login (no
    strong factor in the last ten minutes) is refused, written down, and stores nothing."""
    from sqlalchemy import func, select

    from db.audit import AuditEvent

    account = city.add_user(EMAIL)
    _grant(city, account)
    browser = Browser(city)
    browser.login(EMAIL, PASSWORD, browser.follow(browser.get(f"{city.url}/login")))
    page = browser.get(f"{city.url}/account")  # the wallet-card page shows no form without one
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    shown = browser.post(f"{city.url}/account/wallet-card", {"csrf_token": token.group(1)})
    assert shown.status_code == 200 and "openid-credential-offer://" not in shown.text
    with city.sessions()() as s:
        assert s.execute(select(func.count()).select_from(store.CredentialOffer)).scalar_one() == 0
        refusals = s.execute(
            select(AuditEvent.reason).where(AuditEvent.action == "vci.offer", AuditEvent.outcome == "denied")
        ).all()
    assert [r.reason for r in refusals] == ["no recent strong factor"]
