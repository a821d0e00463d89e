"""Signing fixtures: a CA with its TSA (file key store unless a test asks for SoftHSM2), a city
seal, and helpers that run pdfsig with an NSS database trusting the city root."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.orm import Session

import pki
from idp.config import CaConfig
from pki.seal import Seal, init_seal
from signing.pades import SigningContext
from signing.pki_context import pki_context
from tests.pki.conftest import BASE_URL, PASSPHRASE

SEAL_SUBJECT = "CN=Stadt Musterstadt Bürgeramt,O=Stadt Musterstadt,C=DE"


@dataclass
class City:
    session: Session
    ca: pki.CertificateAuthority
    seal: Seal
    context: SigningContext


@pytest.fixture
def city(db_session: Session, tmp_path: Path) -> Iterator[City]:
    settings = CaConfig(crl_shards=2)
    store = pki.open_key_store(settings, tmp_path, PASSPHRASE)
    pki.init_ca(db_session, settings, store, BASE_URL)
    ca = pki.load_ca(db_session, settings, store, BASE_URL)
    seal = init_seal(db_session, ca, SEAL_SUBJECT)
    yield City(db_session, ca, seal, pki_context(db_session, ca))


def nss_db(tmp: Path, root_pem: bytes) -> str:
    """An NSS database that trusts the city root (and nothing else) for pdfsig's ``-nssdir``."""
    if not (shutil.which("pdfsig") and shutil.which("certutil")):
        pytest.fail("pdfsig/certutil missing: run `make system-deps` (poppler-utils, libnss3-tools)")
    db = tmp / "nss"
    db.mkdir(exist_ok=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True)
    (tmp / "city-root.pem").write_bytes(root_pem)
    subprocess.run(
        [
            "certutil",
            "-A",
            "-d",
            f"sql:{db}",
            "-n",
            "city-root",
            "-t",
            "CT,C,C",
            "-i",
            str(tmp / "city-root.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return f"sql:{db}"


def pdfsig(tmp: Path, ca: pki.CertificateAuthority, pdf: bytes) -> str:
    """pdfsig's report. ``-no-ocsp``: pdfsig (NSS) does not read the DSS and would ask the
    responder named in the certificate, which is not running in these tests."""
    nssdir = nss_db(tmp, ca.root_certificate.public_bytes(Encoding.PEM))
    path = tmp / "checked.pdf"
    path.write_bytes(pdf)
    done = subprocess.run(
        ["pdfsig", "-nssdir", nssdir, "-no-ocsp", str(path)], capture_output=True, text=True, timeout=60
    )
    return done.stdout + done.stderr
