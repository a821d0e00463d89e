"""Virtual smartcard rates on one pinned core, in one process (JSON on stdout).

- enrolments/s: challenge + CSR proof of possession + Android key attestation (TEST root, 3
  certificates) + policy + ``device-auth`` issuance (two commits, file key) + device row.
- PKI-2FA verifications/s: ``smartcard.authenticate.approve`` — device proof (JWS, x5c), path
  validation to our root, status from the database, challenge, binding data, commit.
- DPoP resource requests/s: ``GET /api/demo/resource`` through the WSGI app in process (no
  socket, no HTTP parsing: the server's own work), each with a fresh DPoP proof (RFC 9449).
- DPoP resource requests/s over HTTP (``dpop_http``): the same request against ``cityid serve``
  pinned to core 0, wrk with 32 connections on core 1, each request carrying its own pre-made
  proof (unique ``jti``; a reused one would be refused as a replay). Needs ``wrk``.

Client-side work (making keys, CSRs, evidence, proofs) is done before the clock starts (the
CSR's cost is measured and taken out of the enrolment totals). ``*_cpu``: process CPU time;
``*_median``: 1 / the median wall time of one operation (client work excluded), the figure
least disturbed by other processes on a busy machine; ``*_p10``: the same from the 10th
percentile (an estimate for an idle core, for before/after comparisons on a shared machine). ``--profile DIR`` writes one cProfile
file per timed phase (timer: process CPU time).
Usage: .venv/bin/python bench/smartcard.py [--n 300] [--db-url URL] [--http-seconds 8]
"""

from __future__ import annotations

import os
import sys

# bench/token.py shadows the stdlib `token` module: keep bench/ off the import path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

import argparse
import contextlib
import cProfile
import dataclasses
import datetime as dt
import hashlib
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def _profiled(directory: str, name: str) -> Any:
    """Profile the block into ``directory/name.prof`` when ``--profile`` is given."""
    if not directory:
        yield
        return
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        os.makedirs(directory, exist_ok=True)
        prof.dump_stats(os.path.join(directory, f"{name}.prof"))


def _median_rate(seconds: list[float], quantile: float = 0.5) -> float:
    """1 / the median (or another quantile) time of one operation: robust against bursts."""
    ordered = sorted(seconds)
    return round(1 / ordered[int(len(ordered) * quantile)], 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--db-url", default="")
    p.add_argument("--core", type=int, default=0, help="the one CPU core to run on")
    p.add_argument("--profile", default="", help="directory: write a cProfile file per timed phase")
    p.add_argument("--http-seconds", type=int, default=8, help="0: leave out the HTTP measurement")
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})

    from cryptography.hazmat.primitives.asymmetric import ec

    import pki
    from attestation import AndroidApp, AndroidKeyEvidence, RevocationList, TrustStore
    from db import make_engine, make_session_factory, transaction, utcnow
    from db.migrate import upgrade
    from idp.accounts import create_account
    from idp.app import create_app
    from idp.clients import ClientSpec, add_client
    from idp.config import Config
    from idp.instance import InstanceKeys
    from idp.keys import ensure_keys
    from policies import Level
    from smartcard import authenticate, challenges
    from smartcard.enroll import EnrolRequest, enrol
    from smartcard.evidence import make_android_key_attestation, make_test_root
    from smartcard.models import ENROL
    from smartcard.settings import SmartcardSettings
    from smartcard.softtoken import DpopSigner, SoftToken

    tmp = Path(tempfile.mkdtemp(prefix="cityid-bench-sc-"))
    cfg = Config(
        data_dir=tmp,
        database_url=args.db_url,
        issuer="https://bench.invalid",
        secret_key=secrets.token_urlsafe(32),
        key_passphrase=secrets.token_urlsafe(32),
        dpop_require_nonce=True,
    )
    engine = make_engine(cfg.db_url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    keys = InstanceKeys.from_config(cfg)
    with transaction(sessions) as s:
        ensure_keys(s, cfg.key_passphrase)
        store = pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase)
        pki.init_ca(s, cfg.ca, store, cfg.issuer)
        account = create_account(
            s, keys, "bench@example.org", "correct horse battery staple", verified=True, actor="admin"
        ).id
    with sessions() as s:
        ca = pki.load_ca(s, cfg.ca, store, cfg.issuer)

    root = make_test_root()
    digest = hashlib.sha256(b"bench app").digest()
    settings = SmartcardSettings(
        trust=TrustStore.of(
            google_roots=[root.certificate],
            android_revocations=RevocationList.from_json(b'{"entries": {}}', fetched_at=utcnow()),
        ),
        apps=(AndroidApp("de.musterstadt.cityapp", frozenset({digest})),),
    )
    from smartcard.evidence import make_intermediate

    batch = make_intermediate(root, "TEE")
    n = args.n
    result: dict[str, Any] = {"n": n, "database": cfg.db_url.split(":")[0], "core": args.core}

    # ---- enrolments: prepare client side (keys, CSRs, evidence bound to fresh challenges)
    prepared = []
    with transaction(sessions) as s:
        for _ in range(n):
            issued, _row = challenges.create(
                s, purpose=ENROL, account_id=account, ttl=dt.timedelta(minutes=30), now=utcnow()
            )
            key = ec.generate_private_key(ec.SECP256R1())
            token = SoftToken(tmp, {"server": cfg.issuer}, key)
            chain = make_android_key_attestation(
                key.public_key(),
                challenges.b64url_decode(issued.value, "c"),
                "de.musterstadt.cityapp",
                digest,
                root=root,
                intermediates=[batch],
            )
            prepared.append((issued.value, token, AndroidKeyEvidence(tuple(chain))))
    tokens = []
    per_op: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    with _profiled(args.profile, "enrol"):
        for value, token, evidence in prepared:
            csr = token.csr()
            o0 = time.perf_counter()
            with sessions() as s:
                r = enrol(
                    s,
                    ca,
                    settings,
                    EnrolRequest(account, value, csr, evidence, "bench"),
                    now=utcnow(),
                )
                s.commit()
            per_op.append(time.perf_counter() - o0)
            token.state["certificate"] = r.certificate_pem.decode()
            tokens.append(token)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert r.max_level == Level.SUBSTANTIAL
    # CSR creation is client work inside the loop above: measure it and take it out
    c1 = time.perf_counter()
    for _v, token, _e in prepared[:50]:
        token.csr()
    csr_cost = (time.perf_counter() - c1) / 50
    result["enrolments_per_s"] = round(n / (wall - n * csr_cost), 1)
    result["enrolments_per_s_cpu"] = round(n / (cpu - n * csr_cost), 1)
    result["enrolments_per_s_median"] = _median_rate(per_op)
    result["enrolments_per_s_p10"] = _median_rate(per_op, 0.1)

    # ---- PKI-2FA verifications: one pending challenge and one signed answer each
    url = f"{cfg.issuer}/api/smartcard/approve"
    answers = []
    with transaction(sessions) as s:
        for i in range(n):
            login = authenticate.start(
                s,
                settings,
                account_id=account,
                session_sid=f"bench-{i}",
                service_name="Bench",
                amount=None,
                level=Level.SUBSTANTIAL,
                now=utcnow(),
            )
            del login
        items = authenticate.pending_for(s, "", account, utcnow())
    for i, item in enumerate(items[:n]):
        token = tokens[i % len(tokens)]
        answers.append(
            token.proof(
                "POST",
                url,
                challenge=item.challenge,
                binding_code=item.binding_code,
                service_name=item.service_name,
                amount=None,
                decision="approve",
            )
        )
    per_op = []
    t0, c0 = time.perf_counter(), time.process_time()
    with _profiled(args.profile, "pki2fa"):
        for proof in answers:
            o0 = time.perf_counter()
            with sessions() as s:
                authenticate.approve(s, ca, settings, proof, url=url, now=utcnow())
                s.commit()
            per_op.append(time.perf_counter() - o0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result["pki2fa_verifications_per_s"] = round(len(answers) / wall, 1)
    result["pki2fa_verifications_per_s_cpu"] = round(len(answers) / cpu, 1)
    result["pki2fa_verifications_per_s_median"] = _median_rate(per_op)
    result["pki2fa_verifications_per_s_p10"] = _median_rate(per_op, 0.1)

    # ---- DPoP-protected resource through the WSGI app
    app = create_app(dataclasses.replace(cfg))
    with transaction(sessions) as s:
        row, secret = add_client(
            s, keys, ClientSpec(name="bench", grant_types=["client_credentials"], scope="read")
        )
        cid = row.client_id
    http = app.test_client()
    dpop = DpopSigner()
    token_url = f"{cfg.issuer}/token"
    data = {"grant_type": "client_credentials", "scope": "read"}
    resp = http.post(
        "/token",
        base_url=cfg.issuer,
        data=data,
        headers={"DPoP": dpop.proof("POST", token_url)},
        auth=(cid, secret),
    )
    dpop.nonce = resp.headers.get("DPoP-Nonce")
    resp = http.post(
        "/token",
        base_url=cfg.issuer,
        data=data,
        headers={"DPoP": dpop.proof("POST", token_url)},
        auth=(cid, secret),
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    at = resp.get_json()["access_token"]
    res_url = f"{cfg.issuer}/api/demo/resource"
    m = n * 5
    proofs = [dpop.proof("GET", res_url, at) for _ in range(m)]
    per_op = []
    t0, c0 = time.perf_counter(), time.process_time()
    with _profiled(args.profile, "dpop"):
        for pr in proofs:
            o0 = time.perf_counter()
            r2 = http.get(
                "/api/demo/resource",
                base_url=cfg.issuer,
                headers={"Authorization": f"DPoP {at}", "DPoP": pr},
            )
            per_op.append(time.perf_counter() - o0)
            assert r2.status_code == 200, r2.get_data(as_text=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result["dpop_resource_requests_per_s"] = round(m / wall, 1)
    result["dpop_resource_requests_per_s_cpu"] = round(m / cpu, 1)
    result["dpop_resource_requests_per_s_median"] = _median_rate(per_op)
    result["dpop_resource_requests_per_s_p10"] = _median_rate(per_op, 0.1)
    result["dpop_note"] = "in-process WSGI (Flask test client): server work only, no socket/HTTP parsing"
    result["targets"] = {
        "enrolments_per_s": 300,
        "pki2fa_verifications_per_s": 1000,
        "dpop_resource_requests_per_s": 1500,
    }
    engine.dispose()
    if args.http_seconds > 0:
        result["dpop_http"] = dpop_over_http(args.http_seconds, args.db_url or None)
    print(json.dumps(result, indent=2))


_WRK_PROOFS = """
local proofs, n, i = {}, 0, 0
local token = "%s"
local path = "%s"
local threads = %d
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  for line in io.lines("%s") do n = n + 1; proofs[n] = line end
  i = tid
end
function request()
  i = i + threads
  if i > n then i = ((i - 1) %% n) + 1 end
  return wrk.format("GET", path, {["Authorization"] = "DPoP " .. token, ["DPoP"] = proofs[i]})
end
"""


def dpop_over_http(seconds: int, db_url: str | None) -> dict[str, Any]:
    """``GET /api/demo/resource`` with DPoP against ``cityid serve`` on core 0, wrk on core 1."""
    import shutil

    import requests

    from bench._server import machine_client, served, wrk
    from smartcard.softtoken import DpopSigner

    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))  # the load generator's core
    with served(db_url) as (data, url):
        cid, secret = machine_client(data, "read")
        dpop = DpopSigner()
        token_url = f"{url}/token"
        form = {"grant_type": "client_credentials", "scope": "read"}
        auth = (cid, secret)
        resp = requests.post(
            token_url, data=form, auth=auth, timeout=10, headers={"DPoP": dpop.proof("POST", token_url)}
        )
        if resp.status_code == 400 and resp.headers.get("DPoP-Nonce"):  # RFC 9449 §8
            dpop.nonce = resp.headers["DPoP-Nonce"]
            resp = requests.post(
                token_url, data=form, auth=auth, timeout=10, headers={"DPoP": dpop.proof("POST", token_url)}
            )
        resp.raise_for_status()
        token = resp.json()["access_token"]
        resource = f"{url}/api/demo/resource"
        check = requests.get(
            resource,
            timeout=10,
            headers={"Authorization": f"DPoP {token}", "DPoP": dpop.proof("GET", resource, token)},
        )
        check.raise_for_status()
        # one proof per request (unique jti), made before the clock starts; iat stays inside the
        # server's 60 s window for the whole run
        count = max(20_000, 4_000 * seconds)
        proofs = Path(data) / "proofs.txt"
        proofs.write_text("\n".join(dpop.proof("GET", resource, token) for _ in range(count)) + "\n")
        r = wrk(
            resource, _WRK_PROOFS % (token, "/api/demo/resource", 2, proofs), seconds=seconds, connections=32
        )
    return {
        "server": "`cityid serve` (default server), 1 worker x 1 thread, core 0",
        "load_generator": f"wrk -t2 -c32 on core 1, {count} distinct proofs",
        "requests": r["requests"],
        "per_s": r["per_s"],
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "errors": r["errors"],
        "non2xx": r["non2xx"],
        "proofs_reused": r["requests"] > count,
        "target_per_s": 1500,
    }


if __name__ == "__main__":
    main()
