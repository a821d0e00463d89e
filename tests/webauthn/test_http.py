"""The WebAuthn JSON endpoints over HTTP (a real cityid on ``localhost``): every refusal is a
JSON error, leaves an audit record and changes no state; the challenge it named is used up."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from sqlalchemy import select

from db import transaction
from db.audit import AuditEvent
from idp.models import LoginSession
from idp.webauthn_models import WebAuthnChallenge, WebAuthnCredential
from tests.idp.conftest import Browser, Idp
from tests.stepup.conftest import PASSWORD
from tests.webauthn.soft_authenticator import SoftAuthenticator

CSRF_RE = re.compile(r'data-csrf="([^"]+)"')


class Citizen:
    """A logged-in citizen's browser calling the JSON endpoints as webauthn.js does."""

    def __init__(self, idp: Idp, email: str) -> None:
        self.idp = idp
        self.account_id = idp.add_user(email)
        self.browser = Browser(idp)
        self.browser.login(email, PASSWORD, self.browser.get(f"{idp.url}/login"))
        self.refresh_csrf()

    def refresh_csrf(self) -> None:
        page = self.browser.get(f"{self.idp.url}/account/security-keys")
        m = CSRF_RE.search(page.text)
        assert m, page.text[:300]
        self.csrf = m.group(1)

    def call(self, path: str, body: Any, csrf: str | None = None) -> requests.Response:
        return self.browser.http.post(
            f"{self.idp.url}{path}",
            json=body,
            headers={"X-CSRF-Token": self.csrf if csrf is None else csrf},
            allow_redirects=False,
            timeout=10,
        )

    def register(self, key: SoftAuthenticator) -> dict[str, Any]:
        options = self.call("/account/security-keys/register/begin", {}).json()
        resp = self.call(
            "/account/security-keys/register/finish",
            {"name": "Key", "credential": key.create(options, origin=self.idp.url)},
        )
        assert resp.status_code == 200, resp.text
        result: dict[str, Any] = resp.json()
        return result

    def begin(self) -> dict[str, Any]:
        resp = self.call("/login/webauthn/begin", {})
        assert resp.status_code == 200, resp.text
        options: dict[str, Any] = resp.json()
        return options

    def finish(self, credential: Any) -> requests.Response:
        return self.call("/login/webauthn/finish", {"credential": credential})


@pytest.fixture
def idp(idp_factory: Any) -> Idp:
    served: Idp = idp_factory(host="localhost")
    return served


def _audit(idp: Idp, action: str) -> list[AuditEvent]:
    with transaction(idp.sessions()) as s:
        rows = list(
            s.execute(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
            ).scalars()
        )
        s.expunge_all()
        return rows


def _state(idp: Idp, account_id: str) -> dict[str, Any]:
    with transaction(idp.sessions()) as s:
        creds = s.execute(select(WebAuthnCredential).where(WebAuthnCredential.account_id == account_id))
        sessions = s.execute(select(LoginSession).where(LoginSession.account_id == account_id))
        return {
            "sign_counts": sorted((c.id, c.sign_count) for c in creds.scalars()),
            "factors": sorted(sorted(json.loads(x.factors)) for x in sessions.scalars()),
            "challenges": s.execute(select(WebAuthnChallenge.challenge_digest)).scalars().all(),
        }


def test_register_then_step_records_the_factor_at_the_keys_level(idp):
    erika = Citizen(idp, "erika@example.org")
    key = SoftAuthenticator()  # no attestation: a passkey at low
    assert erika.register(key)["level"] == "low"
    resp = erika.finish(key.get(erika.begin(), origin=idp.url))
    assert resp.status_code == 200 and resp.json() == {"redirect": "/account"}
    assert [e.outcome for e in _audit(idp, "webauthn.register")] == ["success"]
    assert [e.outcome for e in _audit(idp, "webauthn.authenticate")] == ["success"]
    assert any("level 1" in e.reason for e in _audit(idp, "login.webauthn"))  # hwk at low
    assert _state(idp, erika.account_id)["factors"] == [["hwk", "pwd"]]


def _replay(idp: Idp, erika: Citizen, key: SoftAuthenticator, max_: Citizen) -> Any:
    used = key.get(erika.begin(), origin=idp.url)
    assert erika.finish(used).status_code == 200
    erika.refresh_csrf()  # the step rotated the session
    return used


CASES = {
    # name: (make the response, status, error)
    "fail/replayed-challenge": (_replay, 400, "invalid_challenge"),
    "fail/wrong-origin": (
        lambda idp, erika, key, max_: key.get(erika.begin(), origin="http://evil.localhost:1"),
        400,
        "invalid_origin",
    ),
    "fail/wrong-rp-id": (
        lambda idp, erika, key, max_: key.get(erika.begin(), origin=idp.url, rp_id="evil.example"),
        400,
        "invalid_rp_id",
    ),
    "fail/sign-count-regression": (
        lambda idp, erika, key, max_: (
            _replay(idp, erika, key, max_),
            key.get(erika.begin(), origin=idp.url, counter=key.counter),
        )[1],
        403,
        "cloned_authenticator",
    ),
    "fail/unknown-credential": (
        lambda idp, erika, key, max_: SoftAuthenticator().get(erika.begin(), origin=idp.url),
        400,
        "unknown_credential",
    ),
    "fail/credential-of-another-account": (
        lambda idp, erika, key, max_: max_.key.get(erika.begin(), origin=idp.url),
        403,
        "credential_not_allowed",
    ),
    "fail/garbage": (lambda idp, erika, key, max_: {"rawId": 5}, 400, "invalid_request"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusal_is_json_audited_and_changes_nothing(idp, case):
    make, status, error = CASES[case]
    erika = Citizen(idp, "erika@example.org")
    key = SoftAuthenticator()
    erika.register(key)
    max_ = Citizen(idp, "max@example.org")
    max_.key = SoftAuthenticator()  # type: ignore[attr-defined]
    max_.register(max_.key)  # type: ignore[attr-defined]

    response = make(idp, erika, key, max_)
    before = _state(idp, erika.account_id)
    denied_before = len([e for e in _audit(idp, "webauthn.authenticate") if e.outcome == "denied"])
    resp = erika.finish(response)

    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == error and resp.json()["error_description"]
    denied = [e for e in _audit(idp, "webauthn.authenticate") if e.outcome == "denied"]
    assert len(denied) == denied_before + 1 and denied[-1].reason.startswith(error)
    assert denied[-1].actor == erika.account_id
    after = _state(idp, erika.account_id)
    assert after["sign_counts"] == before["sign_counts"] and after["factors"] == before["factors"]
    assert len(after["challenges"]) <= len(before["challenges"])  # the named challenge is used up
    if case != "fail/garbage":
        assert erika.finish(response).json()["error"] in ("invalid_challenge", error)


def test_challenge_is_used_up_by_a_refused_attempt(idp):
    erika = Citizen(idp, "erika@example.org")
    key = SoftAuthenticator()
    erika.register(key)
    options = erika.begin()
    bad = erika.finish(key.get(options, origin=idp.url, rp_id="evil.example"))
    assert bad.json()["error"] == "invalid_rp_id"
    good_late = erika.finish(key.get(options, origin=idp.url))  # same challenge, now well-formed
    assert good_late.status_code == 400 and good_late.json()["error"] == "invalid_challenge"


def test_json_endpoints_need_the_csrf_header(idp):
    erika = Citizen(idp, "erika@example.org")
    for path in ("/account/security-keys/register/begin", "/login/webauthn/begin"):
        resp = erika.call(path, {}, csrf="forged")
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"
    assert len(_audit(idp, "csrf.reject")) == 2
    assert _state(idp, erika.account_id)["challenges"] == []


def test_json_endpoints_need_a_login(idp):
    resp = requests.post(
        f"{idp.url}/login/webauthn/begin", json={}, headers={"X-CSRF-Token": "x"}, timeout=10
    )
    assert resp.status_code == 401 and resp.json()["error"] == "login_required"


def test_second_key_needs_the_first_when_it_reaches_substantial(idp_factory, tmp_path, test_root):
    """A password alone must not add a key next to one that reaches substantial."""
    import dataclasses

    from idp.config import WebAuthnConfig
    from tests.webauthn.conftest import TRUSTED_AAGUID
    from tests.webauthn.mds import write_test_mds3

    blob, root = write_test_mds3(tmp_path, TRUSTED_AAGUID, test_root.certificate)  # TEST-only trust
    served: Idp = idp_factory(
        host="localhost", webauthn=WebAuthnConfig(mds3_blob_file=str(blob), mds3_root_file=str(root))
    )
    erika = Citizen(served, "erika@example.org")
    first = SoftAuthenticator(aaguid=TRUSTED_AAGUID, root=test_root)
    assert erika.register(first)["level"] == "substantial"
    refused = erika.call("/account/security-keys/register/begin", {})
    assert refused.status_code == 403 and refused.json()["error"] == "step_up_required"
    assert erika.finish(first.get(erika.begin(), origin=served.url)).status_code == 200
    erika.refresh_csrf()
    assert erika.register(dataclasses.replace(SoftAuthenticator(), counter=0))["level"] == "low"


def test_a_password_alone_cannot_swap_the_key_that_reaches_substantial_eidas_annex_2_2_4(
    idp_factory, tmp_path, test_root
):
    """Someone with only the password removes the owner's key, then registers his own: refused,
    and the owner is told by e-mail of every key added or removed."""
    from idp.config import WebAuthnConfig
    from tests.webauthn.conftest import TRUSTED_AAGUID
    from tests.webauthn.mds import write_test_mds3

    blob, root = write_test_mds3(tmp_path, TRUSTED_AAGUID, test_root.certificate)  # TEST-only trust
    served: Idp = idp_factory(
        host="localhost", webauthn=WebAuthnConfig(mds3_blob_file=str(blob), mds3_root_file=str(root))
    )
    erika = Citizen(served, "erika@example.org")
    assert erika.register(SoftAuthenticator(aaguid=TRUSTED_AAGUID, root=test_root))["level"] == "substantial"
    with served.sessions()() as s:
        key_id = s.execute(select(WebAuthnCredential.id)).scalar_one()

    thief = Browser(served)  # knows the password, nothing more
    thief.login("erika@example.org", PASSWORD, thief.get(f"{served.url}/login"))
    page = thief.get(f"{served.url}/account/security-keys")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    r = thief.post(f"{served.url}/account/security-keys/{key_id}/remove", {"csrf_token": token.group(1)})
    assert r.status_code == 403
    assert _state(served, erika.account_id)["sign_counts"] != []  # the owner's key is still there
    assert [e.reason for e in _audit(served, "webauthn.remove")][-1].startswith("account has a means")
    import email
    import time
    from email import policy

    def mails() -> list[str]:
        return [
            email.message_from_bytes(m.read_bytes(), policy=policy.default).get_body().get_content()  # type: ignore[union-attr]
            for m in served.config.outbox_dir.glob("*.eml")
        ]

    deadline = time.monotonic() + 10  # the mail thread writes it right after the commit
    while not any("Key" in m and "/account" in m for m in mails()):  # "a security key was added: Key"
        assert time.monotonic() < deadline, mails()
        time.sleep(0.05)


def test_security_keys_page_renames_and_removes_with_csrf_and_audit(idp):
    erika = Citizen(idp, "erika@example.org")
    max_ = Citizen(idp, "max@example.org")
    key_id = erika.register(SoftAuthenticator())["id"]
    page = erika.browser.get(f"{idp.url}/account/security-keys")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    base = f"{idp.url}/account/security-keys/{key_id}"
    assert erika.browser.post(f"{base}/rename", {"name": "Blue key"}).status_code == 400  # no CSRF
    max_page = max_.browser.get(f"{idp.url}/account/security-keys")
    max_token = re.search(r'data-csrf="([^"]+)"', max_page.text)
    assert max_token
    theft = max_.browser.post(f"{base}/remove", {"csrf_token": max_token.group(1)})
    assert theft.status_code == 404
    ok = erika.browser.post(f"{base}/rename", {"csrf_token": token.group(1), "name": "Blue key"})
    assert ok.status_code == 302
    assert "Blue key" in erika.browser.get(f"{idp.url}/account/security-keys").text
    gone = erika.browser.post(f"{base}/remove", {"csrf_token": token.group(1)})
    assert gone.status_code == 302
    assert _state(idp, erika.account_id)["sign_counts"] == []
    assert [e.outcome for e in _audit(idp, "webauthn.rename")] == ["success"]
    assert [e.outcome for e in _audit(idp, "webauthn.remove")] == ["denied", "success"]


@pytest.mark.parametrize(
    ("lang", "not_logged_in", "expired"),
    [
        ("ar", "يرجى تسجيل الدخول أولًا.", "انتهت صلاحية الطلب. يرجى المحاولة مرة أخرى."),
        ("tr", "Lütfen önce giriş yapın.", "İsteğin süresi doldu. Lütfen tekrar deneyin."),
    ],
)
def test_refusals_shown_to_the_citizen_are_in_the_language_of_the_page(
    idp: Idp, lang: str, not_logged_in: str, expired: str
) -> None:
    # webauthn.js shows error_description on the page: it is a citizen-facing text
    # (docs/languages.md), translated like the page around it.
    anonymous = Browser(idp)
    anonymous.http.cookies.set("lang", lang)
    resp = anonymous.http.post(f"{idp.url}/account/security-keys/register/begin", json={}, timeout=10)
    assert resp.status_code == 401 and resp.json()["error_description"] == not_logged_in
    erika = Citizen(idp, "erika@example.org")
    erika.browser.http.cookies.set("lang", lang)
    key = SoftAuthenticator()
    erika.register(key)
    response = key.get(erika.begin(), origin=idp.url)
    assert erika.finish(response).status_code == 200
    erika.refresh_csrf()  # the login gave the browser a new session
    again = erika.finish(response)  # its challenge is used up (a text of idp/webauthn.py)
    assert again.json() == {"error": "invalid_challenge", "error_description": expired}
