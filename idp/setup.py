"""Instance set-up: data dir, secrets, config file, migrations, keys. Idempotent."""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path

from db import make_engine, make_session_factory, transaction
from db.migrate import upgrade
from idp import keys
from idp.config import Config, issuer_problem, load_config
from idp.instance import SecretMismatch, check_secrets

TEMPLATE = """# cityid configuration. Every key can be overridden by CITYID_<KEY> environment variables.
issuer = "{issuer}"
# Secrets: keep this file readable only by the cityid service user.
secret_key = "{secret_key}"
key_passphrase = "{key_passphrase}"
# database_url = "postgresql+psycopg://cityid@db.example/cityid"

[smtp]
# host = "mail.example.org"   # empty: mails are written to <data dir>/outbox
# port = 587
# starttls = true             # port 587; or implicit_tls = true with port 465
# username = "cityid"         # sent only over TLS
# password = "..."
# ca_file = "/etc/cityid/mail-ca.pem"   # the relay's CA if not in the system's trust store

[branding]
city_name = "Musterstadt"
"""


def init_instance(data_dir: Path, *, issuer: str | None = None) -> Config:
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    toml = data_dir / "cityid.toml"
    created = not toml.exists()
    if created:
        toml.write_text(
            TEMPLATE.format(
                issuer=issuer or "http://127.0.0.1:8000",
                secret_key=secrets.token_urlsafe(32),
                key_passphrase=secrets.token_urlsafe(32),
            ),
            encoding="utf-8",
        )
        os.chmod(toml, 0o600)
    cfg = load_config(data_dir)
    if issuer and cfg.issuer != issuer:
        cfg = dataclasses.replace(cfg, issuer=issuer)
    problem = issuer_problem(cfg.issuer)
    if problem is not None:  # before the database is touched
        raise ValueError(f"{problem} (set `issuer` in {data_dir / 'cityid.toml'})")
    engine = make_engine(cfg.db_url)
    upgrade(engine)
    try:
        with transaction(make_session_factory(engine)) as s:
            check_secrets(s, cfg, record=True)
            keys.ensure_keys(s, cfg.key_passphrase or cfg.secret_key)
    except SecretMismatch:
        if created:  # fresh secrets for a database that has its own: leave no such file behind
            toml.unlink()
        raise
    finally:
        engine.dispose()
    return cfg
