"""The SAML eID route through cityid's own pages and HTTP endpoints, against a real SAML IdP
(pysaml2's server, in process): AuthnRequest by HTTP-POST binding, the signed and encrypted
Response posted back to the ACS, the card linked, then logging in with the card alone."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from db import transaction
from db.audit import AuditEvent
from idp.config import EidConfig
from idp.eid_models import EidLink
from tests.eid.saml_idp import IDP_ENTITY, OTHER_SP_ENTITY, SSO_URL, XMLSEC, Issue, TestIdp
from tests.idp.conftest import Browser, Idp
from tests.stepup.conftest import PASSWORD, post_form

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
            select(AuditEvent.reason).where(AuditEvent.action == action, AuditEvent.outcome == outcome)
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
