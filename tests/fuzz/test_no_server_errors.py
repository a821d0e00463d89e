"""Fuzz campaign (issue 18): every HTTP endpoint under generated hostile requests.

For each request: no 5xx, a JSON error is ``{"error", "error_description"}``, a refused
request changes no state (see ``conftest.Target.check``). In ``make test`` each test sends a
fixed, derandomized set of examples (the whole campaign well under a minute); ``make fuzz``
runs the long profile for 20 minutes and prints the requests sent per endpoint.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import REDIRECT, Target, fuzz_settings, run_budgeted, sign_token, table_digests
from tests.fuzz.strategies import Endpoint, Known, hostile_request, send

AUTHZ = (
    "client_id response_type redirect_uri scope state nonce code_challenge code_challenge_method "
    "prompt max_age acr_values ui_locales claims request request_uri login_hint id_token_hint "
    "response_mode dpop_jkt"
).split()
TOKEN = (
    "grant_type code redirect_uri code_verifier refresh_token client_id client_secret "
    "client_assertion client_assertion_type scope resource token token_type_hint"
).split()

CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 Appendix B
AUTHZ_OK = (
    ("client_id", "fuzz-public"),
    ("response_type", "code"),
    ("redirect_uri", REDIRECT),
    ("scope", "openid profile"),
    ("state", "s1"),
    ("nonce", "n1"),
    ("code_challenge", CHALLENGE),
    ("code_challenge_method", "S256"),
)
PAR_OK = tuple((k, "fuzz-conf" if k == "client_id" else v) for k, v in AUTHZ_OK)
TOKEN_OK = (
    ("grant_type", "authorization_code"),
    ("code", "x" * 43),
    ("redirect_uri", REDIRECT),
    ("code_verifier", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
)
CC_OK = (("grant_type", "client_credentials"), ("scope", "openid profile"))
REFRESH_OK = (("grant_type", "refresh_token"), ("refresh_token", "x" * 43))
TOKEN_HINT = (("token", "$AT"), ("token_type_hint", "access_token"))
LOGOUT_OK = (
    ("client_id", "fuzz-public"),
    ("post_logout_redirect_uri", "https://rp.example/bye"),
    ("state", "s1"),
)

OAUTH = [
    Endpoint("GET|POST /authorize", "/authorize", ("GET", "POST"), tuple(AUTHZ), base=AUTHZ_OK),
    Endpoint("POST /par", "/par", ("POST",), tuple(AUTHZ + TOKEN), base=PAR_OK),
    Endpoint("POST /token", "/token", ("POST",), tuple(TOKEN), json_api=True, base=TOKEN_OK),
    Endpoint(
        "POST /token (client credentials)", "/token", ("POST",), tuple(TOKEN), json_api=True, base=CC_OK
    ),
    Endpoint("POST /token (refresh)", "/token", ("POST",), tuple(TOKEN), json_api=True, base=REFRESH_OK),
    Endpoint("POST /introspect", "/introspect", ("POST",), tuple(TOKEN), json_api=True, base=TOKEN_HINT),
    Endpoint("POST /revoke", "/revoke", ("POST",), tuple(TOKEN), json_api=True, base=TOKEN_HINT),
    Endpoint("GET|POST /userinfo", "/userinfo", ("GET", "POST"), ("access_token",), json_api=True),
    Endpoint(
        "GET|POST /logout",
        "/logout",
        ("GET", "POST"),
        (
            "id_token_hint",
            "post_logout_redirect_uri",
            "state",
            "client_id",
            "logout_hint",
            "ui_locales",
            "csrf_token",
            "decision",
        ),
        base=LOGOUT_OK,
    ),
    Endpoint("GET /.well-known/openid-configuration", "/.well-known/openid-configuration", ("GET",)),
    Endpoint("GET /jwks.json", "/jwks.json", ("GET",)),
    Endpoint("GET /openapi.json", "/openapi.json", ("GET",)),
    Endpoint(
        "GET|POST /api/demo/resource", "/api/demo/resource", ("GET", "POST"), ("access_token",), json_api=True
    ),
]

DEVICE_API = [
    Endpoint(
        "POST /api/smartcard/challenge",
        "/api/smartcard/challenge",
        ("POST",),
        ("purpose",),
        json_api=True,
        base=(("purpose", "enroll"),),
    ),
    Endpoint(
        "POST /api/smartcard/enroll",
        "/api/smartcard/enroll",
        ("POST",),
        (
            "challenge",
            "csr",
            "attestation",
            "name",
            "format",
            "certificate_chain",
            "attestation_object",
            "key_id",
        ),
        json_api=True,
    ),
    Endpoint("GET /api/smartcard/pending", "/api/smartcard/pending", ("GET",), json_api=True),
    Endpoint(
        "POST /api/smartcard/approve",
        "/api/smartcard/approve",
        ("POST",),
        ("approval",),
        json_api=True,
        base=(("approval", "a.b.c"),),
    ),
    Endpoint(
        "POST /api/smartcard/renew",
        "/api/smartcard/renew",
        ("POST",),
        ("renewal",),
        json_api=True,
        base=(("renewal", "a.b.c"),),
    ),
]

WEBAUTHN_FIELDS = (
    "id rawId type response clientDataJSON attestationObject authenticatorData signature userHandle "
    "credential name transports clientExtensionResults authenticatorAttachment"
).split()
WEBAUTHN = [
    Endpoint(f"POST {p}", p, ("POST",), tuple(WEBAUTHN_FIELDS), json_api=True)
    for p in (
        "/account/security-keys/register/begin",
        "/account/security-keys/register/finish",
        "/login/webauthn/begin",
        "/login/webauthn/finish",
    )
]

PKI = [
    Endpoint("GET /pki/ocsp/<request>", "/pki/ocsp/{x}", ("GET",)),
    Endpoint("GET /pki/crl/<shard>.crl", "/pki/crl/{x}.crl", ("GET",)),
    Endpoint("GET /pki/crl/full.crl", "/pki/crl/full.crl", ("GET",)),
    Endpoint("GET /pki/crl/root.crl", "/pki/crl/root.crl", ("GET",)),
    Endpoint("GET /pki/chain.pem", "/pki/chain.pem", ("GET",)),
    Endpoint("GET /pki/root.crt", "/pki/root.crt", ("GET",)),
    Endpoint("GET /pki/issuing.crt", "/pki/issuing.crt", ("GET",)),
]

FORM = ("csrf_token", "email", "password", "token", "next", "confirm", "current_password", "new_password")
PAGES = [
    Endpoint("GET /", "/", ("GET",)),
    Endpoint(
        "GET|POST /login",
        "/login",
        ("GET", "POST"),
        (*FORM, "client_id"),
        base=(("email", "fuzz.citizen@example.org"), ("password", "wrong"), ("client_id", "fuzz-public")),
    ),
    Endpoint("GET|POST /register", "/register", ("GET", "POST"), (*FORM, "password2", "accept")),
    Endpoint("GET|POST /forgot", "/forgot", ("GET", "POST"), FORM),
    Endpoint("GET|POST /reset", "/reset", ("GET", "POST"), FORM),
    Endpoint("GET|POST /verify", "/verify", ("GET", "POST"), FORM),
    Endpoint("GET /lang/<lang>", "/lang/{x}", ("GET",), ("next",)),
    Endpoint("GET /branding.css", "/branding.css", ("GET",)),
    Endpoint("GET|POST /login/device", "/login/device", ("GET", "POST"), ("id", "csrf_token", "client_id")),
    Endpoint("GET /login/device/status", "/login/device/status", ("GET",), ("id",)),
    Endpoint("GET|POST /login/eid", "/login/eid", ("GET", "POST"), ("csrf_token", "level", "client_id")),
    Endpoint(
        "GET|POST /login/eid/callback",
        "/login/eid/callback",
        ("GET", "POST"),
        ("SAMLResponse", "RelayState", "code", "state", "handover"),
    ),
    Endpoint("GET /login/eid/complete", "/login/eid/complete", ("GET",), ("handover", "state")),
    Endpoint("GET /login/eid/simulator", "/login/eid/simulator", ("GET",), ("handover", "state")),
    Endpoint("GET /login/webauthn", "/login/webauthn", ("GET",), ("client_id",)),
    Endpoint("GET /static/<file>", "/static/{x}", ("GET",)),
    Endpoint("ANY /<unknown path>", "/{x}", ("GET", "POST")),
    Endpoint("ANY /api/<unknown path>", "/api/{x}", ("GET", "POST")),
]

CITIZEN = [
    Endpoint("GET /account", "/account", ("GET",)),
    Endpoint(
        "POST /account/consents/withdraw",
        "/account/consents/withdraw",
        ("POST",),
        ("csrf_token", "client_id"),
    ),
    Endpoint(
        "GET|POST /account/delete", "/account/delete", ("GET", "POST"), ("csrf_token", "password", "confirm")
    ),
    Endpoint("GET /account/devices", "/account/devices", ("GET",)),
    Endpoint(
        "POST /account/devices/<id>/remove",
        "/account/devices/{x}/remove",
        ("POST",),
        ("csrf_token", "password"),
    ),
    Endpoint(
        "POST /account/devices/<id>/rename", "/account/devices/{x}/rename", ("POST",), ("csrf_token", "name")
    ),
    Endpoint(
        "GET|POST /account/email", "/account/email", ("GET", "POST"), ("csrf_token", "email", "password")
    ),
    Endpoint(
        "GET|POST /account/email/confirm",
        "/account/email/confirm",
        ("GET", "POST"),
        ("csrf_token", "token", "password"),
    ),
    Endpoint("POST /account/export", "/account/export", ("POST",), ("csrf_token", "password")),
    Endpoint("POST /account/logout", "/account/logout", ("POST",), ("csrf_token",)),
    Endpoint(
        "GET|POST /account/password",
        "/account/password",
        ("GET", "POST"),
        ("csrf_token", "current_password", "password", "new_password", "confirm"),
    ),
    Endpoint("GET /account/security-keys", "/account/security-keys", ("GET",)),
    Endpoint(
        "POST /account/security-keys/<id>/remove",
        "/account/security-keys/{x}/remove",
        ("POST",),
        ("csrf_token",),
    ),
    Endpoint(
        "POST /account/security-keys/<id>/rename",
        "/account/security-keys/{x}/rename",
        ("POST",),
        ("csrf_token", "name"),
    ),
]


PDF = "%PDF-1.7\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
SIGNING = [
    Endpoint(
        "POST /api/signatures",
        "/api/signatures",
        ("POST",),
        ("level", "reason", "document", "title"),
        json_api=True,
        base=(("level", "B-LT"), ("reason", "Antrag"), ("document", PDF)),
    ),
    Endpoint("GET /api/signatures/<id>", "/api/signatures/{x}", ("GET",), json_api=True),
    Endpoint("GET /api/signatures/pending", "/api/signatures/pending", ("GET",), json_api=True),
    Endpoint(
        "POST /api/signatures/approve",
        "/api/signatures/approve",
        ("POST",),
        ("approval",),
        json_api=True,
        base=(("approval", "a.b.c"),),
    ),
    Endpoint(
        "POST /api/signatures/validate",
        "/api/signatures/validate",
        ("POST",),
        ("document",),
        json_api=True,
        base=(("document", PDF),),
    ),
    Endpoint("GET|POST /signatures/check", "/signatures/check", ("GET", "POST"), ("csrf_token", "document")),
]

PRE_AUTH = "urn:ietf:params:oauth:grant-type:pre-authorized_code"
VCI = [
    Endpoint(
        "GET /.well-known/oauth-authorization-server", "/.well-known/oauth-authorization-server", ("GET",)
    ),
    Endpoint(
        "GET /.well-known/oauth-authorization-server/vci",
        "/.well-known/oauth-authorization-server/vci",
        ("GET",),
    ),
    Endpoint("GET /.well-known/openid-credential-issuer", "/.well-known/openid-credential-issuer", ("GET",)),
    Endpoint(
        "POST /vci/token",
        "/vci/token",
        ("POST",),
        ("grant_type", "pre-authorized_code", "tx_code"),
        json_api=True,
        base=(("grant_type", PRE_AUTH), ("pre-authorized_code", "x" * 43), ("tx_code", "123456")),
    ),
    Endpoint("POST /vci/nonce", "/vci/nonce", ("POST",), json_api=True),
    Endpoint(
        "POST /vci/credential",
        "/vci/credential",
        ("POST",),
        ("credential_configuration_id", "proofs", "proof", "jwt", "proof_type"),
        json_api=True,
        base=(("credential_configuration_id", "library_card"), ("proofs", "a.b.c")),
    ),
    Endpoint("GET /vci/status/1", "/vci/status/1", ("GET",)),
]

WALLET_FLOW = "same"  # idp.views.wallet.FLOWS: same-device or cross-device
WALLET_AND_PUBLIC = [
    Endpoint("GET /login/eid/wallet", "/login/eid/wallet", ("GET",), ("state", "flow")),
    Endpoint("GET /login/eid/wallet/status", "/login/eid/wallet/status", ("GET",), ("state",)),
    Endpoint("GET /login/eid/wallet/request", "/login/eid/wallet/request", ("GET",), ("state", "flow")),
    Endpoint("GET /eid/saml/metadata", "/eid/saml/metadata", ("GET",)),
    Endpoint("GET /favicon.ico", "/favicon.ico", ("GET",)),
    Endpoint(
        "GET|POST /barrierefreiheit",
        "/barrierefreiheit",
        ("GET", "POST"),
        ("csrf_token", "page", "message", "email", "name"),
    ),
    Endpoint("GET /leichte-sprache", "/leichte-sprache", ("GET",)),
    Endpoint("GET /gebaerdensprache", "/gebaerdensprache", ("GET",)),
    Endpoint("GET /<page>/video", "/{x}/video", ("GET",)),
    Endpoint("GET /leichte-sprache/video", "/leichte-sprache/video", ("GET",)),
    Endpoint("GET /gebaerdensprache/video", "/gebaerdensprache/video", ("GET",)),
    Endpoint(
        "POST /login/eid/wallet/confirm",
        "/login/eid/wallet/confirm",
        ("POST",),
        ("csrf_token", "state", "decision"),
    ),
    # insights: the staff dashboard (a step-up or 403 for others), its export, the metrics
    Endpoint("GET /insights", "/insights", ("GET",), ("since", "until", "service")),
    Endpoint("GET /insights/export.<fmt>", "/insights/export.{x}", ("GET",), ("since", "until", "service")),
    Endpoint("GET /insights/export.csv", "/insights/export.csv", ("GET",), ("since", "until", "service")),
    Endpoint("GET /metrics", "/metrics", ("GET",)),
]
WALLET_CARD = Endpoint(
    "GET|POST /account/wallet-card", "/account/wallet-card", ("GET", "POST"), ("csrf_token",)
)


def known(t: Target, *, csrf: str = "") -> Known:
    basic = base64.b64encode(f"{t.conf_client}:{t.conf_secret}".encode()).decode()
    cc_basic = base64.b64encode(f"{t.cc_client}:{t.cc_secret}".encode()).decode()
    return Known(
        values=[
            t.conf_client,
            t.public_client,
            t.cc_client,
            t.conf_secret,
            REDIRECT,
            t.access_token,
            csrf or "x",
            "fuzz.citizen@example.org",
        ],
        authorizations=[
            f"Basic {basic}",
            f"Basic {cc_basic}",
            f"Bearer {t.access_token}",
            f"DPoP {t.access_token}",
            f"Device {t.access_token}",
            f"Bearer {t.sign_token}",
        ],
        csrf=csrf,
        access_token=t.access_token,
    )


def with_token(k: Known, token: str) -> Known:
    """``k`` with ``token`` as the access token its requests carry most."""
    return Known(
        values=[*k.values, token],
        authorizations=[f"Bearer {token}", f"Bearer {token}", f"DPoP {token}", *k.authorizations],
        csrf=k.csrf,
        access_token=token,
    )


def campaign(
    t: Target,
    endpoints: list[Endpoint],
    examples: int,
    share: float,
    *,
    citizen: bool = False,
    token: str = "",
) -> None:
    """Send ``examples`` generated requests (per run) to ``endpoints`` and check each answer
    (``token``: the access token the requests carry most, the client-credentials one else)."""
    state = {"before": table_digests(t.engine)}
    k = known(t, csrf="$CSRF" if citizen else "")  # the live session's token, put in at send time
    if token:
        k = with_token(k, token)

    @fuzz_settings(examples)
    @given(req=hostile_request(endpoints, k), form_csrf=st.booleans())
    def run(req: Any, form_csrf: bool) -> None:
        if citizen:
            t.ensure_citizen()
            if form_csrf and req.method == "POST" and not req.body:
                # a form with the session's real CSRF token reaches the handler behind it
                req.body = f"csrf_token={t.csrf}".encode()
                req.headers = [h for h in req.headers if h[0] != "Content-Type"]
                req.headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            client = t.citizen
            req.headers = [(name, value.replace("$CSRF", t.csrf)) for name, value in req.headers]
            req.body = req.body.replace(b"%24CSRF", t.csrf.encode()).replace(b"$CSRF", t.csrf.encode())
        else:
            client = t.anonymous()
        state["before"] = table_digests(t.engine)
        resp = send(client, req)
        state["before"] = t.check(req.endpoint.label, resp, state["before"])

    run_budgeted(run, share)


def test_oauth_endpoints_never_answer_5xx_and_refuse_without_state_change(target: Target) -> None:
    """OIDC authorize (GET/POST), PAR, token, introspection, revocation, userinfo, logout,
    discovery, JWKS, the OpenAPI document and the demo resource."""
    campaign(target, OAUTH, 150, 0.14)


def test_device_api_never_answers_5xx_and_errors_are_error_objects(target: Target) -> None:
    campaign(target, DEVICE_API, 90, 0.08)


def test_webauthn_json_never_answers_5xx_anonymous_or_logged_in(target: Target) -> None:
    campaign(target, WEBAUTHN, 45, 0.04)
    campaign(target, WEBAUTHN, 45, 0.04, citizen=True)


def test_pki_endpoints_never_answer_5xx(target: Target) -> None:
    campaign(target, PKI, 60, 0.05)


def test_citizen_pages_with_session_and_csrf_never_answer_5xx(target: Target) -> None:
    # the authorization and logout endpoints with a logged-in session: consent and logout pages
    with_session = [e for e in OAUTH if e.path in ("/authorize", "/logout")]
    campaign(target, CITIZEN + PAGES[:6] + with_session, 120, 0.10, citizen=True)


def test_signing_api_and_validation_never_answer_5xx(target: Target) -> None:
    """The citizen-signature API (a service's token, the device's proofs) and the validation
    API and page (issue 18: signing/validation)."""
    target.sign_token = sign_token(target)  # a fresh one: it expires within a long run
    campaign(target, SIGNING, 40, 0.02, token=target.sign_token)


@st.composite
def pdf_bodies(draw: st.DrawFn, pdfs: list[bytes]) -> bytes:
    """A PDF (ours, with a title, one or more pages, encrypted), valid or spoilt."""
    valid = draw(st.sampled_from(pdfs))
    kind = draw(st.sampled_from(["valid", "valid", "flip", "truncate", "append", "random", "empty"]))
    if kind == "valid":
        return valid
    if kind == "flip":
        i = draw(st.integers(0, len(valid) - 1))
        return valid[:i] + bytes([valid[i] ^ draw(st.integers(1, 255))]) + valid[i + 1 :]
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "append":
        return valid + draw(st.binary(min_size=1, max_size=200))
    if kind == "empty":
        return b""
    return b"%PDF-1." + draw(st.binary(max_size=300))


def test_signing_api_with_pdf_bodies_never_answers_5xx(target: Target) -> None:
    """docs/signing.md: a service's valid token (scope sign, substantial) with valid and
    mutated PDFs, the levels and reasons spoilt; the validation API with the same bodies."""
    from tests.signing.citizen_helpers import make_pdf

    pdfs = [make_pdf(), make_pdf("Zwei Seiten \u202e", pages=2), make_pdf(password="geheim")]
    target.sign_token = sign_token(target)  # a fresh one: it expires within a long run
    state = {"before": table_digests(target.engine)}
    nasty = st.sampled_from(["B-B", "B-T", "B-LT", "B-LTA", "", "\x00", "\u202e" * 300, "ü"])

    @fuzz_settings(30)
    @given(
        pdf=pdf_bodies(pdfs),
        validate=st.integers(0, 3),
        level=st.none() | nasty,
        reason=st.none() | nasty | st.text(max_size=300),
        ctype=st.sampled_from(["application/pdf", "application/pdf", "application/octet-stream", ""]),
        auth=st.sampled_from(["sign", "sign", "sign", "cc", "none"]),
    )
    def run(pdf: bytes, validate: int, level: str | None, reason: str | None, ctype: str, auth: str) -> None:
        headers = {"Content-Type": ctype} if ctype else {}
        client = target.anonymous()
        if validate == 0:
            label = "POST /api/signatures/validate (PDF)"
            resp = client.post("/api/signatures/validate", data=pdf, headers=headers)
        else:
            label = "POST /api/signatures (PDF)"
            token = {"sign": target.sign_token, "cc": target.access_token, "none": ""}[auth]
            if token:
                headers["Authorization"] = f"Bearer {token}"
            query = {k: v for k, v in (("level", level), ("reason", reason)) if v is not None}
            resp = client.post("/api/signatures", data=pdf, headers=headers, query_string=query)
        state["before"] = target.check(label, resp, state["before"])

    run_budgeted(run, 0.02)


def test_vci_endpoints_never_answer_5xx_and_refuse_without_state_change(target: Target) -> None:
    """OpenID4VCI: metadata, the pre-authorized code token endpoint, nonce, credential, status
    list; the credential offer page with the citizen's session."""
    campaign(target, VCI, 40, 0.02)
    campaign(target, [WALLET_CARD], 10, 0.01, citizen=True)


def _vci_key(target: Target) -> bytes:
    from idp.views import vci

    with target.app.app_context():
        return vci._key()


def test_vci_token_and_credential_with_valid_offers_and_proofs_never_answer_5xx(target: Target) -> None:
    """OpenID4VCI 1.0 §6.1 and §8 past the first checks: a citizen with a library card, fresh
    offers (pre-authorized code and tx_code, right or spoilt), fresh access tokens and c_nonces,
    JWT key proofs (Appendix F.1) valid or spoilt, request bodies valid or spoilt."""
    import datetime as dt

    from db import transaction
    from idp.vci import store
    from tests.fuzz.conftest import ISSUER
    from walletsim.holder import Holder, Receiver

    rt = target.app.extensions["cityid"]
    key = _vci_key(target)
    with transaction(rt.sessions) as s:
        store.grant_card(
            s,
            rt.keys.personal_data,
            account_id=target.account_id,
            number="SB-0042-17",
            given_name="Erika",
            family_name="Mustermann",
            library="Stadtbibliothek Musterstadt",
            valid_until=dt.date.today() + dt.timedelta(days=365),
        )
    receiver = Receiver(Holder(verifier_roots=[], http_get=None, http_post=None))  # type: ignore[arg-type]
    nasty = st.sampled_from(["", "x" * 43, "\u202e", "\x00", "0" * 200, "a.b.c", "000000", "1e309"])
    state = {"before": table_digests(target.engine)}

    def fresh(make: Any) -> Any:
        with transaction(rt.sessions) as s:
            out = make(s)
        state["before"] = table_digests(target.engine)  # made here, not by the request
        return out

    @fuzz_settings(30)
    @given(
        kind=st.sampled_from(["token", "credential", "credential"]),
        code_ok=st.integers(0, 3),
        tx_ok=st.integers(0, 3),
        spoil=st.none() | nasty,
        proof_kind=st.sampled_from(["valid", "valid", "aud", "nonce", "flip", "none", "two"]),
        body_kind=st.sampled_from(["valid", "valid", "config", "flat", "list", "deep", "form"]),
        auth=st.sampled_from(["vci", "vci", "vci", "sign", "dpop", "none"]),
    )
    def run(
        kind: str, code_ok: int, tx_ok: int, spoil: str | None, proof_kind: str, body_kind: str, auth: str
    ) -> None:
        client = target.anonymous()
        if kind == "token":
            code, tx = fresh(lambda s: store.create_offer(s, key, target.account_id))
            form = {
                "grant_type": PRE_AUTH,
                "pre-authorized_code": code if code_ok else (spoil or code[:-1]),
                "tx_code": tx if tx_ok else (spoil if spoil is not None else f"{(int(tx) + 1) % 10**6:06d}"),
            }
            resp = client.post("/vci/token", data=form)
            # a wrong tx_code with the right code counts against the offer (the third spends it,
            # idp.vci.store.count_failure): an attempt recorded by design, like the login throttle
            counted = frozenset({"vci_offer"}) if code_ok and not tx_ok else frozenset()
            state["before"] = target.check("POST /vci/token (offer)", resp, state["before"], counted=counted)
            return
        access = fresh(lambda s: store.issue_access(s, key, target.account_id))
        nonce = client.post("/vci/nonce").get_json()["c_nonce"]
        proofs: list[Any] = [receiver.proof(ISSUER, nonce)]
        if proof_kind == "aud":
            proofs = [receiver.proof(ISSUER, nonce, aud="https://evil.example")]
        elif proof_kind == "nonce":
            proofs = [receiver.proof(ISSUER, spoil or "x" * 40)]
        elif proof_kind == "flip":
            p = proofs[0]
            proofs = [p[:20] + ("A" if p[20] != "A" else "B") + p[21:]]
        elif proof_kind == "none":
            proofs = []
        elif proof_kind == "two":
            proofs = proofs * 2
        body: Any = {"credential_configuration_id": "library_card", "proofs": {"jwt": proofs}}
        if body_kind == "config":
            body["credential_configuration_id"] = spoil
        elif body_kind == "flat":
            body["proofs"] = proofs[0] if proofs else spoil
        elif body_kind == "list":
            body = [body]
        elif body_kind == "deep":
            body["proofs"] = {"jwt": [[[{"jwt": proofs}]]]}
        token = {"vci": access, "sign": target.sign_token, "dpop": access, "none": ""}[auth]
        headers = {"Authorization": f"{'DPoP' if auth == 'dpop' else 'Bearer'} {token}"} if token else {}
        if body_kind == "form":
            resp = client.post("/vci/credential", data={"proofs": str(proofs)}, headers=headers)
        else:
            resp = client.post("/vci/credential", json=body, headers=headers)
        state["before"] = target.check("POST /vci/credential (proof)", resp, state["before"])

    run_budgeted(run, 0.02)


def test_wallet_login_and_public_pages_never_answer_5xx(target: Target) -> None:
    """The EUDI wallet login (OpenID4VP), the SAML SP metadata, the accessibility pages, the
    staff dashboard and the metrics."""
    campaign(target, WALLET_AND_PUBLIC, 60, 0.02)
    # the citizen's pending wallet request (OpenID4VP): its state, a flow, from its session and not
    wallet = [
        dataclasses.replace(e, base=(("state", target.wallet_state), ("flow", WALLET_FLOW)))
        for e in WALLET_AND_PUBLIC
        if e.path.startswith("/login/eid/wallet")
    ]
    campaign(target, wallet, 15, 0.005, citizen=True)
    campaign(target, wallet, 15, 0.005)
    # a citizen without the analyst role at the staff dashboard and its export
    campaign(
        target, [e for e in WALLET_AND_PUBLIC if e.path.startswith("/insights")], 10, 0.005, citizen=True
    )


def test_anonymous_pages_never_answer_5xx(target: Target) -> None:
    campaign(target, PAGES, 120, 0.08)


# ----------------------------------------------------------------------------- OCSP POST


def _ocsp_request(issuing_der: bytes, serial: int, nonce: bytes | None) -> bytes:
    issuer = x509.load_der_x509_certificate(issuing_der)
    # a CertID names the issuer by hashes only (RFC 6960 §4.1.1): any certificate object with
    # the requested serial and issuer name will do for the builder
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        issuer_name_hash=_sha1(issuer.subject.public_bytes()),
        issuer_key_hash=_key_hash(issuer),
        serial_number=serial,
        algorithm=hashes.SHA1(),
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    from cryptography.hazmat.primitives.serialization import Encoding

    return builder.build().public_bytes(Encoding.DER)


def _sha1(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA1())
    h.update(data)
    return h.finalize()


def _key_hash(cert: x509.Certificate) -> bytes:
    spki = x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    del spki
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    # issuerKeyHash is over the BIT STRING's value (RFC 6960 §4.1.1): the key after the header
    bit_string = _spki_bit_string(der)
    return _sha1(bit_string)


def _spki_bit_string(spki_der: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    key = load_der_public_key(spki_der)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


@st.composite
def ocsp_bodies(draw: st.DrawFn, issuing_der: bytes) -> bytes:
    serial = draw(st.one_of(st.integers(1, 2**159), st.just(1)))
    valid = _ocsp_request(issuing_der, serial, draw(st.one_of(st.none(), st.binary(min_size=1, max_size=64))))
    kind = draw(st.sampled_from(["valid", "flip", "truncate", "append", "random"]))
    if kind == "valid":
        return valid
    if kind == "flip":
        i = draw(st.integers(0, len(valid) - 1))
        return valid[:i] + bytes([valid[i] ^ draw(st.integers(1, 255))]) + valid[i + 1 :]
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "append":
        return valid + draw(st.binary(min_size=1, max_size=64))
    return draw(st.binary(max_size=300))


def test_ocsp_get_and_post_never_answer_5xx(target: Target) -> None:
    """RFC 6960 Appendix A.1: GET with the base64 request in the path, POST with the DER body."""
    state = {"before": table_digests(target.engine)}

    @fuzz_settings(80)
    @given(
        der=ocsp_bodies(target.issuing_der),
        post=st.booleans(),
        ctype=st.sampled_from(["application/ocsp-request", "application/json", "text/plain", ""]),
        b64=st.sampled_from(["std", "url", "nopad", "quoted"]),
    )
    def run(der: bytes, post: bool, ctype: str, b64: str) -> None:
        client = target.anonymous()
        if post:
            label = "POST /pki/ocsp"
            resp = client.post("/pki/ocsp", data=der, headers={"Content-Type": ctype} if ctype else {})
        else:
            label = "GET /pki/ocsp/<request>"
            enc = base64.b64encode(der).decode()
            if b64 == "url":
                enc = base64.urlsafe_b64encode(der).decode()
            elif b64 == "nopad":
                enc = enc.rstrip("=")
            elif b64 == "quoted":
                from urllib.parse import quote

                enc = quote(enc, safe="")
            resp = client.get(f"/pki/ocsp/{enc}")
        state["before"] = target.check(label, resp, state["before"])

    run_budgeted(run, 0.05)


@st.composite
def tsa_bodies(draw: st.DrawFn) -> bytes:
    """A TimeStampReq (RFC 3161 §2.4.1), valid or spoilt: flipped, cut, extended or random."""
    from asn1crypto import tsp

    algo, size = draw(st.sampled_from([("sha256", 32), ("sha384", 48), ("sha512", 64), ("sha1", 20)]))
    fields: dict[str, Any] = {
        "version": 1 if draw(st.integers(0, 5)) else draw(st.integers(-1, 3)),
        "message_imprint": {
            "hash_algorithm": {"algorithm": algo},
            "hashed_message": draw(st.binary(min_size=size, max_size=size))
            if draw(st.integers(0, 5))
            else draw(st.binary(max_size=80)),
        },
        "cert_req": draw(st.booleans()),
    }
    if draw(st.booleans()):
        fields["nonce"] = draw(st.integers(-(2**70), 2**160))
    if draw(st.integers(0, 3)) == 0:
        fields["req_policy"] = draw(st.sampled_from(["1.2.3.4", "2.5.29.32.0", "1.3.6.1.4.1.99999.1"]))
    valid = tsp.TimeStampReq(fields).dump()
    kind = draw(st.sampled_from(["valid", "valid", "flip", "truncate", "append", "random"]))
    if kind == "valid":
        return valid
    if kind == "flip":
        i = draw(st.integers(0, len(valid) - 1))
        return valid[:i] + bytes([valid[i] ^ draw(st.integers(1, 255))]) + valid[i + 1 :]
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "append":
        return valid + draw(st.binary(min_size=1, max_size=64))
    return draw(st.binary(max_size=300))


def test_tsa_never_answers_5xx(target: Target) -> None:
    """RFC 3161 §3.4: POST /pki/tsa (WSGI middleware in front of Flask, like OCSP) with valid
    and mutated DER TimeStampReqs, other content types and methods."""
    state = {"before": table_digests(target.engine)}

    @fuzz_settings(40)
    @given(
        der=tsa_bodies(),
        method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
        ctype=st.sampled_from(
            ["application/timestamp-query", "application/timestamp-query", "text/plain", ""]
        ),
    )
    def run(der: bytes, method: str, ctype: str) -> None:
        headers = {"Content-Type": ctype} if ctype else {}
        resp = target.anonymous().open("/pki/tsa", method=method, data=der, headers=headers)
        state["before"] = target.check("POST /pki/tsa", resp, state["before"])

    run_budgeted(run, 0.03)


def test_every_route_of_the_app_is_in_the_campaign(target: Target) -> None:
    """A new endpoint (signing, validation, …) must be added to the lists above."""
    import re

    fuzzed = {e.path for e in OAUTH + DEVICE_API + WEBAUTHN + PKI + PAGES + CITIZEN}
    fuzzed |= {e.path for e in SIGNING + VCI + WALLET_AND_PUBLIC + [WALLET_CARD]}
    fuzzed |= {"/pki/ocsp"}  # OCSP POST: test_ocsp_get_and_post_never_answer_5xx
    fuzzed |= {"/pki/tsa"}  # middleware, not a Flask route: test_tsa_never_answers_5xx
    routes = {re.sub(r"<[^>]+>", "{x}", rule.rule) for rule in target.app.url_map.iter_rules()}
    missing = sorted(routes - fuzzed)
    assert not missing, f"routes no fuzz test sends requests to: {missing}"


def test_a_pdf_with_a_damaged_encryption_dictionary_is_refused_as_broken_not_a_500(target: Target) -> None:
    """Found by the long profile: a byte flipped in an encrypted PDF's /Encrypt dictionary made
    pyhanko raise PdfStreamError at ``reader.encrypted`` (signing.inputs.describe), a 500 at
    /api/signatures/validate and /api/signatures. Expected: 400 ``broken_pdf``, nothing changed."""
    import re

    from tests.signing.citizen_helpers import make_pdf

    pdf = make_pdf(password="geheim")
    m = re.search(rb"/O\s*<([0-9a-fA-F]+)>", pdf)
    assert m
    bad = pdf[: m.start(1) + 2] + b"`" + pdf[m.start(1) + 3 :]  # not a hex digit (ISO 32000-1 §7.3.4.3)
    before = table_digests(target.engine)
    for path, headers in (
        ("/api/signatures/validate", {}),
        ("/api/signatures", {"Authorization": f"Bearer {target.sign_token}"}),
    ):
        resp = target.anonymous().post(path, data=bad, headers={"Content-Type": "application/pdf", **headers})
        assert resp.status_code == 400, (path, resp.status_code, resp.get_data()[:200])
        assert resp.get_json()["error"] == "broken_pdf"
        before = target.check(f"regression {path}", resp, before)


def test_a_pdf_with_a_malformed_number_in_its_page_tree_is_refused_as_broken_not_a_500(
    target: Target,
) -> None:
    """Found by the long profile: ``/Count .`` (ISO 32000-1 §7.3.3: not a number) made pyhanko
    raise decimal.InvalidOperation in signing.inputs.describe, a 500 at /api/signatures/validate
    and /api/signatures. Expected: 400 ``broken_pdf``, nothing changed."""
    from tests.signing.citizen_helpers import make_pdf

    pdf = make_pdf()
    i = pdf.find(b"/Count 1")
    assert i > 0
    bad = pdf[:i] + b"/Count ." + pdf[i + 8 :]  # same length: the cross-reference table still fits
    token = sign_token(target)
    before = table_digests(target.engine)
    for path, headers in (
        ("/api/signatures/validate", {}),
        ("/api/signatures", {"Authorization": f"Bearer {token}"}),
    ):
        resp = target.anonymous().post(path, data=bad, headers={"Content-Type": "application/pdf", **headers})
        assert resp.status_code == 400, (path, resp.status_code, resp.get_data()[:200])
        assert resp.get_json()["error"] == "broken_pdf"
        before = target.check(f"regression {path}", resp, before)
