"""CA fixtures: every CA test runs with the file key store and with SoftHSM2 over PKCS#11."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

import pki
from idp.config import CaConfig

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
BASE_URL = "http://ca.test.invalid"
PASSPHRASE = "test-passphrase-" + "x" * 16


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One SoftHSM2 token per test process (label, user PIN); keys get random labels.

    SoftHSM reads its configuration when the library is first initialised, so the token must
    exist before any test loads the module.
    """
    if not (shutil.which("softhsm2-util") and Path(SOFTHSM_MODULE).exists()):
        pytest.skip("SoftHSM2 not installed")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label, pin = f"cityid-{secrets.token_hex(4)}", "123456"
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "654321", "--pin", pin],
        check=True,
        capture_output=True,
    )
    return label, pin


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
