"""Issue 19: `cityid backup` and `cityid restore`. A restore into a fresh data dir (and, on
PostgreSQL, a fresh database) carries on: logins, tokens, OCSP, CRL and the audit chain work, and
nothing issued before the backup is missing."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import text

from cli import main as cityid
from idp.app import create_app
from idp.config import CaConfig, load_config
from tests.conftest import _pg_admin, _pg_url_for
from tests.idp.conftest import csrf
from tests.pki.helpers import DEVICE_ID, make_csr
from tests.pki.test_http import write_config

PASSWORD = "correct horse battery staple"


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(cityid, [*args, "--data-dir", str(data_dir), "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def restore_url(db_url: str) -> Iterator[str]:
    """Where a restore goes: on PostgreSQL a new, empty database; on SQLite the data dir."""
    if not db_url.startswith("postgresql"):
        yield ""
        return
    name = f"cityid_r_{secrets.token_hex(6)}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_url_for(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _login(http: Any) -> Any:
    page = http.get("/login")
    return http.post(
        "/login",
        data={
            "csrf_token": csrf(page.get_data(as_text=True)),
            "email": "anna@example.org",
            "password": PASSWORD,
        },
    )


def _ocsp_status(http: Any, cert: x509.Certificate, issuer: x509.Certificate) -> Any:
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    r = http.post(
        "/pki/ocsp",
        data=req.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
    )
    assert r.status_code == 200
    return ocsp.load_der_ocsp_response(r.get_data()).certificate_status


def test_a_restored_backup_serves_everything_issued_before_it(
    db_url: str, restore_url: str, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    write_config(old, db_url, "http://127.0.0.1:8000", CaConfig(crl_shards=4))
    cli(old, "init")
    cli(
        old,
        "user",
        "add",
        "--email",
        "anna@example.org",
        "--verified",
        env={"CITYID_NEW_USER_PASSWORD": PASSWORD},
    )
    client = cli(
        old, "client", "add", "--name", "Fahrplan", "--grant-type", "client_credentials", "--scope", "read"
    )
    basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    csr = tmp_path / "d.csr"
    csr.write_bytes(make_csr())
    issued = cli(
        old, "cert", "issue", "--csr", str(csr), "--profile", "device-auth", "--device-id", DEVICE_ID
    )
    chain = [
        x509.load_pem_x509_certificate(c)
        for c in _pem_blocks(CliRunner().invoke(cityid, ["ca", "chain", "--data-dir", str(old)]).stdout)
    ]
    before = create_app(load_config(old)).test_client()
    token = before.post(
        "/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    ).get_json()["access_token"]

    archive = tmp_path / "cityid.backup"
    made = cli(old, "backup", "--out", str(archive))
    assert archive.stat().st_mode & 0o777 == 0o600

    new = tmp_path / "new"
    restored = cli(new, "restore", str(archive), *(["--database-url", restore_url] if restore_url else []))
    assert restored["audit_last_seq"] >= made["audit_last_seq"]
    if restore_url:  # the restored instance uses the new database
        assert load_config(new).db_url == restore_url
    check = cli(new, "audit", "verify", "--anchor", f"{made['audit_last_seq']}:{made['audit_last_hash']}")
    assert check["ok"]

    http = create_app(load_config(new)).test_client()
    assert _login(http).status_code in (302, 303)  # the citizen's password
    again = http.post(
        "/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert again.status_code == 200  # the client's secret, the token signing keys
    intro = http.post("/introspect", data={"token": token}, headers={"Authorization": f"Basic {basic}"})
    assert intro.get_json()["active"] is True  # a token issued before the backup
    leaf = x509.load_pem_x509_certificate(issued["certificate_pem"].encode())
    assert _ocsp_status(http, leaf, chain[0]) == ocsp.OCSPCertStatus.GOOD
    crl = x509.load_der_x509_crl(http.get("/pki/crl/full.crl").get_data())
    assert crl.is_signature_valid(chain[0].public_key())
    serials = [c["serial"] for c in cli(new, "cert", "list", "--json")["certificates"]]
    assert issued["serial"] in serials
    # revocation works on the restored CA (its keys came along)
    cli(new, "cert", "revoke", issued["serial"], "--reason", "keyCompromise")
    assert _ocsp_status(http, leaf, chain[0]) == ocsp.OCSPCertStatus.REVOKED


def _pem_blocks(text_: str) -> list[bytes]:
    marker = "-----END CERTIFICATE-----"
    return [(b + marker).strip().encode() for b in text_.split(marker) if "BEGIN CERTIFICATE" in b]


def test_restore_refuses_a_data_dir_in_use_and_a_damaged_archive(db_url: str, tmp_path: Path) -> None:
    old = tmp_path / "old"
    write_config(old, db_url, "http://127.0.0.1:8000", CaConfig(crl_shards=4))
    cli(old, "init")
    archive = tmp_path / "b.tar"
    cli(old, "backup", "--out", str(archive))
    r = CliRunner().invoke(cityid, ["restore", str(archive), "--data-dir", str(old), "--json"])
    assert r.exit_code == 2 and "not empty" in json.loads(r.stdout)["error"]
    raw = bytearray(archive.read_bytes())
    raw[-20000] ^= 0xFF  # a flipped byte inside a file's content
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(raw))
    r = CliRunner().invoke(cityid, ["restore", str(damaged), "--data-dir", str(tmp_path / "n2"), "--json"])
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "n2").exists()  # nothing half-restored is left


def test_the_database_password_is_not_on_the_pg_dump_command_line() -> None:
    """Secrets stay off command lines (readable by every local user through ps / /proc): the
    PostgreSQL tools get the password as PGPASSWORD in their environment (libpq §34.15)."""
    from idp import backup

    dsn, env = backup._libpq("postgresql+psycopg://cityid:s3cret%2Fpw@db.example:5432/cityid?sslmode=require")
    assert "s3cret" not in dsn
    assert dsn == "postgresql://cityid@db.example:5432/cityid?sslmode=require"
    assert env["PGPASSWORD"] == "s3cret/pw"
    dsn, _env = backup._libpq("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert dsn == "postgresql://postgres@127.0.0.1:5432/test"
