"""End to end against a SAML IdP that is not built on pysaml2: SimpleSAMLphp 1.19 (Debian's
``simplesamlphp``, see tests/eid/simplesamlphp.py) as a BundID-like IdP with signed and encrypted
assertions. cityid's SP metadata from ``/eid/saml/metadata`` is all SimpleSAMLphp knows of it, and
SimpleSAMLphp's own metadata is all cityid knows of the IdP; a citizen's browser (one cookie
jar) goes through both over HTTP to a level-high session."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from sqlalchemy import func, select

from db import transaction
from db.audit import AuditEvent
from idp import eid_store
from idp.config import LEVEL_HIGH, EidConfig
from idp.eid_models import EidLink
from idp.models import Account
from policies import Level
from tests.eid.saml_idp import XMLSEC, make_key_pair
from tests.eid.simplesamlphp import SimpleSamlPhp
from tests.idp.conftest import Browser, Idp
from tests.stepup.conftest import PASSWORD, REDIRECT, Rp, finish, post_form

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
EID_LINK = re.compile(r'<a href="(/login/eid[^"]*)" class="eid-login">')
ERIKA, MAX = "erika:pin-erika", "max:pin-max"  # SimpleSAMLphp users: with / without TrustLevel


def _cityid_with(idp_factory: Any, tmp_path: Path, ssp: SimpleSamlPhp, **eid: Any) -> Idp:
    """A live cityid whose SAML connector trusts ``ssp`` by its published metadata, and whom
    ``ssp`` knows by cityid's published SP metadata."""
    (tmp_path / "ssp-idp-metadata.xml").write_text(ssp.idp_metadata())
    key, cert = make_key_pair(tmp_path, "cityid-sp")
    idp: Idp = idp_factory(
        eid_connector="saml",
        eid=EidConfig(
            saml_sp_key_file=key,
            saml_sp_cert_file=cert,
            saml_idp_entity_id=ssp.entity_id,
            saml_idp_metadata_file=str(tmp_path / "ssp-idp-metadata.xml"),
            saml_xmlsec_binary=XMLSEC,
            **eid,
        ),
    )
    sp_metadata = requests.get(f"{idp.url}/eid/saml/metadata", timeout=10)
    assert sp_metadata.status_code == 200
    ssp.trust_sp(sp_metadata.text)
    return idp


@pytest.fixture
def ssp(tmp_path: Path) -> Iterator[SimpleSamlPhp]:
    """SimpleSAMLphp with its default metadata: SingleSignOnService by HTTP-Redirect only."""
    (tmp_path / "ssp").mkdir()
    server = SimpleSamlPhp(tmp_path / "ssp")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ssp_post(tmp_path: Path) -> Iterator[SimpleSamlPhp]:
    """SimpleSAMLphp offering HTTP-POST (and HTTP-Redirect) for its SingleSignOnService."""
    (tmp_path / "ssp").mkdir()
    server = SimpleSamlPhp(tmp_path / "ssp", sso_bindings=(BINDING_HTTP_POST, BINDING_HTTP_REDIRECT))
    server.start()
    yield server
    server.stop()


def _with_card(b: Browser, ssp: SimpleSamlPhp, page: Any, user: str) -> Any:
    """On cityid's eID page: on to SimpleSAMLphp (whichever binding its metadata offers), log in
    there as ``user``, carry its HTML-POST answer back to cityid's ACS, follow cityid."""
    assert page.status_code == 200 and urlsplit(page.url).path == "/login/eid", (page.url, page.text[:500])
    sent = post_form(b, page, {"eid": "start"})
    if sent.status_code in (302, 303):  # HTTP-Redirect binding (SAML Bindings §3.4)
        location = sent.headers["Location"]
        assert location.startswith(f"{ssp.url}/saml2/idp/SSOService.php?SAMLRequest="), location
        assert "&Signature=" in location and "&SigAlg=" in location
        answer = ssp.log_in(b.http, location, user)
    else:  # HTTP-POST binding (SAML Bindings §3.5): cityid's form to the IdP
        assert sent.status_code == 200 and f'action="{ssp.url}/' in sent.text, sent.text[:800]
        form = {k: html.unescape(v) for k, v in HIDDEN.findall(sent.text)}
        action = re.search(r'<form method="post" action="([^"]+)"', sent.text)
        assert action and "SAMLRequest" in form
        answer = ssp.log_in(b.http, html.unescape(action.group(1)), user, form=form)
    assert answer["action"] == f"{b.idp.url}/login/eid/callback", answer["action"]  # from our metadata
    raw = base64.b64decode(answer["SAMLResponse"]).decode()
    # SimpleSAMLphp signed and encrypted the assertion: AES-128-CBC (1.19 uses it for every
    # certificate-encrypted assertion), the key by RSA-OAEP to the certificate in our metadata.
    assert "EncryptedAssertion" in raw and "xmlenc#aes128-cbc" in raw and "rsa-oaep-mgf1p" in raw
    assert "Mustermann" not in raw and "bpk2-" not in raw
    b.last_answer = {"SAMLResponse": answer["SAMLResponse"], "RelayState": answer["RelayState"]}  # type: ignore[attr-defined]
    return b.follow(b.post(answer["action"], b.last_answer))  # type: ignore[attr-defined]


def _count(idp: Idp, model: Any) -> int:
    with transaction(idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def _audit(idp: Idp, action: str, outcome: str) -> list[str]:
    with transaction(idp.sessions()) as s:
        rows = s.execute(
            select(AuditEvent.reason)
            .where(AuditEvent.action == action, AuditEvent.outcome == outcome)
            .order_by(AuditEvent.seq)
        )
        return [r for (r,) in rows]


def _attributes(idp: Idp, account_id: str) -> dict[str, tuple[str, Level, str]]:
    with transaction(idp.sessions()) as s:
        found = eid_store.verified_attributes(s, idp.keys.personal_data, account_id)
        return {a.name: (a.value, a.level, a.source) for a in found}


def _logged_in(idp: Idp, email: str = "anna@example.org") -> tuple[Browser, str]:
    account_id = idp.add_user(email)
    b = Browser(idp)
    b.login(email, PASSWORD, b.follow(b.get(f"{idp.url}/login")))
    return b, account_id


def _link_then_card_alone(idp: Idp, ssp: SimpleSamlPhp) -> None:
    """Anna links Erika's card; then, in a new browser, the login page's ID card link alone
    gets a service asking for *high* its code."""
    anna, anna_id = _logged_in(idp)
    linked = _with_card(anna, ssp, anna.follow(anna.get(f"{idp.url}/login/eid")), ERIKA)
    assert linked.status_code == 200 and urlsplit(linked.url).path == "/account", linked.text[:800]
    assert _count(idp, EidLink) == 1
    assert f"saml: high from {ssp.entity_id}" in _audit(idp, "eid.verify", "success")
    # The same answer again (a replayed POST): refused, nothing changes.
    assert anna.post(f"{idp.url}/login/eid/callback", anna.last_answer).status_code == 400  # type: ignore[attr-defined]
    assert _count(idp, EidLink) == 1 and _audit(idp, "eid.verify", "denied")
    assert _attributes(idp, anna_id) == {
        "given_name": ("Erika", Level.HIGH, ssp.entity_id),
        "family_name": ("Mustermann", Level.HIGH, ssp.entity_id),
        "birthdate": ("1964-08-12", Level.HIGH, ssp.entity_id),
    }

    cid, secret = idp.add_client(
        name="Bauamt", redirect_uris=[REDIRECT], scope="openid", min_level=LEVEL_HIGH
    )
    rp = Rp(idp, cid, secret)
    fresh = Browser(idp)  # nobody logged in
    url, verifier, _state = rp.authorize_url()
    login_page = fresh.follow(fresh.get(url))
    link = EID_LINK.search(login_page.text)
    assert login_page.status_code == 200 and link, login_page.text[:800]
    eid_page = fresh.follow(fresh.get(idp.url + html.unescape(link.group(1))))
    done = finish(fresh, _with_card(fresh, ssp, eid_page, ERIKA))
    assert done.status_code in (302, 303) and done.headers["Location"].startswith(REDIRECT), done.text[:800]
    claims = rp.claims(rp.redeem(done.headers["Location"], verifier)["id_token"])
    assert claims["acr"] == LEVEL_HIGH and claims["sub"]
    assert "eID at high" in _audit(idp, "login.eid", "success")


def test_simplesamlphp_redirect_binding_idp_links_the_card_and_the_card_alone_reaches_high(
    idp_factory: Any, tmp_path: Path, ssp: SimpleSamlPhp
) -> None:
    """SimpleSAMLphp's default metadata offers HTTP-Redirect only (was: 500 UnsupportedBinding)."""
    _link_then_card_alone(_cityid_with(idp_factory, tmp_path, ssp), ssp)


def test_simplesamlphp_post_binding_idp_links_the_card_and_the_card_alone_reaches_high(
    idp_factory: Any, tmp_path: Path, ssp_post: SimpleSamlPhp
) -> None:
    _link_then_card_alone(_cityid_with(idp_factory, tmp_path, ssp_post), ssp_post)


def test_simplesamlphp_attributes_without_trust_level_are_refused_under_the_bundid_model(
    idp_factory: Any, tmp_path: Path, ssp: SimpleSamlPhp
) -> None:
    idp = _cityid_with(idp_factory, tmp_path, ssp)  # saml_attribute_trust = "attribute"
    anna, _id = _logged_in(idp)
    refused = _with_card(anna, ssp, anna.follow(anna.get(f"{idp.url}/login/eid")), MAX)
    assert refused.status_code == 400
    assert _count(idp, EidLink) == 0
    assert [r.split(":")[0] for r in _audit(idp, "eid.verify", "denied")] == ["trust_level_missing"]


def test_simplesamlphp_without_trust_levels_vouches_at_the_assertion_level_when_so_configured(
    idp_factory: Any, tmp_path: Path, ssp: SimpleSamlPhp
) -> None:
    """An IdP that is not BundID (given name, family name, birth date without TrustLevel): with
    ``saml_attribute_trust = "assertion"`` they are kept at the level it authenticated (high)."""
    idp = _cityid_with(idp_factory, tmp_path, ssp, saml_attribute_trust="assertion")
    anna, anna_id = _logged_in(idp)
    linked = _with_card(anna, ssp, anna.follow(anna.get(f"{idp.url}/login/eid")), MAX)
    assert linked.status_code == 200 and urlsplit(linked.url).path == "/account", linked.text[:800]
    assert _attributes(idp, anna_id) == {
        "given_name": ("Max", Level.HIGH, ssp.entity_id),
        "family_name": ("Mustermann", Level.HIGH, ssp.entity_id),
        "birthdate": ("1970-01-01", Level.HIGH, ssp.entity_id),
    }


def test_simplesamlphp_an_unlinked_card_reaches_no_account(
    idp_factory: Any, tmp_path: Path, ssp: SimpleSamlPhp
) -> None:
    idp = _cityid_with(idp_factory, tmp_path, ssp)
    idp.add_user("anna@example.org")
    accounts = _count(idp, Account)
    stranger = Browser(idp)
    refused = _with_card(stranger, ssp, stranger.follow(stranger.get(f"{idp.url}/login/eid")), ERIKA)
    assert refused.status_code == 403
    assert _count(idp, Account) == accounts and _count(idp, EidLink) == 0
    assert _audit(idp, "login.eid", "denied") == ["no usable account linked to this eID"]


def test_simplesamlphp_checks_the_authnrequest_signature_with_the_published_certificate(
    idp_factory: Any, tmp_path: Path, ssp: SimpleSamlPhp
) -> None:
    """SimpleSAMLphp really verifies cityid's query-string signature (SAML Bindings §3.4.4.1)
    with the certificate from cityid's SP metadata: with another certificate there, it refuses."""
    idp = _cityid_with(idp_factory, tmp_path, ssp)
    published = ssp.sp_metadata_file.read_text()
    _key, other = make_key_pair(tmp_path, "someone-else")
    other_b64 = "".join(line for line in Path(other).read_text().splitlines() if "-----" not in line)
    ours = re.search(r"<ns2:X509Certificate>([^<]+)</ns2:X509Certificate>", published)
    assert ours
    ssp.trust_sp(published.replace(ours.group(1), other_b64))
    b = Browser(idp)
    sent = post_form(b, b.follow(b.get(f"{idp.url}/login/eid")), {"eid": "start"})
    assert sent.status_code in (302, 303)
    at_idp = b.http.get(sent.headers["Location"], timeout=30)
    assert 'name="password"' not in at_idp.text
    assert "unable to validate signature on query string" in ssp.log().lower(), ssp.log()
    ssp.trust_sp(published)  # the right certificate again: the login form appears
    sent = post_form(b, b.follow(b.get(f"{idp.url}/login/eid")), {"eid": "start"})
    assert 'name="password"' in b.http.get(sent.headers["Location"], timeout=30).text
