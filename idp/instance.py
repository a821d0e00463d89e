"""Per-instance derived keys, built once from the config's secrets."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from idp.config import Config
from idp.crypto import Sealer, derive_key, keyed_digest


@dataclass(frozen=True)
class InstanceKeys:
    email_index: bytes  # blind index of e-mail addresses
    client_secret: bytes  # keyed digests of client secrets
    token: bytes  # keyed digests of codes, refresh tokens, session cookies, e-mail links
    subject: bytes  # pairwise subject identifiers
    csrf: bytes
    personal_data: Sealer  # encrypts personal data at rest

    @classmethod
    def from_config(cls, cfg: Config) -> InstanceKeys:
        s = cfg.secret_key
        return cls(
            email_index=derive_key(s, "email-blind-index"),
            client_secret=derive_key(s, "client-secret"),
            token=derive_key(s, "token-digest"),
            subject=derive_key(s, "pairwise-subject"),
            csrf=derive_key(s, "csrf"),
            personal_data=Sealer(derive_key(cfg.key_passphrase or s, "personal-data")),
        )

    def email_lookup(self, email: str) -> str:
        return keyed_digest(self.email_index, normalise_email(email))

    def token_digest(self, token: str) -> str:
        return keyed_digest(self.token, token)

    def secret_digest(self, secret: str) -> str:
        return keyed_digest(self.client_secret, secret)


def normalise_email(email: str) -> str:
    # NFC: "ü" typed as u + combining diaeresis is the same address as the precomposed one
    return unicodedata.normalize("NFC", email.strip()).lower()
