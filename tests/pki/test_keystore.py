"""Key stores: encrypted files and PKCS#11 (SoftHSM2); the CA key never leaves the store."""

from __future__ import annotations

from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

import pki
from idp.config import CaConfig
from pki.errors import KeyStoreError
from pki.keystore import FileKeyStore
from pki.pkcs11_store import HsmEcPrivateKey
from tests.pki.conftest import PASSPHRASE


def test_signatures_verify_and_are_der_ecdsa_sig_value_rfc5480_2_2_3(
    key_store: pki.KeyStore,
) -> None:
    ref = key_store.generate("sign-test")
    signer = key_store.signer(ref)
    for _ in range(5):
        sig = signer.sign(b"message", ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(sig)  # DER SEQUENCE { r, s }
        assert r > 0 and s > 0
        signer.public_key().verify(sig, b"message", ec.ECDSA(hashes.SHA256()))
    assert isinstance(signer.curve, ec.SECP256R1)


def test_file_keys_are_encrypted_pkcs8_with_owner_only_permissions(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys", PASSPHRASE)
    ref = store.generate("root-test")
    path = tmp_path / "keys" / "root-test.p8.pem"
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(KeyStoreError):
        FileKeyStore(tmp_path / "keys", "wrong passphrase").signer(ref)
    with pytest.raises(KeyStoreError):
        FileKeyStore(tmp_path / "keys", "")
    assert PASSPHRASE not in repr(store)


def test_a_moved_root_key_is_reported_not_crashed(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys", PASSPHRASE)
    ref = store.generate("root-offline")
    (tmp_path / "keys" / "root-offline.p8.pem").rename(tmp_path / "offline.pem")
    with pytest.raises(KeyStoreError, match="moved offline"):
        FileKeyStore(tmp_path / "keys", PASSPHRASE).signer(ref)


@pytest.mark.parametrize("label", ["../etc/passwd", "UPPER", "", "a" * 100])
def test_key_labels_cannot_escape_the_store(label: str, tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError):
        FileKeyStore(tmp_path, PASSPHRASE).generate(label)


def test_pkcs11_key_is_sensitive_and_not_extractable(softhsm_token: tuple[str, str]) -> None:
    label, pin = softhsm_token
    cfg = CaConfig(key_store="pkcs11", pkcs11_token_label=label, pkcs11_pin=pin)
    store = pki.open_key_store(cfg, Path("/nonexistent"), "")
    ref = store.generate("hsm-extract-test")
    signer = store.signer(ref)
    assert isinstance(signer, HsmEcPrivateKey)
    with pytest.raises(KeyStoreError):
        signer.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(KeyStoreError):
        signer.private_numbers()
    key = signer._key  # the token's own view of the object
    assert key[pkcs11.Attribute.SENSITIVE] is True
    assert key[pkcs11.Attribute.EXTRACTABLE] is False


def test_pkcs11_wrong_pin_is_a_key_store_error(softhsm_token: tuple[str, str]) -> None:
    label, _ = softhsm_token
    cfg = CaConfig(key_store="pkcs11", pkcs11_token_label=label + "-missing", pkcs11_pin="0000")
    with pytest.raises(KeyStoreError):
        pki.open_key_store(cfg, Path("/nonexistent"), "")
