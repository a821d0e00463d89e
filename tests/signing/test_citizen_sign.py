"""A citizen signs a service's PDF with the device key: request, device shows and signs,
cityid finishes, the service fetches once; pyHanko and pdfsig accept the result."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.dss import DocumentSecurityStore

from tests.signing.citizen_helpers import (
    SERVICE,
    as_json,
    make_pdf,
    pdfsig,
    request_rows,
    root_pem,
    signer_setup,
)
from tests.smartcard.conftest import World, idp_factory, world

__all__ = ["idp_factory", "world"]


def pyhanko_lt_status(pdf: bytes, root: bytes, *, at: dt.datetime | None = None) -> Any:
    """pyHanko's validation from what the file carries (its DSS: chain, OCSP, CRL), revocation
    required (hard-fail), nothing fetched: as an office would check the file later, offline.
    ``at``: the validation time (the signature's time-stamp, for a certificate revoked since)."""
    reader = PdfFileReader(io.BytesIO(pdf))
    (sig,) = reader.embedded_signatures
    der = x509.load_pem_x509_certificate(root).public_bytes(serialization.Encoding.DER)
    kwargs: dict[str, Any] = {
        "trust_roots": [asn1_x509.Certificate.load(der)],
        "allow_fetching": False,
        "revocation_mode": "hard-fail",
    }
    if at is not None:
        kwargs["moment"] = at
    vc = DocumentSecurityStore.read_dss(reader).as_validation_context(kwargs)
    return validate_pdf_signature(sig, vc)


def test_citizen_signs_pdf_on_device_and_service_fetches_it_once_wysiwys(
    world: World, tmp_path: Path
) -> None:
    service, _browser, device = signer_setup(world, "erika@example.org")
    pdf = make_pdf("Antrag auf Bewohnerparkausweis", pages=3)
    r = service.post_pdf(pdf)  # default: PAdES B-LT
    assert r.status_code == 201, r.text
    created = as_json(r)
    assert created["status"] == "pending" and created["level"] == "B-LT"
    assert created["document"] == {
        "title": "Antrag auf Bewohnerparkausweis",
        "pages": 3,
        "sha256": hashlib.sha256(pdf).hexdigest(),
    }
    assert len(created["id"]) >= 22  # 128 random bits, base64url
    assert service.fetch(created["id"]).status_code == 202  # not signed yet

    # what the device shows: title, pages, hash, the service's name
    (item,) = device.signature_requests()
    assert (item["title"], item["pages"], item["document_sha256"], item["service_name"]) == (
        "Antrag auf Bewohnerparkausweis",
        3,
        hashlib.sha256(pdf).hexdigest(),
        SERVICE,
    )
    assert device.sign_document(item) == {"status": "signed"}
    assert world.audit("signature.approve", "success")

    got = service.fetch(created["id"])
    assert got.status_code == 200 and got.headers["Content-Type"] == "application/pdf"
    signed = got.content
    assert signed.startswith(pdf)  # an incremental update: the original bytes stay as they were
    status = pyhanko_lt_status(signed, root_pem(world))
    assert status.bottom_line, status.pretty_print_details()
    assert status.timestamp_validity is not None and status.timestamp_validity.trusted  # B-T
    out = tmp_path / "signed.pdf"
    out.write_bytes(signed)
    report = pdfsig(out, root_pem(world), tmp_path)
    assert "Signature is Valid" in report and "Certificate is Trusted" in report, report

    # fetched once: nothing of the document is kept
    (row,) = request_rows(world)
    assert row["state"] == "fetched"
    assert row["document"] is None and row["signed_pdf"] is None and row["prepared_state"] is None
    again = service.fetch(created["id"])
    assert again.status_code == 410 and as_json(again)["error"] == "gone"
    # the audit names the document by its hash, never holds it
    entries = world.audit("signature.request", "success")
    assert entries and hashlib.sha256(pdf).hexdigest() in str(entries[-1].details)


def _cli(*args: str) -> tuple[int, dict[str, Any]]:
    import json

    from click.testing import CliRunner

    from cli import main

    result = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.output.strip().splitlines()[-1])


def test_reference_device_cli_signs_the_matching_document_and_declines_another(world: World) -> None:
    service, _browser, device = signer_setup(world, "erika@example.org")
    state = str(device.token.directory)
    first, second = make_pdf("Erster Antrag"), make_pdf("Zweiter Antrag")
    one = as_json(service.post_pdf(first))
    two = as_json(service.post_pdf(second))
    # --sha256 picks the document the citizen means, not merely the oldest
    code, out = _cli("device", "sign", "--state", state, "--sha256", two["document"]["sha256"])
    assert code == 0 and out == {"id": two["id"], "status": "signed"}
    code, out = _cli("device", "sign", "--state", state, "--deny")
    assert code == 0 and out == {"id": one["id"], "status": "denied"}
    code, out = _cli("device", "sign", "--state", state)
    assert code == 1 and out["error"] == "nothing_pending"
    assert service.fetch(two["id"]).headers["Content-Type"] == "application/pdf"
    denied = service.fetch(one["id"])
    assert denied.status_code == 200 and as_json(denied)["status"] == "denied"
