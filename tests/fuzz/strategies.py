"""Hypothesis strategies for hostile HTTP requests.

A request is drawn as: a method (mostly the endpoint's own, sometimes any), a query and a body
in one of several encodings (form, JSON, multipart, raw bytes; UTF-8, Latin-1, UTF-16, broken
UTF-8), parameter names from the endpoint's own and random ones, values that mix valid ones
(the target's client ids, secrets, the redirect URI) with control and bidi characters, quotes,
backslashes, lone surrogates (broken UTF-8 on the wire), numbers, huge values and deep nesting,
and headers (Authorization of every scheme, DPoP, Content-Type, Accept-Language, Origin, X-CSRF-
Token, X-Forwarded-*) with values from the whole Latin-1 range.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_from_bytes

from hypothesis import strategies as st

from tests.fuzz.conftest import LONG

HUGE = 300_000 if LONG else 20_000  # characters of one huge value
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]

NASTY = [
    "",
    " ",
    '"',
    "\\",
    "\t",
    "\r\n",
    "\x00",
    "\x7f",
    "\x1b[31m",
    "ü",
    "ß",
    "\u00a0",
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u2066",  # LEFT-TO-RIGHT ISOLATE
    "\u200f",  # RIGHT-TO-LEFT MARK
    "\u200b",
    "\ufeff",
    "\ufffd",
    "\ud800",  # a lone surrogate: broken UTF-8 on the wire
    "😀",
    "%",
    "%00",
    "%C3%BC",
    "%ZZ",
    "+",
    "&",
    "=",
    "#",
    "?",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR 1=1--",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "null",
    "true",
    "[]",
    "{}",
    "-1",
    "0",
    "1e309",
    "NaN",
    "99999999999999999999999999",
    "a.b.c",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    "http://",
    "https://evil.example/cb",
    "javascript:alert(1)",
    "openid",
    "openid profile email offline_access",
    "code",
    "S256",
    "plain",
    "none",
    "login",
    "consent",
    "fragment",
    "form_post",
    "urn:ietf:params:oauth:request_uri:x",
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "access_token",
    "http://eidas.europa.eu/LoA/substantial",
    "http://eidas.europa.eu/LoA/high",
    "de",
    "en",
    "approve",
    "deny",
    "enroll",
    "renew",
    "android-key",
    "apple-appattest",
]


@dataclass
class Known:
    """Valid values of the target, so that generated requests get past the first checks."""

    values: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    csrf: str = ""
    access_token: str = ""


def text_values(known: Known) -> st.SearchStrategy[str]:
    plain = st.text(max_size=40)
    nasty = st.sampled_from(NASTY)
    valid = st.sampled_from(known.values or ["x"])
    mixed = st.lists(st.one_of(nasty, valid, plain), min_size=2, max_size=5).map("".join)
    huge = st.builds(
        lambda c, n: c * n, st.sampled_from(["A", "ü", "%", "\u202e", "[", "0", " "]), st.integers(256, HUGE)
    )
    return st.one_of(valid, nasty, plain, mixed, huge)


def _enc(s: str, charset: str) -> bytes:
    if charset == "utf-8":
        return s.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8
    return s.encode(charset, "replace")


def urlencoded(pairs: list[tuple[str, str]], charset: str) -> bytes:
    out = [
        quote_from_bytes(_enc(k, charset), safe="") + "=" + quote_from_bytes(_enc(v, charset), safe="")
        for k, v in pairs
    ]
    return "&".join(out).encode("ascii")


def json_values(known: Known) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        text_values(known),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(
                st.one_of(st.sampled_from(known.values or ["x"]), st.text(max_size=10)), children, max_size=4
            ),
        ),
        max_leaves=12,
    )


def deep_json(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth  # unterminated


@st.composite
def body_and_type(
    draw: st.DrawFn, names: list[str], known: Known, json_api: bool, base: tuple[tuple[str, str], ...] = ()
) -> tuple[bytes, str | None]:
    """A body and its Content-Type (None: no header)."""
    kinds = (
        ["form", "json", "json", "raw", "none", "multipart", "deep"]
        if json_api
        else ["form", "form", "json", "raw", "none", "multipart", "deep"]
    )
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return b"", draw(st.sampled_from([None, "application/x-www-form-urlencoded", "application/json"]))
    if kind == "form":
        pairs = draw(params(names, known, base))
        charset = draw(st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16"]))
        ctype = draw(
            st.sampled_from(
                [
                    "application/x-www-form-urlencoded",
                    f"application/x-www-form-urlencoded; charset={charset}",
                    "application/x-www-form-urlencoded; charset=bogus",
                    "text/plain",
                    None,
                ]
            )
        )
        return urlencoded(pairs, charset), ctype
    if kind == "json":
        choice = draw(st.integers(0, 2))
        if choice == 0 and base:
            doc: Any = dict(draw(params(names, known, base)))  # a valid request, spoilt
        elif choice < 2:
            doc = draw(
                st.dictionaries(st.sampled_from(names or ["x"]), json_values(known), max_size=len(names) + 1)
            )
        else:
            doc = draw(json_values(known))
        text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
        charset = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"]))
        ctype = draw(
            st.sampled_from(["application/json", f"application/json; charset={charset}", "text/json", None])
        )
        return _enc(text, charset), ctype
    if kind == "deep":
        depth = draw(st.sampled_from([64, 500, 999, 1000, 1001, 5000, 100_000]))
        ctype = draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded"]))
        return deep_json(depth, draw(st.sampled_from(["list", "object", "open"]))), ctype
    if kind == "multipart":
        boundary = draw(st.sampled_from(["b0undary", "", "x" * 80, '"q"']))
        pairs = draw(params(names, known, base))
        parts = b"".join(
            b"--"
            + boundary.encode()
            + b'\r\nContent-Disposition: form-data; name="'
            + _enc(k, "utf-8")
            + b'"\r\n\r\n'
            + _enc(v, "utf-8")
            + b"\r\n"
            for k, v in pairs
        )
        body = parts + (b"--" + boundary.encode() + b"--\r\n" if draw(st.booleans()) else b"")
        return body, f"multipart/form-data; boundary={boundary}"
    raw = draw(
        st.one_of(st.binary(max_size=200), st.sampled_from([b"\xff\xfe\x00", b"%", b"a=%zz&b", b"\x00" * 10]))
    )
    return raw, draw(
        st.sampled_from(
            [None, "application/octet-stream", "application/json", "application/x-www-form-urlencoded"]
        )
    )


@st.composite
def params(
    draw: st.DrawFn, names: list[str], known: Known, base: tuple[tuple[str, str], ...] = ()
) -> list[tuple[str, str]]:
    """Parameters: mostly a valid request of the endpoint (``base``) with some values dropped,
    replaced or spoilt (so the checks behind the first one are reached), plus random ones."""
    name = (
        st.one_of(st.sampled_from(names), st.sampled_from(names), st.text(max_size=12))
        if names
        else st.text(max_size=12)
    )
    out: list[tuple[str, str]] = []
    if base and draw(st.integers(0, 2)) > 0:
        for key, value in base:
            value = value.replace("$AT", known.access_token)
            action = draw(st.integers(0, 7))
            if action == 0:
                continue  # dropped
            if action == 1:
                value = draw(text_values(known))  # replaced
            elif action == 2:
                value = value + draw(st.sampled_from(NASTY))  # spoilt
            elif action == 3:
                out.append((key, draw(text_values(known))))  # repeated with another value
            out.append((key, value))
    out.extend(draw(st.lists(st.tuples(name, text_values(known)), max_size=2 if out else 6)))
    return out


def _latin1(max_size: int = 80) -> st.SearchStrategy[str]:
    return st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=max_size,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@st.composite
def authorization(draw: st.DrawFn, known: Known) -> str:
    if known.authorizations and draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(known.authorizations))  # valid: gets past authentication
    scheme = draw(st.sampled_from(["Basic", "Bearer", "DPoP", "Device", "basic", "Digest", ""]))
    if scheme.lower() == "basic" and draw(st.booleans()):
        user = draw(text_values(known))[:200]
        pw = draw(text_values(known))[:200]
        charset = draw(st.sampled_from(["utf-8", "latin-1"]))
        return f"{scheme} {_b64(_enc(user, 'utf-8') + b':' + _enc(pw, charset))}"
    value = draw(st.one_of(st.sampled_from(known.authorizations or ["x"]), _latin1()))
    if value.split(" ", 1)[0] in ("Basic", "Bearer", "DPoP", "Device"):
        return value  # a complete valid one
    return f"{scheme} {value}".strip()


@st.composite
def headers(draw: st.DrawFn, known: Known, content_type: str | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if content_type is not None:
        out.append(("Content-Type", content_type))
    if draw(st.integers(0, 3)) > 0:
        out.append(("Authorization", draw(authorization(known))))
    optional = {
        "DPoP": st.one_of(_latin1(), st.just("eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2In0.e30.AAAA")),
        "Accept-Language": st.one_of(
            st.sampled_from(["de", "en;q=0.5, de", "*", "tr-TR", "x" * 300]), _latin1()
        ),
        "Origin": st.sampled_from(["http://localhost", "https://evil.example", "null", ""]),
        "X-CSRF-Token": st.one_of(st.just(known.csrf), _latin1(60)),
        "X-Forwarded-For": _latin1(40),
        "X-Forwarded-Proto": st.sampled_from(["https", "http", "gopher", ""]),
        "Accept": st.sampled_from(["application/json", "text/html", "*/*", "application/ocsp-response", ""]),
        "Access-Control-Request-Method": st.sampled_from(["POST", "GET", "DELETE"]),
        "Cookie": st.one_of(st.just("cityid=" + secrets.token_urlsafe(8)), _latin1(60)),
        "X-Client-Cert": _latin1(),
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "identity", "br"]),
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), max_size=4, unique=True)):
        out.append((name, draw(optional[name])))
    return out


@dataclass(frozen=True)
class Endpoint:
    label: str
    path: str  # may contain {x}: a drawn path segment
    methods: tuple[str, ...]
    names: tuple[str, ...] = ()
    json_api: bool = False
    base: tuple[tuple[str, str], ...] = ()  # a valid request's parameters ($AT: the access token)


class Drawn:
    """One generated request (a plain class: its repr shortens huge values in reports)."""

    def __init__(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        self.endpoint = endpoint
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        def cut(x: object) -> str:
            r = repr(x)
            return r if len(r) <= 600 else f"{r[:300]}...({len(r)} chars)...{r[-100:]}"

        return (
            f"Drawn({self.endpoint.label!r}, {self.method} {cut(self.path)}, query={cut(self.query)}, "
            f"headers={cut(self.headers)}, body={cut(self.body)})"
        )


@st.composite
def hostile_request(draw: st.DrawFn, endpoints: list[Endpoint], known: Known) -> Drawn:
    ep = draw(st.sampled_from(endpoints))
    method = (
        draw(st.sampled_from(list(ep.methods))) if draw(st.integers(0, 5)) else draw(st.sampled_from(METHODS))
    )
    path = ep.path
    while "{x}" in path:
        seg = draw(st.one_of(st.sampled_from(known.values or ["x"]), text_values(known)))[:300]
        path = path.replace("{x}", quote(_enc(seg, "utf-8"), safe="") or "x", 1)
    query = b""
    if method == "GET" or draw(st.integers(0, 3)) == 0:
        query = urlencoded(
            draw(params(list(ep.names), known, ep.base)), draw(st.sampled_from(["utf-8", "latin-1"]))
        )
    body, ctype = b"", None
    if method not in ("GET", "HEAD") or draw(st.integers(0, 5)) == 0:
        body, ctype = draw(body_and_type(list(ep.names), known, ep.json_api, ep.base))
    if draw(st.integers(0, 80)) == 0:  # just over MAX_CONTENT_LENGTH (1 MiB): 413, never 500
        body = b"a=" + b"A" * (1024 * 1024)
    return Drawn(ep, method, path, query, draw(headers(known, ctype)), body)


def send(client: Any, req: Drawn) -> Any:
    return client.open(
        req.path,
        method=req.method,
        query_string=req.query.decode("latin-1"),
        headers=req.headers,
        data=req.body,
    )
