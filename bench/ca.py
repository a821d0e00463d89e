"""CA benchmarks, JSON out. Each measured process is pinned to one core.

  issuance  device certificates/s issued *and recorded* (SQLite, one batch of --batch CSRs)
  ocsp      OCSP responses/s over HTTP from the cache: `cityid serve` (its default server) pinned to
            core 0, wrk on core 1, GET (RFC 6960 A.1) and POST
  crl       full CRL of --crl-entries revoked certificates: time and peak RSS (own process)
  revoke    one revocation: visible to the very next OCSP request and after one shard CRL
            regeneration

Usage: .venv/bin/python bench/ca.py [--batch 10000] [--crl-entries 1000000] [--seconds 10]
"""

from __future__ import annotations

import os
import sys

# bench/token.py shadows the stdlib `token` module: drop bench/ from the import path first.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

import argparse
import base64
import datetime as dt
import json
import resource
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    """VmHWM: this process's peak resident set (reset at exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def pin(core: int) -> int:
    cores = sorted(os.sched_getaffinity(0))
    chosen = cores[core % len(cores)]
    os.sched_setaffinity(0, {chosen})
    return chosen


def device_csrs(n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
        out.append(csr.public_bytes(serialization.Encoding.DER))
    return out


def local_ca(tmp: Path, shards: int = 16) -> tuple[Any, Any, Any]:
    import pki
    from db import make_engine, make_session_factory
    from db.migrate import upgrade
    from idp.config import CaConfig

    engine = make_engine(f"sqlite:///{tmp / 'bench.sqlite3'}")
    upgrade(engine)
    sessions = make_session_factory(engine)
    settings = CaConfig(crl_shards=shards)
    store = pki.FileKeyStore(tmp / "keys", "bench-passphrase")
    with sessions() as s:
        pki.init_ca(s, settings, store, "http://127.0.0.1:8000")
        ca = pki.load_ca(s, settings, store, "http://127.0.0.1:8000")
    return engine, sessions, ca


def bench_issuance(batch: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    import pki
    from pki.models import CaCertificate

    tmp = Path(tempfile.mkdtemp(prefix="cityid-bench-ca-"))
    try:
        engine, sessions, ca = local_ca(tmp)
        csrs = device_csrs(batch)  # not timed: the devices make these
        requests = [
            pki.IssueRequest(c, "device-auth", device_id=f"benchdevice{i:06d}") for i, c in enumerate(csrs)
        ]
        with sessions() as s:
            t0, c0 = time.perf_counter(), time.process_time()
            results = pki.issue_batch(s, ca, requests)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            stored = s.scalar(
                select(func.count()).select_from(CaCertificate).where(CaCertificate.status == "issued")
            )
        engine.dispose()
        return {
            "batch": batch,
            "seconds": round(elapsed, 3),
            "certs_per_s": round(batch / elapsed, 1),
            # CPU time of this process: comparable across runs on a machine that is not idle
            "cpu_seconds": round(cpu, 3),
            "certs_per_cpu_s": round(batch / cpu, 1),
            "recorded_issued": stored,
            "returned": len(results),
            "target_per_s": 3000,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _crl_child(db_path: str, data_dir: str) -> None:
    """Runs in its own process so that its peak RSS is the CRL's alone."""
    import pki
    from db import make_engine, make_session_factory
    from idp.config import CaConfig
    from pki import crl

    pin(0)
    engine = make_engine(f"sqlite:///{db_path}")
    settings = CaConfig(crl_shards=16)
    store = pki.FileKeyStore(Path(data_dir) / "keys", "bench-passphrase")
    with make_session_factory(engine)() as s:
        ca = pki.load_ca(s, settings, store, "http://127.0.0.1:8000")
        ca.signer()
        base_rss = peak_rss_mib()
        t0 = time.perf_counter()
        der = crl.generate(s, ca, crl.FULL)
        s.commit()
        elapsed = time.perf_counter() - t0
    peak = peak_rss_mib()
    parsed = x509.load_der_x509_crl(der)
    ok = parsed.is_signature_valid(ca.certificate.public_key())
    print(
        json.dumps(
            {
                "seconds": round(elapsed, 3),
                "peak_rss_mib": peak,
                "rss_before_mib": base_rss,
                "bytes": len(der),
                "entries": len(parsed),
                "signature_valid": ok,
            }
        )
    )


def bench_crl(entries: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cityid-bench-crl-"))
    try:
        engine, _sessions, ca = local_ca(tmp)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        t0 = time.perf_counter()
        # setup only (not timed): plain DBAPI inserts, in the text form SQLAlchemy stores on SQLite
        fmt = "%Y-%m-%d %H:%M:%S.%f"
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("PRAGMA cache_size=-400000")  # random-key index inserts: keep pages in memory
            cur.execute("BEGIN")
            cur.executemany(
                "INSERT INTO ca_certificate (serial, issuer_id, profile, subject, spki_sha256, not_before,"
                " not_after, status, revoked_at, revocation_reason, shard, created_at)"
                " VALUES (?, ?, 'device-auth', ?, '', ?, ?, 'revoked', ?, ?, ?, ?)",
                (
                    (
                        format(serial, "040x"),
                        ca.id,
                        f"urn:cityid:device:bench{i}",
                        now.strftime(fmt),
                        (now + dt.timedelta(days=90)).strftime(fmt),
                        (now - dt.timedelta(seconds=i % 86400)).strftime(fmt),
                        (1, 4, 5, None)[i % 4],
                        serial % 16,
                        now.strftime(fmt),
                    )
                    for i, serial in ((i, secrets.randbits(159) | 1) for i in range(entries))
                ),
            )
            cur.execute("COMMIT")
        finally:
            raw.close()
        setup = time.perf_counter() - t0
        engine.dispose()
        # not timed: write the setup's ~400 MiB out now, or the CRL's own commit (an fsync at the
        # WAL checkpoint) would wait for the kernel to flush the setup's pages and be charged for it
        os.sync()
        child = subprocess.run(
            [sys.executable, __file__, "--crl-child", str(tmp / "bench.sqlite3"), str(tmp)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        if child.returncode != 0:
            return {"error": child.stderr[-2000:]}
        result = json.loads(child.stdout.strip().splitlines()[-1])
        return {
            "entries": entries,
            **result,
            "setup_insert_seconds": round(setup, 1),
            "target_seconds": 6,
            "target_rss_mib": 1024,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- over HTTP ----------------------------------------------------------------------------------

WRK_LUA = """
wrk.method = "%s"
%s
"""


def _status(der: bytes) -> str:
    resp = ocsp.load_der_ocsp_response(der)
    return resp.certificate_status.name.lower()


def bench_http(seconds: int, workers: int, threads: int) -> dict[str, Any]:
    from bench._server import cli, served, wrk

    with served(core=0, workers=workers, threads=threads) as (data, url):
        cli(data, "ca", "init")
        tmp = Path(tempfile.mkdtemp(prefix="cityid-bench-ocsp-"))
        csr = tmp / "d.csr"
        csr.write_bytes(device_csrs(1)[0])
        issued = json.loads(
            cli(
                data,
                "cert",
                "issue",
                "--csr",
                str(csr),
                "--profile",
                "device-auth",
                "--device-id",
                "benchdevice1",
                "--json",
            )
        )
        cert = x509.load_pem_x509_certificate(issued["certificate_pem"].encode())
        issuing = x509.load_der_x509_certificate(urllib.request.urlopen(url + "/pki/issuing.crt").read())
        req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuing, hashes.SHA1()).build()
        der = req.public_bytes(serialization.Encoding.DER)
        get_path = "/pki/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")

        def ask_get() -> bytes:
            return urllib.request.urlopen(url + get_path).read()

        assert _status(ask_get()) == "good"  # warms the cache
        get = wrk(url + get_path, WRK_LUA % ("GET", ""), seconds=seconds, connections=32, threads=1)
        body = "".join(f"\\x{b:02x}" for b in der)
        post_lua = WRK_LUA % (
            "POST",
            f'wrk.body = "{body}"\nwrk.headers["Content-Type"] = "application/ocsp-request"',
        )
        post = wrk(url + "/pki/ocsp", post_lua, seconds=seconds, connections=32, threads=1)

        # one revocation: the next OCSP request already sees it; one shard regeneration lists it
        shard_url = (
            cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
        )
        before = x509.load_der_x509_crl(urllib.request.urlopen(shard_url).read())
        t0 = time.perf_counter()
        cli(data, "cert", "revoke", issued["serial"], "--reason", "keyCompromise")
        revoke_s = time.perf_counter() - t0
        first_after = _status(ask_get())
        after = x509.load_der_x509_crl(urllib.request.urlopen(shard_url).read())
        number = lambda c: c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number  # noqa: E731
        shutil.rmtree(tmp, ignore_errors=True)
        return {
            "server": f"`cityid serve` (default server), {workers} worker(s) x {threads} thread(s), core 0",
            "load_generator": "wrk -t1 -c32 on core 1",
            "get_from_cache": get,
            "post_from_cache": post,
            "target_per_s": 5000,
            "revocation": {
                "cli_revoke_seconds_incl_process_start": round(revoke_s, 2),
                "first_ocsp_request_after_revoke": first_after,
                "requests_until_revoked_visible": 1 if first_after == "revoked" else None,
                "shard_crl_lists_it": after.get_revoked_certificate_by_serial_number(cert.serial_number)
                is not None,
                "shard_crl_regenerations": number(after) - number(before),
            },
        }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--crl-entries", type=int, default=1_000_000)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["issuance", "crl", "ocsp"], default=None)
    p.add_argument("--crl-child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.crl_child:
        _crl_child(*a.crl_child)
        return
    report: dict[str, Any] = {"cpu_count": os.cpu_count()}
    if a.only in (None, "issuance"):
        report["pinned_core"] = pin(1)
        report["issuance"] = bench_issuance(a.batch)
    if a.only in (None, "crl"):
        report["crl"] = bench_crl(a.crl_entries)
    if a.only in (None, "ocsp"):
        pin(1)
        report["ocsp_http"] = bench_http(a.seconds, a.workers, a.threads)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
