"""cityid-only scenarios of the side-by-side run (the peer harness has no equivalent): refresh-token
grants/s (each of 32 connections chains its own rotating refresh token, aiohttp), userinfo and
introspection requests/s (wrk, 32 connections). Load pinned to CPU 1; results as load.py's JSON."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
import statistics
import time
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from bench._server import wrk

REDIRECT = "http://127.0.0.1:9999/cb"
CONNS = 32


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"), "fields": []})
        elif self.forms and tag in ("input", "button") and a.get("name"):
            typ = a.get("type", "text" if tag == "input" else "submit")
            if typ in ("checkbox", "radio") and "checked" not in a:
                return
            self.forms[-1]["fields"].append((a["name"], a.get("value", ""), typ))


def login(url: str, cid: str, secret: str, email: str, password: str, scope: str) -> dict[str, Any]:
    """One code+PKCE login through the HTML forms; the token response."""
    http = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    r = http.get(
        f"{url}/authorize",
        allow_redirects=False,
        params={
            "response_type": "code",
            "client_id": cid,
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": "s",
            "nonce": "n",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "prompt": "consent",
        },
    )
    for _ in range(12):
        if r.status_code in (302, 303):
            loc = urljoin(r.url, r.headers["Location"])
            if loc.startswith(REDIRECT):
                code = parse_qs(urlsplit(loc).query)["code"][0]
                break
            r = http.get(loc, allow_redirects=False)
            continue
        p = _Forms()
        p.feed(r.text)
        form = next(f for f in p.forms if f["method"].lower() == "post")
        data, submitted = [], False
        for name, value, typ in form["fields"]:
            if typ == "submit":
                if not submitted and (
                    re.search("allow|approve|consent|continue|grant", f"{name} {value}", re.I)
                    or name != "deny"
                ):
                    data.append((name, value))
                    submitted = True
                continue
            data.append((name, email if name == "email" else password if typ == "password" else value))
        r = http.post(urljoin(r.url, form["action"] or r.url), data=data, allow_redirects=False)
    else:
        raise RuntimeError("login did not reach the redirect_uri")
    tok = http.post(
        f"{url}/token",
        auth=(cid, secret),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
    )
    tok.raise_for_status()
    return dict(tok.json())


async def _refresh_load(url: str, basic: str, tokens: list[str], seconds: float) -> dict[str, Any]:
    import aiohttp

    lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNS)) as s:
        end = time.perf_counter() + seconds
        start = time.perf_counter()

        async def worker(i: int) -> None:
            nonlocal errors
            rt = tokens[i]
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                async with s.post(
                    f"{url}/token",
                    data={"grant_type": "refresh_token", "refresh_token": rt},
                    headers={"Authorization": basic},
                ) as r:
                    body = await r.json(content_type=None)
                if r.status != 200:
                    errors += 1
                    return
                rt = tokens[i] = body["refresh_token"]  # RFC 9700 §4.14.2: rotated, the next run goes on
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker(i) for i in range(len(tokens))))
        secs = time.perf_counter() - start
    lat.sort()
    lat = lat or [float("nan")]
    return {
        "rps": round(sum(x == x for x in lat) / secs, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 3),
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 3),
        "errors": errors,
    }


def _cpu_ticks(pid: int) -> int:
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(rest[2]) == pid:  # process group
                total += int(rest[11]) + int(rest[12])
    return total


def _row(label: str, scenario: str, runs: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    def med(k: str) -> float:
        return round(statistics.median(r[k] for r in runs), 3)

    return {
        "scenario": scenario,
        "label": label,
        "unit": "req/s",
        "rps": med("rps"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "errors": sum(r["errors"] for r in runs),
        "server_cpu_pct": med("server_cpu_pct"),
        "per_run": runs,
        "duration_s": duration,
        "concurrency": CONNS,
    }


def extra_scenarios(
    url: str,
    cid: str,
    secret: str,
    email: str,
    password: str,
    pid: int,
    label: str,
    duration: float,
    runs: int,
) -> list[dict[str, Any]]:
    os.sched_setaffinity(0, {1})
    basic = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
    out = []

    def measured(fn: Any) -> dict[str, Any]:
        t0, c0 = time.perf_counter(), _cpu_ticks(pid)
        r = dict(fn())
        r["server_cpu_pct"] = round(
            100 * (_cpu_ticks(pid) - c0) / os.sysconf("SC_CLK_TCK") / (time.perf_counter() - t0), 1
        )
        return r

    tokens = [
        login(url, cid, secret, email, password, "openid email profile offline_access") for _ in range(CONNS)
    ]
    rts = [t["refresh_token"] for t in tokens]
    res = []
    for _ in range(runs):
        r = measured(lambda rts=rts: asyncio.run(_refresh_load(url, basic, rts, duration)))
        res.append(r)
        if r["errors"]:  # a failed chain is revoked (replay detection): fresh tokens for the next run
            rts = [
                login(url, cid, secret, email, password, "openid offline_access")["refresh_token"]
                for _ in range(CONNS)
            ]
    out.append(_row(label, "refresh_token", res, duration))
    # rotated tokens moved on: take a fresh access token for the read-only scenarios
    at = login(url, cid, secret, email, password, "openid email profile")["access_token"]

    def via_wrk(path: str, lua: str) -> dict[str, Any]:
        r = wrk(f"{url}{path}", lua, seconds=int(duration), connections=CONNS, threads=1)
        return {
            "rps": round((r["requests"] - r["non2xx"]) / r["duration_s"], 1),
            "p50_ms": r["p50_ms"],
            "p99_ms": r["p99_ms"],
            "errors": r["errors"] + r["non2xx"],
        }

    ui = f'wrk.method = "GET"\nwrk.headers["Authorization"] = "Bearer {at}"\n'
    out.append(
        _row(label, "userinfo", [measured(lambda: via_wrk("/userinfo", ui)) for _ in range(runs)], duration)
    )
    intro = (
        f'wrk.method = "POST"\nwrk.body = "token={at}"\nwrk.headers["Authorization"] = "{basic}"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
    )
    out.append(
        _row(
            label,
            "introspection",
            [measured(lambda: via_wrk("/introspect", intro)) for _ in range(runs)],
            duration,
        )
    )
    return out
