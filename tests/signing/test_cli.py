"""``cityid seal init|sign`` and ``cityid signature validate``: the admin's workflow, batch
sealing, the seal key in SoftHSM2, and bad input refused with exit 2 and no state change."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import copy_into_new_writer
from sqlalchemy import func, select

from cli import main as cityid
from db import make_engine, make_session_factory
from db.audit import AuditEvent
from idp.config import CaConfig
from tests.conftest import SOFTHSM_MODULE
from tests.pki.test_http import write_config
from tests.signing.pdfs import make_pdf


def run(data_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cityid, [*args, "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def _instance(tmp_path: Path, db_url: str, ca: CaConfig) -> Path:
    data_dir = tmp_path / "data"
    write_config(data_dir, db_url, "https://ca.test.invalid", ca)
    assert run(data_dir, "ca", "init")[0] == 0
    code, out = run(
        data_dir, "seal", "init", "--subject", "CN=Stadt Musterstadt,O=Stadt Musterstadt,C=DE", "--json"
    )
    assert code == 0, out
    return data_dir


@pytest.fixture
def data_dir(tmp_path: Path, db_url: str) -> Path:
    return _instance(tmp_path, db_url, CaConfig(crl_shards=2))


def _count(db_url: str, action: str, outcome: str) -> int:
    engine = make_engine(db_url, pool=False)
    try:
        with make_session_factory(engine)() as s:
            query = select(func.count()).where(AuditEvent.action == action, AuditEvent.outcome == outcome)
            return int(s.scalar(query.select_from(AuditEvent)) or 0)
    finally:
        engine.dispose()


def test_seal_batch_then_validate_from_the_cli(data_dir: Path, tmp_path: Path, db_url: str) -> None:
    inputs = []
    for name, pages in (("bescheid-1.pdf", 1), ("bescheid-2.pdf", 5)):
        path = tmp_path / name
        path.write_bytes(make_pdf(pages))
        inputs.append(str(path))
    out_dir = tmp_path / "sealed"
    code, out = run(data_dir, "seal", "sign", *inputs, "--out-dir", str(out_dir), "--level", "B-LT", "--json")
    assert code == 0, out
    assert [Path(s["out"]).name for s in json.loads(out)["sealed"]] == ["bescheid-1.pdf", "bescheid-2.pdf"]
    assert _count(db_url, "signing.seal", "success") == 2
    code, out = run(data_dir, "signature", "validate", str(out_dir / "bescheid-2.pdf"), "--offline", "--json")
    assert code == 0, out
    (sig,) = json.loads(out)["signatures"]
    assert sig["kind"] == "seal" and sig["level"] == "B-LT" and sig["valid_then"] and sig["valid_now"] is True
    assert not sig["changed_after"] and sig["timestamp"] is not None
    assert _count(db_url, "signing.validate", "info") == 1


def test_validate_says_not_valid_with_exit_1_for_a_changed_document(data_dir: Path, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.pdf", tmp_path / "out.pdf"
    src.write_bytes(make_pdf(1))
    assert run(data_dir, "seal", "sign", str(src), "--out", str(dst), "--level", "B-T")[0] == 0
    sealed = dst.read_bytes()
    at = sealed.index(b"(Seite 1") + 7
    dst.write_bytes(sealed[:at] + b"9" + sealed[at + 1 :])
    code, out = run(data_dir, "signature", "validate", str(dst), "--offline")
    assert code == 1 and "BROKEN" in out and "NOT VALID" in out


def _encrypted() -> bytes:
    writer = copy_into_new_writer(PdfFileReader(io.BytesIO(make_pdf(1))))
    writer.encrypt("owner-secret", "user-secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _broken_xref() -> bytes:
    pdf = make_pdf(1)
    at = pdf.index(b"startxref")
    return pdf[:at] + b"startxref\n999999\n%%EOF\n"


BAD_INPUTS = {
    "not-a-pdf": (lambda: b"GIF89a this is an image, not a document", "not_a_pdf"),
    "encrypted": (_encrypted, "encrypted_pdf"),
    "broken-xref": (_broken_xref, "broken_pdf"),
    "empty": (lambda: b"", "empty_document"),
    "over-20-MiB": (lambda: b"%PDF-1.7\n" + b"0" * (20 * 1024 * 1024), "document_too_large"),
}


@pytest.mark.parametrize("which", list(BAD_INPUTS))
def test_bad_input_to_seal_sign_exits_2_and_changes_nothing(
    data_dir: Path, tmp_path: Path, db_url: str, which: str
) -> None:
    make, code_expected = BAD_INPUTS[which]
    good, bad = tmp_path / "good.pdf", tmp_path / "bad.pdf"
    good.write_bytes(make_pdf(1))
    bad.write_bytes(make())
    out_dir = tmp_path / "out"
    # a batch with one bad file: refused as a whole, before anything is sealed
    code, out = run(data_dir, "seal", "sign", str(good), str(bad), "--out-dir", str(out_dir), "--json")
    assert code == 2, out
    assert json.loads(out)["error"] == code_expected
    assert not out_dir.exists() or not any(out_dir.iterdir())
    assert _count(db_url, "signing.seal", "success") == 0
    assert _count(db_url, "signing.seal", "denied") == 1  # the refusal is audited (by hash)


def test_validating_a_file_that_is_not_a_pdf_exits_2(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(b"<html>not a pdf</html>")
    code, out = run(data_dir, "signature", "validate", str(path), "--json")
    assert code == 2 and json.loads(out)["error"] == "not_a_pdf"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--level", "B-LTA"], id="fail/unknown-level"),
        pytest.param(["--visible", "1,2,3"], id="fail/visible-not-five-numbers"),
        pytest.param(["--visible", "9,50,50,100,40"], id="fail/visible-page-beyond-the-document"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(data_dir: Path, tmp_path: Path, args: list[str]) -> None:
    src, dst = tmp_path / "in.pdf", tmp_path / "out.pdf"
    src.write_bytes(make_pdf(1))
    code, out = run(data_dir, "seal", "sign", str(src), "--out", str(dst), *args)
    assert code == 2, out
    assert not dst.exists()


def test_the_seal_key_lives_in_softhsm2_when_pkcs11_is_configured(
    tmp_path: Path, db_url: str, softhsm_token: tuple[str, str]
) -> None:
    label, pin = softhsm_token
    ca = CaConfig(
        crl_shards=2,
        key_store="pkcs11",
        pkcs11_module=SOFTHSM_MODULE,
        pkcs11_token_label=label,
        pkcs11_pin=pin,
    )
    data_dir = _instance(tmp_path, db_url, ca)
    code, out = run(data_dir, "seal", "init", "--json")  # a second seal: a new key, in the token
    assert code == 0, out
    assert json.loads(out)["key_ref"].startswith("pkcs11:seal-")
    assert not (data_dir / "ca-keys").exists()  # no key file at all
    src, dst = tmp_path / "in.pdf", tmp_path / "out.pdf"
    src.write_bytes(make_pdf(1))
    assert run(data_dir, "seal", "sign", str(src), "--out", str(dst))[0] == 0
    code, out = run(data_dir, "signature", "validate", str(dst), "--offline", "--json")
    assert code == 0, out


def test_a_seal_revoked_after_sealing_still_validates_as_made_before_and_is_not_valid_now(
    data_dir: Path, tmp_path: Path
) -> None:
    src, dst = tmp_path / "in.pdf", tmp_path / "out.pdf"
    src.write_bytes(make_pdf(1))
    assert run(data_dir, "seal", "sign", str(src), "--out", str(dst))[0] == 0  # B-LT
    code, out = run(data_dir, "cert", "list", "--profile", "document-seal", "--json")
    serial = json.loads(out)["certificates"][0]["serial"]
    assert run(data_dir, "cert", "revoke", serial, "--reason", "keyCompromise")[0] == 0
    code, out = run(data_dir, "signature", "validate", str(dst), "--offline", "--json")
    assert code == 0, out  # the time-stamp proves the seal was made before the revocation
    (sig,) = json.loads(out)["signatures"]
    assert sig["valid_then"] is True and sig["valid_now"] is False and not sig["revoked"]
    code, out = run(data_dir, "seal", "sign", str(src), "--out", str(tmp_path / "again.pdf"), "--json")
    assert code == 1 and json.loads(out)["error"] == "seal_not_valid"  # no new seals with it
    assert not (tmp_path / "again.pdf").exists()
