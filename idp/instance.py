"""Per-instance derived keys, built once from the config's secrets."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.config import Config, ConfigError
from idp.crypto import Sealer, derive_key, equal, keyed_digest


@dataclass(frozen=True)
class InstanceKeys:
    email_index: bytes  # blind index of e-mail addresses
    client_secret: bytes  # keyed digests of client secrets
    token: bytes  # keyed digests of codes, refresh tokens, session cookies, e-mail links
    subject: bytes  # pairwise subject identifiers
    csrf: bytes
    personal_data: Sealer  # encrypts personal data at rest
    token_answer: Sealer  # encrypts a refresh's token answer for its grace window

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
            token_answer=Sealer(derive_key(cfg.key_passphrase or s, "refresh-token-answer")),
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


class SecretMismatch(ConfigError):
    """The configuration's secrets are not the ones this database was set up with."""


def _checks(cfg: Config) -> tuple[str, str]:
    constant = "cityid instance check"
    return (
        keyed_digest(derive_key(cfg.secret_key, "instance-check"), constant),
        keyed_digest(derive_key(cfg.key_passphrase or cfg.secret_key, "instance-check"), constant),
    )


def check_secrets(session: Session, cfg: Config, *, record: bool = False) -> None:
    """Raise SecretMismatch unless ``cfg``'s secrets are this database's. ``record``: a database
    without check values (new, or set up before them) takes ``cfg``'s (`init` and `serve`)."""
    from idp.models import InstanceCheck

    secret, passphrase = _checks(cfg)
    row = session.get(InstanceCheck, 1)
    if row is None:
        if not record:
            return
        try:  # two `serve` starting at once on an older instance: one row wins, the other compares
            with session.begin_nested():
                session.add(InstanceCheck(id=1, secret_check=secret, passphrase_check=passphrase))
        except IntegrityError:
            row = session.get(InstanceCheck, 1, populate_existing=True)
        if row is None:
            return
    for name, stored, given in (
        ("secret_key", row.secret_check, secret),
        ("key_passphrase", row.passphrase_check, passphrase),
    ):
        if not equal(stored, given):
            raise SecretMismatch(
                f"{name} is not the one this database was set up with: use the instance's own "
                "cityid.toml (secrets cannot be changed; data written with another would be lost)"
            )
