"""The SAML eID route through cityid's own pages and HTTP endpoints, against a real SAML IdP
(pysaml2's server, in process): AuthnRequest by HTTP-POST binding, the signed and encrypted
Response posted back to the ACS, the card linked, then logging in with the card alone."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select

from db import transaction
from db.audit import AuditEvent
from idp.config import LEVEL_HIGH, EidConfig
from idp.eid_models import EidLink
from idp.models import Account
from tests.eid.saml_idp import IDP_ENTITY, OTHER_SP_ENTITY, SSO_URL, XMLSEC, Issue, TestIdp
from tests.idp.conftest import Browser, Idp
from tests.stepup.conftest import PASSWORD, REDIRECT, Rp, finish, post_form

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@pytest.fixture
def saml(idp_factory: Any, tmp_path: Path) -> tuple[Idp, TestIdp]:
    d = tmp_path / "saml"
    d.mkdir()
    upstream = TestIdp(d)  # keys and the IdP's metadata: cityid checks them at start
    idp: Idp = idp_factory(
        eid_connector="saml",
        eid=EidConfig(
            saml_sp_key_file=str(d / "sp.key"),
            saml_sp_cert_file=str(d / "sp.crt"),
            saml_idp_entity_id=IDP_ENTITY,
            saml_idp_metadata_file=str(d / "idp-metadata.xml"),
            saml_xmlsec_binary=XMLSEC,
        ),
    )
    # The IdP knows this cityid's entity id and ACS (its URL has the live server's port).
    upstream.serve_sp(f"{idp.url}/login/eid/saml", f"{idp.url}/login/eid/callback")
    return idp, upstream


def _through_upstream(
    b: Browser, upstream: TestIdp, issue: Issue | None = None
) -> tuple[Any, dict[str, str]]:
    """Start the eID login at cityid, take its AuthnRequest (HTTP-POST binding) to the IdP, which
    verifies its signature, and return the request with the IdP's answer for cityid's ACS."""
    page = b.follow(b.get(f"{b.idp.url}/login/eid"))
    assert page.status_code == 200, page.text
    post = post_form(b, page, {"eid": "start"})
    assert post.status_code == 200 and f'action="{SSO_URL}"' in post.text, post.text
    form = {k: html.unescape(v) for k, v in HIDDEN.findall(post.text)}
    request = upstream.receive(form["SAMLRequest"])
    return request, {"SAMLResponse": upstream.respond(request, issue), "RelayState": form["RelayState"]}


def _logged_in(idp: Idp) -> Browser:
    idp.add_user("anna@example.org")
    anna = Browser(idp)
    anna.login("anna@example.org", PASSWORD, anna.follow(anna.get(f"{idp.url}/login")))
    return anna


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


def test_saml_eid_links_the_card_then_logs_in_alone_saml_bindings_3_5(saml: tuple[Idp, TestIdp]) -> None:
    idp, upstream = saml
    anna = _logged_in(idp)
    _request, posted = _through_upstream(anna, upstream)
    done = anna.follow(anna.post(f"{idp.url}/login/eid/callback", posted))
    assert done.status_code == 200, done.text
    assert _count(idp, EidLink) == 1
    assert any(r.startswith("saml: high") for r in _audit(idp, "eid.verify", "success"))

    # The same Response again (an attacker's replay of the POST): refused, nothing changes.
    again = anna.post(f"{idp.url}/login/eid/callback", posted)
    assert again.status_code == 400
    assert _count(idp, EidLink) == 1
    assert _audit(idp, "eid.verify", "denied")  # the state is used up (single use)

    # A new browser, nobody logged in: the card alone logs Anna in.
    fresh = Browser(idp)
    _request, posted = _through_upstream(fresh, upstream)
    fresh.follow(fresh.post(f"{idp.url}/login/eid/callback", posted))
    account = fresh.get(f"{idp.url}/account")
    assert account.status_code == 200 and "anna@example.org" in account.text


def test_saml_response_for_another_service_is_refused_saml_core_2_5_1_4(saml: tuple[Idp, TestIdp]) -> None:
    idp, upstream = saml
    anna = _logged_in(idp)
    wrong = Issue(audience=OTHER_SP_ENTITY, destination=f"{idp.url}/login/eid/callback")
    request, posted = _through_upstream(anna, upstream, wrong)
    refused = anna.post(f"{idp.url}/login/eid/callback", posted)
    assert refused.status_code == 400
    assert _count(idp, EidLink) == 0
    assert _audit(idp, "eid.verify", "denied")
    # The state was used up by the failed answer: a corrected Response cannot follow it.
    posted["SAMLResponse"] = upstream.respond(request)
    assert anna.post(f"{idp.url}/login/eid/callback", posted).status_code == 400
    assert _count(idp, EidLink) == 0


# ----------------------------------------------------------------------------- SP metadata


def test_the_sp_metadata_is_served_at_eid_saml_metadata_saml_metadata_2_4_4(
    saml: tuple[Idp, TestIdp],
) -> None:
    from tests.eid.test_saml_idps import check_sp_metadata

    idp, upstream = saml
    resp = requests.get(f"{idp.url}/eid/saml/metadata", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/samlmetadata+xml")  # SAML Metadata §4.1.1
    check_sp_metadata(
        resp.text,
        entity_id=f"{idp.url}/login/eid/saml",
        acs_url=f"{idp.url}/login/eid/callback",
        cert_file=upstream.sp_cert,
    )


def test_there_is_no_sp_metadata_without_a_saml_connector(idp: Idp) -> None:
    assert requests.get(f"{idp.url}/eid/saml/metadata", timeout=10).status_code == 404


# ----------------------------------------------------------------------------- the card alone


EID_LINK = re.compile(r'<a href="(/login/eid[^"]*)" class="eid-login">')


def _card_on_the_login_page(b: Browser, upstream: TestIdp, login_page: Any) -> Any:
    """From the login page, the ID card alone: its link, the eID service, back to cityid."""
    assert login_page.status_code == 200 and urlsplit(login_page.url).path == "/login", login_page.url
    link = EID_LINK.search(login_page.text)
    assert link, login_page.text
    page = b.follow(b.get(b.idp.url + html.unescape(link.group(1))))
    assert page.status_code == 200 and urlsplit(page.url).path == "/login/eid", page.text
    post = post_form(b, page, {"eid": "start"})
    form = {k: html.unescape(v) for k, v in HIDDEN.findall(post.text)}
    request = upstream.receive(form["SAMLRequest"])
    answer = {"SAMLResponse": upstream.respond(request), "RelayState": form["RelayState"]}
    return b.follow(b.post(f"{b.idp.url}/login/eid/callback", answer))


def test_the_login_page_offers_the_id_card_alone_and_it_gives_high_to_the_linked_account(
    saml: tuple[Idp, TestIdp],
) -> None:
    idp, upstream = saml
    anna = _logged_in(idp)
    _request, posted = _through_upstream(anna, upstream)
    anna.follow(anna.post(f"{idp.url}/login/eid/callback", posted))
    assert _count(idp, EidLink) == 1  # Anna linked her card

    cid, secret = idp.add_client(
        name="Bauamt", redirect_uris=[REDIRECT], scope="openid", min_level=LEVEL_HIGH
    )
    rp = Rp(idp, cid, secret)
    fresh = Browser(idp)  # nobody logged in
    url, verifier, _state = rp.authorize_url()
    login_page = fresh.follow(fresh.get(url))
    done = finish(fresh, _card_on_the_login_page(fresh, upstream, login_page))
    assert done.status_code in (302, 303) and done.headers["Location"].startswith(REDIRECT), done.text
    claims = rp.claims(rp.redeem(done.headers["Location"], verifier)["id_token"])
    assert claims["acr"] == LEVEL_HIGH
    assert any(r == "eID at high" for r in _audit(idp, "login.eid", "success"))


def test_an_unlinked_card_from_the_login_page_reaches_and_creates_no_account(
    saml: tuple[Idp, TestIdp],
) -> None:
    idp, upstream = saml
    idp.add_user("anna@example.org")  # has no card linked
    accounts = _count(idp, Account)
    stranger = Browser(idp)
    refused = _card_on_the_login_page(stranger, upstream, stranger.follow(stranger.get(f"{idp.url}/login")))
    assert refused.status_code == 403 and 'href="/login"' in refused.text
    assert _count(idp, Account) == accounts and _count(idp, EidLink) == 0
    account_page = stranger.get(f"{idp.url}/account")  # not logged in: sent to the login page
    assert account_page.status_code in (302, 303) and "/login" in account_page.headers["Location"]
    assert _audit(idp, "login.eid", "denied") == ["no usable account linked to this eID"]


def test_the_login_page_offers_no_id_card_without_a_connector(idp: Idp) -> None:
    b = Browser(idp)
    page = b.follow(b.get(f"{idp.url}/login"))
    assert page.status_code == 200 and "/login/eid" not in page.text


def test_the_card_link_on_the_login_page_carries_only_the_client_id(saml: tuple[Idp, TestIdp]) -> None:
    """Query parameters are not handed to url_for (its _external, _scheme, _anchor would build
    another link, or fail): the link is /login/eid with the pending client's id at most."""
    idp, _upstream = saml
    b = Browser(idp)
    for query in (
        "_external=1&_scheme=javascript",
        "_anchor=x&client_id=demo",
        "_method=POST",
        "client_id=%22%3E%3Cscript%3E",
    ):
        page = b.get(f"{idp.url}/login?{query}")
        assert page.status_code == 200, (query, page.status_code)
        link = EID_LINK.search(page.text)
        assert link, page.text
        href = html.unescape(link.group(1))
        assert urlsplit(href).path == "/login/eid" and set(parse_qs(urlsplit(href).query)) <= {"client_id"}
        assert 'href="javascript' not in page.text and "<script>" not in page.text


def test_an_idp_metadata_file_broken_while_running_refuses_eid_login_without_a_server_error(
    saml: tuple[Idp, TestIdp],
) -> None:
    """The file is read again when it changes; a broken one fails closed (503, audited) and a
    fixed one works again, without a restart."""
    idp, upstream = saml
    path = Path(upstream.settings.idp_metadata_file)
    good = path.read_text()
    b = Browser(idp)
    page = b.follow(b.get(f"{idp.url}/login/eid"))  # the connector is built, the file read
    path.write_text(good[: len(good) // 3])  # then the admin's copy goes wrong
    refused = post_form(b, page, {"eid": "start"})
    assert refused.status_code == 503, refused.text
    assert any(r.startswith("metadata_unusable") for r in _audit(idp, "eid.start", "denied"))
    assert requests.get(f"{idp.url}/eid/saml/metadata", timeout=10).status_code == 200  # ours still
    path.write_text(good + "\n")
    _request, posted = _through_upstream(Browser(idp), upstream)
    assert posted["SAMLResponse"]
