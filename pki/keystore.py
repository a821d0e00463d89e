"""Where the CA's private keys live: one ``KeyStore`` protocol, two stores.

A *signer* is any ``ec.EllipticCurvePrivateKey``: for the file store the decrypted key itself,
for PKCS#11 a proxy whose ``sign()`` asks the HSM (``pki/pkcs11_store.py``). cryptography's
certificate, CRL and OCSP builders accept either, so no code above this module knows where a
key lives.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki.errors import KeyStoreError

Signer = ec.EllipticCurvePrivateKey

_LABEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,80}$")


class KeyStore(Protocol):
    def generate(self, label: str) -> str:
        """Create a new ECDSA P-256 key inside the store; return its reference."""
        ...

    def signer(self, key_ref: str) -> Signer:
        """The signing object for a key reference; the key material stays in the store."""
        ...


class KeyStoreSettings(Protocol):
    """The part of the CA configuration that picks a key store (``idp.config.CaConfig``)."""

    @property
    def key_store(self) -> str: ...
    @property
    def pkcs11_module(self) -> str: ...
    @property
    def pkcs11_token_label(self) -> str: ...
    @property
    def pkcs11_pin(self) -> str: ...


def check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise KeyStoreError(f"bad key label {label!r}")
    return label


class FileKeyStore:
    """Encrypted PKCS#8 PEM files (PBES2/AES-256) in one directory, mode 0600.

    The root key's file may be moved offline after ``cityid ca init``; only re-certifying the
    issuing CA and signing the root's ARL need it.
    """

    def __init__(self, directory: Path, passphrase: str) -> None:
        if not passphrase:
            raise KeyStoreError("the file key store needs a passphrase (key_passphrase)")
        self._dir = directory
        self._passphrase = passphrase.encode()
        self._loaded: dict[str, Signer] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the passphrase
        return f"FileKeyStore({str(self._dir)!r})"

    def _path(self, key_ref: str) -> Path:
        prefix, _, label = key_ref.partition(":")
        if prefix != "file":
            raise KeyStoreError(f"not a file key reference: {key_ref!r}")
        return self._dir / f"{check_label(label)}.p8.pem"

    def generate(self, label: str) -> str:
        key_ref = f"file:{check_label(label)}"
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(key_ref)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise KeyStoreError(f"key {label!r} exists already") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        with self._lock:
            self._loaded[key_ref] = key
        return key_ref

    def signer(self, key_ref: str) -> Signer:
        with self._lock:
            cached = self._loaded.get(key_ref)
        if cached is not None:
            return cached
        path = self._path(key_ref)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise KeyStoreError(f"key file for {key_ref!r} not found (moved offline?)") from exc
        try:
            key = serialization.load_pem_private_key(data, password=self._passphrase)
        except (ValueError, TypeError) as exc:
            raise KeyStoreError(f"cannot decrypt {key_ref!r}: wrong passphrase?") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyStoreError(f"{key_ref!r} is not an EC key")
        with self._lock:
            self._loaded[key_ref] = key
        return key


def open_key_store(settings: KeyStoreSettings, data_dir: Path, passphrase: str) -> KeyStore:
    """The key store the configuration names (``ca.key_store``: ``file`` or ``pkcs11``)."""
    if settings.key_store == "file":
        return FileKeyStore(data_dir / "ca-keys", passphrase)
    if settings.key_store == "pkcs11":
        from pki.pkcs11_store import Pkcs11KeyStore

        return Pkcs11KeyStore(settings.pkcs11_module, settings.pkcs11_token_label, settings.pkcs11_pin)
    raise KeyStoreError(f"unknown key store {settings.key_store!r}")
