"""Security headers on every response, and the city's branding from config alone."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from idp.app import create_app
from idp.config import BrandingConfig
from tests.idp.conftest import Browser, Idp, csrf
from tests.pages.helpers import logged_in

REDIRECT = "http://127.0.0.1:9/cb"


def every_page(idp: Idp) -> dict[str, Any]:
    """One response of each kind a citizen meets: pages, errors, downloads, assets."""
    cid, _ = idp.add_client(name="Stadtbücherei", redirect_uris=[REDIRECT])
    idp.add_user("nora@example.org")
    anon = Browser(idp)
    out = {
        p: anon.get(idp.url + p)
        for p in (
            "/",
            "/login",
            "/register",
            "/forgot",
            "/reset?token=x",
            "/verify?token=x",
            "/nowhere",
            "/static/cityid.css",
            "/branding.css",
            "/.well-known/openid-configuration",
            "/authorize?client_id=unknown",
        )
    }
    out["csrf error"] = anon.post(idp.url + "/login", {"email": "x"})
    b, page = logged_in(idp, "nora@example.org")
    out["/account"] = b.get(idp.url + "/account")
    out["/account/delete"] = b.get(idp.url + "/account/delete")
    out["/account/email"] = b.get(idp.url + "/account/email")
    out["export"] = b.post(idp.url + "/account/export", {"csrf_token": csrf(page)})
    out["consent"] = b.get(
        f"{idp.url}/authorize?response_type=code&client_id={cid}&redirect_uri={REDIRECT}"
        "&scope=openid&code_challenge=" + "E" * 43 + "&code_challenge_method=S256"
    )
    out["logout confirm"] = b.get(idp.url + "/logout")
    return out


def test_every_response_carries_the_security_headers(idp: Idp) -> None:
    pages = every_page(idp)
    assert pages["consent"].status_code == 200 and "decision" in pages["consent"].text
    for name, r in pages.items():
        h = r.headers
        csp = h.get("Content-Security-Policy", "")
        directives = dict(([*d.split(" ", 1), ""])[:2] for d in (x.strip() for x in csp.split(";")) if d)
        assert directives.get("default-src") == "'none'", name
        assert directives.get("script-src") == "'self'", name  # no inline script, no eval
        assert directives.get("style-src") == "'self'", name
        assert directives.get("frame-ancestors") == "'none'", name
        assert directives.get("base-uri") == "'none'", name
        assert "unsafe" not in csp, name
        assert h.get("X-Frame-Options") == "DENY", name
        assert h.get("Referrer-Policy") == "no-referrer", name
        assert "camera=()" in h.get("Permissions-Policy", ""), name
        assert "geolocation=()" in h.get("Permissions-Policy", ""), name
        assert h.get("X-Content-Type-Options") == "nosniff", name
        assert "Strict-Transport-Security" not in h, name  # plain http on loopback: no HSTS
        if r.headers.get("Content-Type", "").startswith("text/html"):
            assert h.get("Cache-Control") == "no-store", name
            # what the CSP forbids is not in the page either
            assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), name
            assert not re.search(r"<style\b|\sstyle=", r.text), name
            assert not re.search(r"\son[a-z]+=", r.text), name


def test_https_issuer_adds_hsts_on_every_page(idp: Idp) -> None:
    cfg = dataclasses.replace(idp.config, issuer="https://id.musterstadt.example")
    app = create_app(cfg)
    try:
        client = app.test_client()
        for path in ("/", "/login", "/register", "/nowhere", "/.well-known/openid-configuration"):
            r = client.get(path, base_url="https://id.musterstadt.example")
            assert r.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains", path
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        # and the session cookie is a __Host- cookie, Secure
        cookie = (
            app.test_client()
            .get("/login", base_url="https://id.musterstadt.example")
            .headers.get("Set-Cookie", "")
        )
        assert cookie.startswith("__Host-cityid=") and "Secure" in cookie and "HttpOnly" in cookie
    finally:
        app.extensions["cityid"].engine.dispose()


# ----------------------------------------------------------------------------- branding


def test_city_branding_comes_from_config(idp_factory: Any) -> None:
    brand = BrandingConfig(
        city_name="Neustadt an der Weinstraße",
        logo_url="https://www.neustadt.example/logo.svg",
        primary_colour="#8a1538",
        imprint_url="https://www.neustadt.example/impressum",
        privacy_url="https://www.neustadt.example/datenschutz",
    )
    idp = idp_factory(branding=brand)
    b = Browser(idp)
    for path in ("/", "/login", "/register", "/nowhere"):
        html = b.get(idp.url + path).text
        assert "Neustadt an der Weinstraße" in html, path
        assert "Bürgerkonto Neustadt an der Weinstraße</title>" in html, path
        assert '<img src="https://www.neustadt.example/logo.svg" alt="" class="logo">' in html, path
        assert '<a href="https://www.neustadt.example/impressum">Impressum</a>' in html, path
        assert '<a href="https://www.neustadt.example/datenschutz">Datenschutz</a>' in html, path
        assert "Musterstadt" not in html, path
    css = b.get(idp.url + "/branding.css")
    assert css.headers["Content-Type"].startswith("text/css")
    assert "--primary: #8a1538;" in css.text


@pytest.mark.parametrize("colour", ["red; } body { display:none", "#12345g", "url(x)", ""])
def test_branding_colour_that_is_not_a_hex_colour_falls_back(idp_factory: Any, colour: str) -> None:
    idp = idp_factory(branding=BrandingConfig(primary_colour=colour))
    css = Browser(idp).get(idp.url + "/branding.css").text
    assert css == ":root { --primary: #004b87; }\n"


def test_no_imprint_or_privacy_links_when_not_configured(idp: Idp) -> None:
    html = Browser(idp).get(idp.url + "/login").text
    assert "Impressum" not in html and "Musterstadt" in html
