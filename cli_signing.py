"""``cityid seal …`` and ``cityid signature …``: a thin click layer over ``signing`` and ``pki.seal``.

Exit status: 0 done (validate: every signature valid), 1 refused or (validate) not valid,
2 unusable input (not a PDF, encrypted, damaged, empty, too large, bad options) — then nothing
is written and nothing is sealed — 3 no/unmigrated database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.orm import Session

import pki
import signing
from cli_pki import ACTOR, _authority, _fail, data_dir_option, json_option, refusals
from db import audit
from pki.seal import active_seal, init_seal
from signing.pki_context import pki_context
from signing.seal import NoSeal, seal_documents
from signing.validate import ValidationResult, validate


def _bad_input(as_json: bool, code: str, description: str) -> None:
    if as_json:
        click.echo(json.dumps({"error": code, "error_description": description}))
    else:
        click.echo(f"error: {code}: {description}", err=True)
    sys.exit(2)


# -- cityid seal -------------------------------------------------------------------------------


@click.group("seal")
def seal_group() -> None:
    """The city seal: its key in the key store, its certificate, sealing PDFs (PAdES)."""


def _default_subject(ca: pki.CertificateAuthority) -> str:
    subject = ca.certificate.subject
    org = subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    name = str(org[0].value) if org else "cityid"
    parts: list[x509.NameAttribute[str | bytes]] = [
        x509.NameAttribute(x509.NameOID.COMMON_NAME, f"{name} Siegel"[:64])
    ]
    parts.append(x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, name))
    parts.extend(subject.get_attributes_for_oid(x509.NameOID.COUNTRY_NAME))
    return x509.Name(list(reversed(parts))).rfc4514_string()


@seal_group.command("init")
@data_dir_option
@click.option(
    "--subject", default=None, help='RFC 4514, e.g. "CN=Stadt Musterstadt,O=Stadt Musterstadt,C=DE"'
)
@click.option("--days", type=click.IntRange(1, 1095), default=None, help="validity (default 730)")
@json_option
@refusals
def seal_init(data_dir: Path | None, subject: str | None, days: int | None, as_json: bool) -> None:
    """Create the seal key in the key store (the HSM when PKCS#11 is configured) and its
    document-seal certificate. Again: a new key and certificate; the old one stays valid."""
    with _authority(data_dir) as (session, ca):
        seal = init_seal(
            session,
            ca,
            subject or _default_subject(ca),
            validity=dt.timedelta(days=days) if days else None,
            actor=ACTOR,
        )
    data = {
        "serial": seal.serial,
        "subject": seal.certificate.subject.rfc4514_string(),
        "key_ref": seal.key_ref,
        "not_after": seal.not_after,
        "certificate_pem": seal.certificate.public_bytes(Encoding.PEM).decode(),
    }
    _emit(as_json, data, f"seal {seal.serial}\nsubject   {data['subject']}\nkey       {seal.key_ref}")


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    if as_json:
        click.echo(json.dumps(data, default=str, sort_keys=True))
    else:
        click.echo(text)


@seal_group.command("sign")
@data_dir_option
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--level", default="B-LT", show_default=True, help="B-B, B-T or B-LT")
@click.option("--reason", default=None, help="the /Reason of the signature, e.g. Bescheid")
@click.option("--visible", default=None, help="PAGE,X,Y,W,H (PDF points; page from 1)")
@json_option
@refusals
def seal_sign(
    data_dir: Path | None,
    inputs: tuple[Path, ...],
    out_file: Path | None,
    out_dir: Path | None,
    level: str,
    reason: str | None,
    visible: str | None,
    as_json: bool,
) -> None:
    """Seal PDFs with the city seal (PAdES; B-LT by default). Every input is checked before any
    is sealed: one bad file refuses the whole batch (exit 2) and nothing is written."""
    try:
        chosen = signing.Level.parse(level)
        box = signing.Visible.parse(visible) if visible else None
    except signing.SigningError as exc:
        _bad_input(as_json, exc.code, exc.detail)
        raise AssertionError("unreachable") from exc
    if (out_file is None) == (out_dir is None):
        _bad_input(as_json, "bad_options", "give exactly one of --out FILE or --out-dir DIR")
    if out_file is not None and len(inputs) != 1:
        _bad_input(as_json, "bad_options", "--out takes one input; use --out-dir for several")
    targets = [out_file] if out_file is not None else [(out_dir or Path()) / p.name for p in inputs]
    if len(set(targets)) != len(targets):
        _bad_input(as_json, "bad_options", "two inputs have the same file name")
    for target in targets:
        if target.exists():
            _bad_input(as_json, "output_exists", f"{target} exists; not overwritten")
    documents: list[bytes] = []
    for path in inputs:
        try:
            documents.append(path.read_bytes())
        except OSError as exc:
            _bad_input(as_json, "unreadable_input", f"{path}: {exc.strerror}")
    with _authority(data_dir) as (session, ca):
        for path, pdf in zip(inputs, documents, strict=True):
            try:
                info = signing.inspect(pdf)  # all checked before any is sealed
                if box is not None and box.page > info.page_count:
                    raise signing.BadVisibleBox(f"page {box.page} of {info.page_count}")
            except signing.DocumentError as exc:
                _refusal_audit(session, pdf, exc)
                _bad_input(as_json, exc.code, f"{path}: {exc.detail}")
        if active_seal(session, ca) is None:
            _fail(as_json, NoSeal.code, NoSeal.description)
        try:
            sealed = seal_documents(
                session,
                ca,
                documents,
                pki_context(session, ca),
                level=chosen,
                reason=reason,
                visible=box,
                actor=ACTOR,
            )
        except signing.SigningError as exc:
            _fail(as_json, exc.code, exc.detail)
            raise AssertionError("unreachable") from exc
    written = []
    for target, result in zip(targets, sealed, strict=True):
        _write_new(target, result.pdf)
        written.append(
            {"out": str(target), "document_sha256": result.document_sha256, "level": result.level.value}
        )
    _emit(as_json, {"sealed": written}, "\n".join(f"{w['out']} ({w['level']})" for w in written))


def _refusal_audit(session: Session, pdf: bytes, exc: signing.SigningError) -> None:
    audit.record(
        session,
        action="signing.seal",
        outcome="denied",
        actor=ACTOR,
        reason=exc.code,
        details={"document_sha256": hashlib.sha256(pdf).hexdigest(), "size": len(pdf)},
    )
    session.commit()


def _write_new(target: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``target`` (a temporary file renamed onto it when complete)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".sealing-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- cityid signature --------------------------------------------------------------------------


@click.group("signature")
def signature_group() -> None:
    """Check signed PDFs (PAdES), with the city root as trust anchor."""


@signature_group.command("validate")
@data_dir_option
@click.argument("pdf_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--offline", is_flag=True, help="use only what the document embeds; ask no responder")
@json_option
def signature_validate(data_dir: Path | None, pdf_file: Path, offline: bool, as_json: bool) -> None:
    """Who signed or sealed, when (time-stamp), at which level, whether the document changed
    afterwards, whether the certificate was valid then and is now. Exit 0 valid, 1 not valid."""
    try:
        pdf = pdf_file.read_bytes()
    except OSError as exc:
        _bad_input(as_json, "unreadable_input", f"{pdf_file}: {exc.strerror}")
        raise AssertionError("unreachable") from exc
    with _authority(data_dir) as (session, ca):
        session.rollback()  # hold no transaction (SQLite: no lock) while responders are asked

        def status_now(cert: x509.Certificate) -> bool | None:
            try:
                return pki.status_of_certificate(session, cert.public_bytes(Encoding.DER)).is_good()
            except pki.PkiError:
                return None  # not one of ours
            finally:
                session.rollback()

        try:
            result = validate(pdf, [ca.root_certificate], online=not offline, status_now=status_now)
        except signing.DocumentError as exc:
            _audit_validation(session, pdf, None, exc.code)
            _bad_input(as_json, exc.code, exc.detail)
            raise AssertionError("unreachable") from exc
        _audit_validation(session, pdf, result, "")
    _emit(as_json, _result_dict(result), _result_text(result))
    sys.exit(0 if result.valid else 1)


def _audit_validation(session: Session, pdf: bytes, result: ValidationResult | None, refusal: str) -> None:
    audit.record(
        session,
        action="signing.validate",
        outcome="denied" if result is None else "info",
        actor=ACTOR,
        reason=refusal or ("valid" if result is not None and result.valid else "not valid"),
        details={
            "document_sha256": hashlib.sha256(pdf).hexdigest(),
            "signatures": 0 if result is None else len(result.signatures),
        },
    )
    session.commit()


def _result_dict(result: ValidationResult) -> dict[str, Any]:
    return {
        "document_sha256": result.document_sha256,
        "valid": result.valid,
        "signatures": [dataclasses.asdict(s) | {"ok": s.ok} for s in result.signatures],
    }


def _result_text(result: ValidationResult) -> str:
    if not result.signatures:
        return "no signatures in this document"
    lines = []
    for s in result.signatures:
        when = s.timestamp.isoformat() if s.timestamp else f"{s.claimed_time} (claimed, no time-stamp)"
        now = {True: "yes", False: "NO", None: "unknown"}[s.valid_now]
        lines += [
            f"{'sealed' if s.kind == 'seal' else 'signed'} by  {s.signer}  ({s.signer_subject})",
            f"  when             {when}",
            f"  level            PAdES {s.level}",
            f"  signature        {'intact' if s.intact else 'BROKEN'}",
            f"  changed after    {'YES' if s.changed_after else 'no'}",
            f"  trusted          {'yes' if s.trusted else 'NO'}",
            f"  valid then       {'yes' if s.valid_then else 'NO'}",
            f"  valid now        {now}",
            *[f"  problem: {p}" for p in s.problems],
        ]
    lines.append("VALID" if result.valid else "NOT VALID")
    return "\n".join(lines)


COMMANDS = [seal_group, signature_group]
