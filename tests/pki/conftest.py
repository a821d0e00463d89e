"""CA fixtures: every CA test runs with the file key store and with SoftHSM2 over PKCS#11."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

import pki
from idp.config import CaConfig
from tests.conftest import SOFTHSM_MODULE

BASE_URL = "https://ca.test.invalid"
PASSPHRASE = "test-passphrase-" + "x" * 16


@pytest.fixture(params=["file", "pkcs11"])
def ca_config(request: pytest.FixtureRequest) -> CaConfig:
    if request.param == "pkcs11":
        label, pin = request.getfixturevalue("softhsm_token")
        return CaConfig(
            crl_shards=4,
            key_store="pkcs11",
            pkcs11_module=SOFTHSM_MODULE,
            pkcs11_token_label=label,
            pkcs11_pin=pin,
        )
    return CaConfig(crl_shards=4)


@pytest.fixture
def key_store(ca_config: CaConfig, tmp_path: Path) -> pki.KeyStore:
    return pki.open_key_store(ca_config, tmp_path, PASSPHRASE)


@pytest.fixture
def ca(
    db_session: Session, ca_config: CaConfig, key_store: pki.KeyStore
) -> Iterator[pki.CertificateAuthority]:
    pki.init_ca(db_session, ca_config, key_store, BASE_URL)
    yield pki.load_ca(db_session, ca_config, key_store, BASE_URL)
