"""The ``oidc`` eID connector against a second cityid acting as the upstream eID provider:
its ID token's ``acr`` is mapped to our level through ``eid.oidc_acr_levels``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sqlalchemy import select

from db import make_engine, transaction
from db.migrate import upgrade
from idp.config import LEVEL_HIGH, LEVEL_LOW, EidConfig
from idp.eid_models import EidLink
from tests.conftest import SERVER_POLL_SECONDS
from tests.idp.conftest import Browser, query
from tests.stepup.conftest import PASSWORD, Rp, finish, post_form


def test_oidc_connector_maps_upstream_acr_to_our_level(idp_factory: Any, tmp_path: Path) -> None:
    # The upstream is another organisation: its own database.
    upstream_db = f"sqlite:///{tmp_path / 'upstream.sqlite3'}"
    engine = make_engine(upstream_db, pool=False)
    upgrade(engine)
    engine.dispose()
    upstream = idp_factory(database_url=upstream_db)
    upstream.add_user("anna@upstream.example")
    ours = idp_factory(eid_connector="oidc")
    cid, secret = upstream.add_client(
        name="cityid (downstream)", redirect_uris=[f"{ours.url}/login/eid/callback"], scope="openid profile"
    )
    # Our client registration at the upstream needs our URL, known only once we run: set the
    # eID settings before the first eID request (the connector is built then).
    rt = ours.app.extensions["cityid"]
    rt.config = dataclasses.replace(
        rt.config,
        eid=EidConfig(
            oidc_issuer=upstream.url,
            oidc_client_id=cid,
            oidc_client_secret=secret or "",
            # The upstream logs its users in by password (low); for this test it stands in for
            # an eID provider whose "low" means our "high".
            oidc_acr_levels={LEVEL_LOW: "high"},
        ),
    )
    ours.add_user("anna@example.org")
    svc_id, svc_secret = ours.add_client(
        name="Bauamt", redirect_uris=["http://127.0.0.1:9/cb"], min_level=LEVEL_HIGH
    )
    rp = Rp(ours, svc_id, svc_secret)

    citizen = Browser(ours)  # two cookie jars: both servers are on 127.0.0.1
    at_upstream = Browser(upstream)
    url, verifier, _state = rp.authorize_url()
    page = citizen.login("anna@example.org", PASSWORD, citizen.follow(citizen.get(url)))
    assert "/login/eid" in page.url and "SIMULATION" not in page.text
    away = post_form(citizen, page, {"eid": "start"})
    assert away.status_code == 302 and away.headers["Location"].startswith(f"{upstream.url}/authorize")
    asked = query(away.headers["Location"])
    assert asked["acr_values"] == LEVEL_LOW and asked["code_challenge_method"] == "S256"  # RFC 7636 §4.3

    up = at_upstream.login(
        "anna@upstream.example", PASSWORD, at_upstream.follow(at_upstream.get(away.headers["Location"]))
    )
    up = finish(at_upstream, up)
    assert up.status_code == 302 and up.headers["Location"].startswith(f"{ours.url}/login/eid/callback")

    back = finish(citizen, citizen.follow(citizen.get(up.headers["Location"])))
    assert back.status_code == 302 and back.headers["Location"].startswith("http://127.0.0.1:9/cb"), (
        back.text[:500]
    )
    claims = rp.claims(rp.redeem(back.headers["Location"], verifier)["id_token"])
    assert claims["acr"] == LEVEL_HIGH and sorted(claims["amr"]) == ["mfa", "pin", "pwd", "sc"]
    with transaction(ours.sessions()) as s:
        link = s.execute(select(EidLink)).scalar_one()
        assert link.connector == "oidc" and link.issuer == upstream.url and link.simulation is False


def test_an_unreachable_upstream_is_asked_once_a_minute_not_for_every_visitor(idp_factory: Any) -> None:
    """Every anonymous GET /login/eid would otherwise fetch the upstream's metadata again and,
    with an upstream that does not answer, hold a server thread for the whole timeout."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Broken(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=upstream.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
    try:
        ours = idp_factory(eid_connector="oidc")
        rt = ours.app.extensions["cityid"]
        rt.config = dataclasses.replace(
            rt.config,
            eid=EidConfig(oidc_issuer=f"http://127.0.0.1:{upstream.server_address[1]}", oidc_client_id="x"),
        )
        for _ in range(5):
            assert Browser(ours).get(f"{ours.url}/login/eid").status_code == 404  # not available now
        assert len(hits) == 1
    finally:
        upstream.shutdown()
