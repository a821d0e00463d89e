"""Mail to a real relay over TLS: implicit TLS on port 465 (RFC 8314 §3.3), STARTTLS on 587
(RFC 3207), the relay's certificate checked against the system's or the city's own CA, and the
SMTP password never sent over an unencrypted connection (RFC 8314 §3, RFC 4954 §4).

The relays are aiosmtpd servers with certificates from a CA made for the test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from idp.config import Config, SmtpConfig, smtp_problem
from idp.mail import MailError, send
from tests.idp.conftest import _Inbox, free_port

USER, PASSWORD = "cityid", "relay-secret"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_and_server_cert(tmp: Path, label: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 that it signed: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} mail CA"))
        .issuer_name(_name(f"{label} mail CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp / f"{label}-ca.pem", tmp / f"{label}-cert.pem", tmp / f"{label}-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class _Logins:
    """The relay's authenticator: remembers each login and whether it came over TLS. The relay
    itself would take a login in clear (auth_require_tls=False): cityid must not offer one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        self.seen.append((mechanism, server.transport.get_extra_info("ssl_object") is not None))
        return AuthResult(success=ok, handled=False)


@dataclasses.dataclass
class Relay:
    port: int
    inbox: _Inbox
    logins: _Logins


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Any]:
    controllers: list[Controller] = []

    def start(cert: Path, key: Path, *, implicit: bool) -> Relay:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        inbox, logins, port = _Inbox(), _Logins(), free_port()
        tls: dict[str, Any] = (
            {"ssl_context": ctx} if implicit else {"tls_context": ctx, "require_starttls": True}
        )
        ctl = Controller(
            inbox, hostname="127.0.0.1", port=port, authenticator=logins, auth_require_tls=False, **tls
        )
        ctl.start()
        controllers.append(ctl)
        return Relay(port, inbox, logins)

    yield start
    for ctl in controllers:
        ctl.stop()


def _config(tmp_path: Path, **smtp: Any) -> Config:
    base = {"host": "127.0.0.1", "username": USER, "password": PASSWORD, "timeout_seconds": 5}
    return Config(data_dir=tmp_path, smtp=SmtpConfig(**{**base, **smtp}))


def test_implicit_tls_rfc8314_delivers_and_logs_in_only_inside_tls(tmp_path: Path, relay: Any) -> None:
    ca, cert, key = _ca_and_server_cert(tmp_path, "city")
    r = relay(cert, key, implicit=True)
    cfg = _config(tmp_path, port=r.port, implicit_tls=True, ca_file=str(ca))
    assert smtp_problem(cfg.smtp) is None
    send(cfg, "anna@example.org", "Hallo", "Ihr Link")
    assert r.inbox.wait_for("anna@example.org")["Subject"] == "Hallo"
    assert r.logins.seen and all(over_tls for _, over_tls in r.logins.seen)


def test_starttls_rfc3207_with_the_citys_own_ca(tmp_path: Path, relay: Any) -> None:
    ca, cert, key = _ca_and_server_cert(tmp_path, "city")
    r = relay(cert, key, implicit=False)
    send(_config(tmp_path, port=r.port, starttls=True, ca_file=str(ca)), "ben@example.org", "Hallo", "x")
    assert r.inbox.wait_for("ben@example.org")["To"] == "ben@example.org"
    assert r.logins.seen and all(over_tls for _, over_tls in r.logins.seen)


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit_tls", "starttls"])
def test_a_relay_certificate_from_an_untrusted_ca_gets_neither_password_nor_mail_rfc8314_4_1(
    tmp_path: Path, relay: Any, implicit: bool
) -> None:
    trusted, _, _ = _ca_and_server_cert(tmp_path, "city")
    _, cert, key = _ca_and_server_cert(tmp_path, "impostor")
    r = relay(cert, key, implicit=implicit)
    tls = {"implicit_tls": True} if implicit else {"starttls": True}
    cfg = _config(tmp_path, port=r.port, ca_file=str(trusted), **tls)
    with pytest.raises(MailError, match="CERTIFICATE_VERIFY_FAILED"):
        send(cfg, "anna@example.org", "Hallo", "x")
    assert r.logins.seen == [] and r.inbox.messages == []


def test_a_relay_without_starttls_gets_no_mail_in_clear_rfc3207(tmp_path: Path, smtp_server: Any) -> None:
    inbox, port = smtp_server  # plain SMTP, no STARTTLS offered
    cfg = _config(tmp_path, port=port, starttls=True, username="", password="")
    with pytest.raises(MailError, match="STARTTLS"):
        send(cfg, "anna@example.org", "Hallo", "x")
    assert inbox.messages == []


@pytest.mark.parametrize(
    ("smtp", "problem"),
    [
        ({"host": "mail.example.org", "username": "u", "password": "p"}, "unencrypted"),
        ({"host": "192.0.2.25", "port": 25, "username": "u", "password": "p"}, "unencrypted"),
        ({"host": "mail.example.org", "starttls": True, "implicit_tls": True}, "exclusive"),
        ({"host": "mail.example.org", "starttls": True, "ca_file": "/nonexistent.pem"}, "ca_file"),
    ],
)
def test_an_smtp_password_is_never_sent_unencrypted_rfc8314_3(
    tmp_path: Path, smtp: dict[str, Any], problem: str
) -> None:
    cfg = Config(data_dir=tmp_path, smtp=SmtpConfig(**smtp))
    assert problem in (smtp_problem(cfg.smtp) or "")
    with pytest.raises(MailError, match=problem):  # refused before any connection is made
        send(cfg, "anna@example.org", "Hallo", "x")


@pytest.mark.parametrize(
    "smtp",
    [
        {},  # development: .eml files
        {"host": "mail.example.org"},  # a relay that takes mail from this machine without a login
        {"host": "127.0.0.1", "username": "u", "password": "p"},  # a relay on this machine
        {"host": "mail.example.org", "username": "u", "password": "p", "starttls": True},
        {"host": "mail.example.org", "port": 465, "username": "u", "password": "p", "implicit_tls": True},
    ],
)
def test_usual_mail_setups_are_accepted(smtp: dict[str, Any]) -> None:
    assert smtp_problem(SmtpConfig(**smtp)) is None


def test_cityid_serve_refuses_to_send_the_smtp_password_in_clear(tmp_path: Path) -> None:
    from tests.idp.test_processes import cityid, write_config

    data = tmp_path / "data"
    write_config(data, f"sqlite:///{tmp_path / 'db.sqlite3'}", "http://127.0.0.1:8000")
    cityid(data, "init")
    env = {"CITYID_SMTP_HOST": "mail.example.org", "CITYID_SMTP_USERNAME": "u", "CITYID_SMTP_PASSWORD": "p"}
    res = cityid(data, "serve", check=False, env=env)
    assert res.returncode == 2 and "implicit_tls" in res.stderr, res.stderr
