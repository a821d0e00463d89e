"""Crash safety: a CA process killed right after signing leaves no certificate the CA does not know."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from sqlalchemy.orm import Session

import pki
from cli import main as cityid
from db import make_engine, make_session_factory
from idp.config import CaConfig, load_config
from pki import crl
from tests.pki.test_http import write_config

ROOT = Path(__file__).resolve().parents[2]

# Runs in a child process: issue a batch, SIGKILL itself after the third signature.
CHILD = r"""
import os, signal, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
import pki
from db import make_engine, make_session_factory
from idp.config import load_config

cfg = load_config(sys.argv[1])
signed = []

def after_sign(serial):
    signed.append(serial)
    print(serial, flush=True)  # the test learns what exists, as an attacker would
    if len(signed) == 3:
        os.kill(os.getpid(), signal.SIGKILL)

def csr():
    key = ec.generate_private_key(ec.SECP256R1())
    req = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return req.public_bytes(serialization.Encoding.DER)

engine = make_engine(cfg.db_url)
with make_session_factory(engine)() as session:
    store = pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase)
    ca = pki.load_ca(session, cfg.ca, store, cfg.issuer)
    requests = [pki.IssueRequest(csr(), "device-auth", device_id=f"crashdevice{i}") for i in range(5)]
    pki.issue_batch(session, ca, requests, hooks=pki.IssueHooks(after_sign=after_sign))
print("not killed", flush=True)
"""


def test_killed_between_signing_and_returning_the_database_knows_every_signed_certificate(
    db_url: str, ca_config: CaConfig, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    write_config(data_dir, db_url, "https://ca.test.invalid", ca_config)
    init = CliRunner().invoke(cityid, ["ca", "init", "--data-dir", str(data_dir), "--json"])
    assert init.exit_code == 0, init.output

    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    signed = child.stdout.split()
    assert len(signed) == 3 and "not" not in signed

    cfg = load_config(data_dir)
    engine = make_engine(cfg.db_url)
    try:
        with make_session_factory(engine)() as session:
            for serial in signed:  # every signed certificate is known, as pending
                assert pki.status(session, serial).status == "pending"
            pending = {s.serial for s in pki.list_certificates(session, status="pending")}
            assert set(signed) <= pending and len(pending) == 5  # the whole batch was recorded first
            _abandoned_are_revoked_and_listed(session, cfg, signed)
    finally:
        engine.dispose()


def _abandoned_are_revoked_and_listed(session: Session, cfg, signed: list[str]) -> None:
    ca = pki.load_ca(
        session, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer
    )
    # a fresh pending row may belong to a live issuer; only old ones are abandoned
    assert pki.revoke_abandoned(session, ca) == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=11)
    revoked = pki.revoke_abandoned(session, ca, now=later, actor="test")
    assert set(signed) <= set(revoked)
    full = x509.load_der_x509_crl(crl.current(session, ca, crl.FULL, now=later))
    for serial in signed:
        assert full.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
