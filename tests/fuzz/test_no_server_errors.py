"""Fuzz campaign (issue 18): every HTTP endpoint under generated hostile requests.

For each request: no 5xx, a JSON error is ``{"error", "error_description"}``, a refused
request changes no state (see ``conftest.Target.check``). In ``make test`` each test sends a
fixed, derandomized set of examples (the whole campaign well under a minute); ``make fuzz``
runs the long profile for 20 minutes and prints the requests sent per endpoint.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import REDIRECT, Target, fuzz_settings, run_budgeted, table_digests
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
        ],
        csrf=csrf,
        access_token=t.access_token,
    )


def campaign(
    t: Target, endpoints: list[Endpoint], examples: int, share: float, *, citizen: bool = False
) -> None:
    """Send ``examples`` generated requests (per run) to ``endpoints`` and check each answer."""
    state = {"before": table_digests(t.engine)}
    k = known(t, csrf="$CSRF" if citizen else "")  # the live session's token, put in at send time

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
    campaign(target, OAUTH, 150, 0.18)


def test_device_api_never_answers_5xx_and_errors_are_error_objects(target: Target) -> None:
    campaign(target, DEVICE_API, 90, 0.10)


def test_webauthn_json_never_answers_5xx_anonymous_or_logged_in(target: Target) -> None:
    campaign(target, WEBAUTHN, 45, 0.04)
    campaign(target, WEBAUTHN, 45, 0.04, citizen=True)


def test_pki_endpoints_never_answer_5xx(target: Target) -> None:
    campaign(target, PKI, 60, 0.05)


def test_citizen_pages_with_session_and_csrf_never_answer_5xx(target: Target) -> None:
    # the authorization and logout endpoints with a logged-in session: consent and logout pages
    with_session = [e for e in OAUTH if e.path in ("/authorize", "/logout")]
    campaign(target, CITIZEN + PAGES[:6] + with_session, 120, 0.12, citizen=True)


def test_anonymous_pages_never_answer_5xx(target: Target) -> None:
    campaign(target, PAGES, 120, 0.10)


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

    run_budgeted(run, 0.07)


def test_every_route_of_the_app_is_in_the_campaign(target: Target) -> None:
    """A new endpoint (signing, validation, …) must be added to the lists above."""
    import re

    fuzzed = {e.path for e in OAUTH + DEVICE_API + WEBAUTHN + PKI + PAGES + CITIZEN}
    fuzzed |= {"/pki/ocsp"}  # OCSP POST: test_ocsp_get_and_post_never_answer_5xx
    routes = {re.sub(r"<[^>]+>", "{x}", rule.rule) for rule in target.app.url_map.iter_rules()}
    missing = sorted(routes - fuzzed)
    assert not missing, f"routes no fuzz test sends requests to: {missing}"
