"""The CA over HTTP with a live server: openssl fetches, verifies and asks OCSP.

One real server (werkzeug, threaded) per test, configured like production from cityid.toml,
driven through the real CLI.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from werkzeug.serving import make_server

from cli import main as cityid
from idp.app import create_app
from idp.config import CaConfig, load_config
from tests.conftest import SERVER_POLL_SECONDS
from tests.pki.conftest import PASSPHRASE
from tests.pki.helpers import DEVICE_ID, make_csr, openssl, openssl_verify, write


@dataclass
class Live:
    base: str
    data_dir: Path

    def cli(self, *args: str) -> dict:
        result = CliRunner().invoke(cityid, [*args, "--data-dir", str(self.data_dir), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def get(self, path: str) -> tuple[bytes, str]:
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return r.read(), r.headers.get_content_type()


def write_config(data_dir: Path, db_url: str, issuer: str, ca: CaConfig) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "cityid.toml").write_text(
        f'database_url = "{db_url}"\nissuer = "{issuer}"\n'
        f'secret_key = "{"s" * 43}"\nkey_passphrase = "{PASSPHRASE}"\n'
        f'[ca]\ncrl_shards = {ca.crl_shards}\nkey_store = "{ca.key_store}"\n'
        f'pkcs11_module = "{ca.pkcs11_module}"\npkcs11_token_label = "{ca.pkcs11_token_label}"\n'
        f'pkcs11_pin = "{ca.pkcs11_pin}"\npolicy_arc = "{ca.policy_arc}"\n'
        # a public issuer needs where the accessibility feedback goes (BITV 2.0 §7)
        '[branding]\naccessibility_contact = "barrierefreiheit@example.de"\n',
        encoding="utf-8",
    )


@pytest.fixture
def live(db_url: str, ca_config: CaConfig, tmp_path: Path) -> Iterator[Live]:
    holder: dict = {}

    def dispatch(environ, start_response):  # the app needs the port the server got
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, dispatch, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    data_dir = tmp_path / "data"
    write_config(data_dir, db_url, base, ca_config)
    env = Live(base, data_dir)
    env.cli("ca", "init")
    holder["app"] = create_app(load_config(data_dir))
    thread = threading.Thread(target=server.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True)
    thread.start()
    try:
        yield env
    finally:
        server.shutdown()
        thread.join(5)


def _issue(live: Live, tmp: Path) -> tuple[dict, Path]:
    csr = tmp / "device.csr"
    csr.write_bytes(make_csr())
    out = live.cli("cert", "issue", "--csr", str(csr), "--profile", "device-auth", "--device-id", DEVICE_ID)
    leaf = tmp / "leaf.pem"
    leaf.write_text(out["certificate_pem"])
    return out, leaf


def _openssl_ocsp(live: Live, tmp: Path, *target: str, nonce: bool = True) -> str:
    chain, _ = live.get("/pki/chain.pem")
    issuing_pem, root_pem = chain.split(b"-----END CERTIFICATE-----\n", 1)
    issuing = write(tmp / "issuing.pem", issuing_pem + b"-----END CERTIFICATE-----\n")
    root = write(tmp / "root.pem", root_pem)
    done = openssl(
        "ocsp",
        "-issuer",
        issuing,
        *target,
        "-url",
        f"{live.base}/pki/ocsp",
        "-CAfile",
        root,
        "-verify_other",
        issuing,
        *([] if nonce else ["-no_nonce"]),
    )
    assert "Response verify OK" in done.stderr, done.stdout + done.stderr
    return done.stdout


def test_openssl_ocsp_against_the_live_responder_good_revoked_unknown(live: Live, tmp_path: Path) -> None:
    issued, leaf = _issue(live, tmp_path)
    assert f"{leaf}: good" in _openssl_ocsp(live, tmp_path, "-cert", str(leaf))
    assert f"{leaf}: good" in _openssl_ocsp(live, tmp_path, "-cert", str(leaf), nonce=False)

    live.cli("cert", "revoke", issued["serial"], "--reason", "keyCompromise")
    out = _openssl_ocsp(live, tmp_path, "-cert", str(leaf), nonce=False)  # not the cached "good"
    assert f"{leaf}: revoked" in out and "Reason: keyCompromise" in out
    assert f"{leaf}: revoked" in _openssl_ocsp(live, tmp_path, "-cert", str(leaf))


def test_openssl_ocsp_for_a_serial_never_issued_gets_unauthorized_rfc5019_2_2_3(
    live: Live, tmp_path: Path
) -> None:
    _, leaf = _issue(live, tmp_path)
    chain, _ = live.get("/pki/chain.pem")
    issuing = write(
        tmp_path / "issuing.pem",
        chain.split(b"-----END CERTIFICATE-----\n", 1)[0] + b"-----END CERTIFICATE-----\n",
    )
    foreign = "0x" + "5a" * 19
    for nonce in ([], ["-no_nonce"]):
        done = openssl(
            "ocsp", "-issuer", issuing, "-serial", foreign, "-url", f"{live.base}/pki/ocsp", *nonce
        )
        assert "Responder Error: unauthorized (6)" in done.stdout + done.stderr, done.stdout + done.stderr
    # the issued certificate next to it is answered and verifies, as before
    assert f"{leaf}: good" in _openssl_ocsp(live, tmp_path, "-cert", str(leaf))


def test_ocsp_over_get_rfc6960_appendix_a_1(live: Live, tmp_path: Path) -> None:
    _, leaf = _issue(live, tmp_path)
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    issuing = x509.load_der_x509_certificate(live.get("/pki/issuing.crt")[0])
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuing, hashes.SHA1()).build()
    encoded = base64.b64encode(req.public_bytes(serialization.Encoding.DER)).decode()
    body, ctype = live.get("/pki/ocsp/" + urllib.parse.quote(encoded, safe=""))
    assert ctype == "application/ocsp-response"
    assert ocsp.load_der_ocsp_response(body).certificate_status == ocsp.OCSPCertStatus.GOOD
    body, _ = live.get("/pki/ocsp/bm90IGFuIE9DU1AgcmVxdWVzdA==")
    assert ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_the_urls_in_the_certificate_serve_what_openssl_needs(live: Live, tmp_path: Path) -> None:
    issued, leaf = _issue(live, tmp_path)
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ca_issuers = next(d.access_location.value for d in aia if d.access_method.dotted_string.endswith(".2"))
    dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl_url = (dp[0].full_name or [])[0].value
    assert ca_issuers.startswith(live.base) and crl_url.startswith(live.base)

    issuing_der, ctype = live.get(ca_issuers.removeprefix(live.base))
    assert ctype == "application/pkix-cert"
    issuing = x509.load_der_x509_certificate(issuing_der)
    root_url = issuing.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value[0]
    root_der, _ = live.get(root_url.access_location.value.removeprefix(live.base))
    root = x509.load_der_x509_certificate(root_der)

    live.cli("cert", "revoke", issued["serial"], "--reason", "superseded")
    crl_der, ctype = live.get(crl_url.removeprefix(live.base))
    assert ctype == "application/pkix-crl"
    crl = x509.load_der_x509_crl(crl_der)
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    pem = serialization.Encoding.PEM
    done = openssl_verify(
        tmp_path,
        root.public_bytes(pem),
        issuing.public_bytes(pem),
        leaf.read_bytes(),
        [crl.public_bytes(pem)],
    )
    assert "certificate revoked" in done.stdout + done.stderr

    full, ctype = live.get("/pki/crl/full.crl")
    assert ctype == "application/pkix-crl"
    assert x509.load_der_x509_crl(full).get_revoked_certificate_by_serial_number(cert.serial_number)
    root_crl, _ = live.get("/pki/crl/root.crl")
    assert x509.load_der_x509_crl(root_crl).is_signature_valid(root.public_key())
    with pytest.raises(urllib.error.HTTPError) as missing:
        live.get("/pki/crl/99.crl")
    assert missing.value.code == 404
