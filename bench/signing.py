"""Signing benchmarks, JSON out. Each measured process is pinned to one core.

  seal      city seals/s of a 1-page and a 100-page PDF at B-B, B-T and B-LT (in process: our TSA
            in process, revocation data from the CA; SQLite; file key store)
  tsa       time-stamp tokens/s over HTTP: `cityid serve` pinned to core 0, wrk on core 1,
            POST /pki/tsa with an RFC 3161 query (a nonce: every token is signed anew)
  validate  validations/s of a B-LT sealed 1-page PDF (offline: what the file embeds)

Targets (issue 13): >= 100 seals/s (1 page, B-T), >= 2,000 TSA tokens/s, >= 50 validations/s.

Usage: .venv/bin/python bench/signing.py [--seconds 5] [--only seal|tsa|validate]
"""

from __future__ import annotations

import os
import sys

# bench/token.py shadows the stdlib `token` module: drop bench/ from the import path first.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _rate(fn: Callable[[], object], seconds: float) -> dict[str, Any]:
    fn()  # warm up (imports, caches)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "n": n,
        "per_s": round(n / wall, 1),
        "per_cpu_s": round(n / cpu, 1),
        "ms_each": round(1000 * wall / n, 2),
    }


def _city(tmp: Path) -> tuple[Any, Any, Any, Any]:
    from bench.ca import local_ca
    from pki.seal import init_seal

    engine, sessions, ca = local_ca(tmp, shards=4)
    session = sessions()
    init_seal(session, ca, "CN=Stadt Musterstadt,O=Stadt Musterstadt,C=DE")
    return engine, session, ca, sessions


def bench_seal(seconds: float) -> dict[str, Any]:
    from pki.seal import active_seal, seal_signer
    from signing import Level
    from signing.pki_context import pki_context
    from signing.seal import seal_pdf
    from tests.signing.pdfs import make_pdf

    tmp = Path(tempfile.mkdtemp(prefix="cityid-bench-sign-"))
    try:
        engine, session, ca, _ = _city(tmp)
        seal = active_seal(session, ca)
        assert seal is not None
        key = seal_signer(ca, seal)
        context = pki_context(session, ca)
        out: dict[str, Any] = {}
        for pages in (1, 100):
            pdf = make_pdf(pages)
            for level in Level:
                out[f"{pages}_page_{level.value}"] = _rate(
                    lambda pdf=pdf, level=level: seal_pdf(
                        pdf, seal.certificate, seal.chain, key, context, level=level
                    ),
                    seconds,
                ) | {"pdf_bytes": len(pdf)}
        session.close()
        engine.dispose()
        out["target_1_page_B-T_per_s"] = 100
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_validate(seconds: float) -> dict[str, Any]:
    from pki.seal import active_seal, seal_signer
    from signing import Level
    from signing.pki_context import pki_context
    from signing.seal import seal_pdf
    from signing.validate import validate
    from tests.signing.pdfs import make_pdf

    tmp = Path(tempfile.mkdtemp(prefix="cityid-bench-validate-"))
    try:
        engine, session, ca, _ = _city(tmp)
        seal = active_seal(session, ca)
        assert seal is not None
        sealed = seal_pdf(
            make_pdf(1),
            seal.certificate,
            seal.chain,
            seal_signer(ca, seal),
            pki_context(session, ca),
            level=Level.B_LT,
        )
        root = ca.root_certificate
        assert validate(sealed, [root], online=False).valid
        result = _rate(lambda: validate(sealed, [root], online=False), seconds)
        session.close()
        engine.dispose()
        return {"b_lt_1_page_offline": result, "target_per_s": 50}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


WRK_TSA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/timestamp-query"
local counter = 0
request = function()
  counter = counter + 1
  -- a fresh positive 8-octet nonce per request (first octet 0x20: minimal DER)
  local nonce = "\\x20"
  for i = 6, 0, -1 do nonce = nonce .. string.char(math.floor(counter / 256 ^ i) % 256) end
  -- TimeStampReq (RFC 3161 §2.4.1): v1, SHA-256 imprint, the nonce, certReq TRUE
  local body = "\\x30\\x41\\x02\\x01\\x01\\x30\\x2f\\x30\\x0b\\x06\\x09\\x60\\x86\\x48\\x01\\x65\\x03\\x04\\x02\\x01\\x04\\x20" ..
    string.rep("\\x42", 32) .. "\\x02\\x08" .. nonce .. "\\x01\\x01\\xff"
  return wrk.format(nil, nil, nil, body)
end
"""


def bench_tsa(seconds: int, workers: int, threads: int) -> dict[str, Any]:
    import requests
    from asn1crypto import tsp

    from bench._server import served, wrk

    with served(core=0, workers=workers, threads=threads) as (_data, url):
        query = subprocess.run(
            ["openssl", "ts", "-query", "-digest", "42" * 32, "-sha256", "-cert"],
            capture_output=True,
            check=True,
        ).stdout
        first = requests.post(
            url + "/pki/tsa", data=query, headers={"Content-Type": "application/timestamp-query"}
        )
        assert tsp.TimeStampResp.load(first.content)["status"]["status"].native == "granted", first.content
        result = wrk(url + "/pki/tsa", WRK_TSA, seconds=seconds, connections=32, threads=1)
        return {
            "server": f"`cityid serve` (default server), {workers} worker(s) x {threads} thread(s), core 0",
            "load_generator": "wrk -t1 -c32 on core 1",
            "post_tsa": result,
            "target_per_s": 2000,
        }


def main() -> None:
    from bench.ca import pin

    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["seal", "tsa", "validate"], default=None)
    a = p.parse_args()
    report: dict[str, Any] = {"cpu_count": os.cpu_count()}
    if a.only in (None, "seal"):
        report["pinned_core"] = pin(1)
        report["seal"] = bench_seal(a.seconds)
    if a.only in (None, "validate"):
        report["pinned_core"] = pin(1)
        report["validate"] = bench_validate(a.seconds)
    if a.only in (None, "tsa"):
        pin(1)
        report["tsa_http"] = bench_tsa(a.seconds, a.workers, a.threads)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
