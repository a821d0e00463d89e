"""What a step-up page says matches the level asked for (issue 18 item 8): the eID page is also
the way to *substantial* for a citizen whose ID card is linked and who has no device."""

from __future__ import annotations

import pytest

from idp.config import LEVEL_HIGH, LEVEL_SUBSTANTIAL
from tests.idp.conftest import Browser, Idp
from tests.stepup.conftest import PASSWORD, Rp, walk


@pytest.mark.parametrize("language, highest", [("en", "highest"), ("de", "höchste")])
def test_the_eid_page_for_a_substantial_request_does_not_say_highest_level(
    eid_idp: Idp, language: str, highest: str
) -> None:
    eid_idp.add_user("anna@example.org")
    linking, _ = eid_idp.add_client(
        name="Bauamt", redirect_uris=["http://127.0.0.1:9/cb"], min_level=LEVEL_HIGH
    )
    b = Browser(eid_idp)
    url, _v, _s = Rp(eid_idp, linking, None).authorize_url()
    steps, _done = walk(b, b.follow(b.get(url)), "anna@example.org", persona="erika")
    assert steps == ["/login", "/login/eid"]  # the ID card is linked now

    wants_substantial, _ = eid_idp.add_client(
        name="Kasse", redirect_uris=["http://127.0.0.1:9/cb"], min_level=LEVEL_SUBSTANTIAL
    )
    fresh = Browser(eid_idp)
    fresh.http.headers["Accept-Language"] = language
    url, _v, _s = Rp(eid_idp, wants_substantial, None).authorize_url()
    page = fresh.login("anna@example.org", PASSWORD, fresh.follow(fresh.get(url)))
    assert page.status_code == 200 and "/login/eid" in page.url, page.url  # no device: the card
    assert "Kasse" in page.text and highest not in page.text
