"""``cityid ca`` / ``cityid cert``: JSON for scripts, clear non-zero exits on refusal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from cli import main as cityid
from db import make_engine
from db.migrate import upgrade
from idp.config import CaConfig
from tests.pki.helpers import DEVICE_ID, make_csr
from tests.pki.test_http import write_config


@pytest.fixture
def data_dir(db_url: str, ca_config: CaConfig, tmp_path: Path) -> Path:
    d = tmp_path / "data"
    write_config(d, db_url, "https://ca.test.invalid", ca_config)
    return d


def run(data_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cityid, [*args, "--data-dir", str(data_dir)])
    # stdout alone on success (warnings go to stderr); everything on failure, for the reason
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_the_admin_workflow(data_dir: Path, tmp_path: Path) -> None:
    code, out = run(data_dir, "ca", "init", "--json")
    assert code == 0 and json.loads(out)["created"] is True
    code, out = run(data_dir, "ca", "init", "--json")
    assert code == 0 and json.loads(out)["created"] is False

    csr = tmp_path / "d.csr"
    csr.write_bytes(make_csr())
    code, out = run(
        data_dir,
        "cert",
        "issue",
        "--csr",
        str(csr),
        "--profile",
        "device-auth",
        "--device-id",
        DEVICE_ID,
        "--json",
    )
    assert code == 0, out
    issued = json.loads(out)
    x509.load_pem_x509_certificate(issued["certificate_pem"].encode())

    code, out = run(data_dir, "cert", "list", "--status", "issued", "--json")
    serials = [c["serial"] for c in json.loads(out)["certificates"]]
    assert issued["serial"] in serials

    code, out = run(data_dir, "cert", "show", issued["serial"], "--json")
    assert json.loads(out)["status"] == "issued"
    code, out = run(data_dir, "cert", "revoke", issued["serial"], "--reason", "keyCompromise", "--json")
    assert code == 0 and json.loads(out)["revocation_reason"] == "keyCompromise"
    code, out = run(data_dir, "cert", "show", issued["serial"])
    assert "revoked" in out

    out_file = tmp_path / "shard.crl"
    code, out = run(data_dir, "ca", "crl", "--shard", "full", "--out", str(out_file), "--json")
    assert code == 0
    assert x509.load_der_x509_crl(out_file.read_bytes()).get_revoked_certificate_by_serial_number(
        int(issued["serial"], 16)
    )
    code, out = run(data_dir, "ca", "chain")
    assert code == 0 and out.count("BEGIN CERTIFICATE") == 2
    code, out = run(data_dir, "ca", "ocsp-signer", "rotate", "--json")
    assert code == 0 and len(json.loads(out)["serial"]) == 40


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("cert", "revoke", "ab" * 20, "--reason", "keyCompromise"), "unknown_certificate"),
        (("cert", "show", "nothex"), "unknown_certificate"),
        (("ca", "crl", "--shard", "77", "--out", "/dev/null"), "bad_request"),
    ],
)
def test_refusals_exit_1_with_a_json_error(data_dir: Path, args: tuple[str, ...], error: str) -> None:
    assert run(data_dir, "ca", "init")[0] == 0
    code, out = run(data_dir, *args, "--json")
    assert code == 1
    assert json.loads(out)["error"] == error


def test_bad_csr_exits_1_and_names_the_reason(data_dir: Path, tmp_path: Path) -> None:
    assert run(data_dir, "ca", "init")[0] == 0
    bad = tmp_path / "bad.csr"
    bad.write_bytes(b"garbage")
    code, out = run(
        data_dir, "cert", "issue", "--csr", str(bad), "--profile", "device-auth", "--device-id", DEVICE_ID
    )
    assert code == 1 and "malformed_csr" in out


def test_commands_before_init_say_so(data_dir: Path, db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    engine.dispose()
    code, out = run(data_dir, "ca", "chain")
    assert code == 1 and "ca_not_initialised" in out


def test_ca_init_warns_while_the_policy_arc_is_the_documentation_placeholder(
    db_url: str, ca_config: CaConfig, tmp_path: Path
) -> None:
    placeholder = tmp_path / "placeholder"
    write_config(placeholder, db_url, "https://ca.test.invalid", ca_config)
    result = CliRunner().invoke(cityid, ["ca", "init", "--json", "--data-dir", str(placeholder)])
    assert result.exit_code == 0 and json.loads(result.stdout)["created"] is True
    assert "ca.policy_arc is the documentation placeholder" in result.stderr


def test_ca_init_is_quiet_with_the_citys_own_policy_arc(
    db_url: str, ca_config: CaConfig, tmp_path: Path
) -> None:
    own = tmp_path / "own"
    write_config(
        own,
        db_url,
        "https://ca.test.invalid",
        dataclasses.replace(ca_config, policy_arc="1.3.6.1.4.1.99999.7"),
    )
    result = CliRunner().invoke(cityid, ["ca", "init", "--json", "--data-dir", str(own)])
    assert result.exit_code == 0 and json.loads(result.stdout)["created"] is True
    assert result.stderr == ""
