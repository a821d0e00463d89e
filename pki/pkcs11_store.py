"""PKCS#11 key store (an HSM; SoftHSM2 in tests) through python-pkcs11.

Keys are generated on the token as sensitive and non-extractable. ``HsmEcPrivateKey`` is an
``ec.EllipticCurvePrivateKey`` whose ``sign()`` hashes the data here and has the token sign the
digest with CKM_ECDSA; the raw ``r || s`` (PKCS#11 v2.40 §2.3.1) is re-encoded as the DER
``ECDSA-Sig-Value`` that X.509 uses (RFC 5480 §2.2.3 / RFC 3279 §2.2.3).
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn

import pkcs11
from cryptography import utils as crypto_utils
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from pki.errors import KeyStoreError
from pki.keystore import Signer, check_label


class HsmEcPrivateKey(ec.EllipticCurvePrivateKey):
    """A P-256 private key that lives in a token; only ``sign`` and ``public_key`` work."""

    def __init__(self, key: Any, public: ec.EllipticCurvePublicKey, lock: threading.Lock) -> None:
        self._key = key
        self._public = public
        self._lock = lock

    def sign(
        self, data: crypto_utils.Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm
    ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise KeyStoreError("only ECDSA signatures")
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, utils.Prehashed):
            digest = bytes(data)
        else:
            h = hashes.Hash(algorithm)
            h.update(bytes(data))
            digest = h.finalize()
        with self._lock:  # a PKCS#11 session is not thread-safe
            raw = self._key.sign(digest, mechanism=Mechanism.ECDSA)
        half = len(raw) // 2
        r = int.from_bytes(raw[:half], "big")
        s = int.from_bytes(raw[half:], "big")
        return utils.encode_dss_signature(r, s)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        self._refuse()

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        self._refuse()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        self._refuse()

    def __copy__(self) -> HsmEcPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> HsmEcPrivateKey:
        return self

    def _refuse(self) -> NoReturn:
        raise KeyStoreError("the key never leaves the HSM")


class Pkcs11KeyStore:
    """Keys on one token, found by label; one logged-in session per store object."""

    def __init__(self, module: str, token_label: str, pin: str) -> None:
        try:
            lib = pkcs11.lib(module)
            token = lib.get_token(token_label=token_label)
            try:
                self._session = token.open(user_pin=pin, rw=True)
            except pkcs11.UserAlreadyLoggedIn:
                # PKCS#11 §5.6: login is per application; a second session shares it
                self._session = token.open(rw=True)
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise KeyStoreError(f"cannot open PKCS#11 token {token_label!r}: {type(exc).__name__}") from exc
        self._lock = threading.Lock()
        self._signers: dict[str, Signer] = {}

    def __repr__(self) -> str:  # never show the PIN
        return "Pkcs11KeyStore()"

    def generate(self, label: str) -> str:
        check_label(label)
        with self._lock:
            params = self._session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True,
            )
            params.generate_keypair(
                store=True,
                label=label,
                id=label.encode(),
                private_template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                },
            )
        return f"pkcs11:{label}"

    def signer(self, key_ref: str) -> Signer:
        prefix, _, label = key_ref.partition(":")
        if prefix != "pkcs11":
            raise KeyStoreError(f"not a PKCS#11 key reference: {key_ref!r}")
        cached = self._signers.get(key_ref)
        if cached is not None:
            return cached
        with self._lock:
            try:
                priv = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
                pub = self._session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
            except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned) as exc:
                raise KeyStoreError(f"no single key {label!r} on the token") from exc
            if not isinstance(pub, pkcs11.PublicKey):
                raise KeyStoreError(f"{label!r} has no public key object")
            spki = encode_ec_public_key(pub)
        public = serialization.load_der_public_key(spki)
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise KeyStoreError(f"{key_ref!r} is not an EC key")
        signer = HsmEcPrivateKey(priv, public, self._lock)
        self._signers[key_ref] = signer
        return signer
