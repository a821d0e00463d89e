"""``cityid ca …`` and ``cityid cert …``: a thin click layer over ``pki``.

Every command takes ``--data-dir`` (or ``CITYID_DATA_DIR``), prints plain text or, with
``--json``, one JSON object; refusals exit 1 with ``{"error", "error_description"}``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session

import pki
from db import make_engine, make_session_factory
from idp.config import Config, load_config
from pki import crl
from pki.certpolicy import PLACEHOLDER_POLICY_ARC
from pki.serials import parse_serial
from pki.setup import rotate_ocsp_signer

P = ParamSpec("P")
R = TypeVar("R")
ACTOR = "cli"

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CITYID_DATA_DIR",
    default=None,
    help="cityid data directory (default: $CITYID_DATA_DIR or .cityid-data)",
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    return value


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    if as_json:
        click.echo(json.dumps({k: _jsonable(v) for k, v in data.items()}, sort_keys=True))
    else:
        click.echo(text)


def _fail(as_json: bool, code: str, description: str) -> None:
    if as_json:
        click.echo(json.dumps({"error": code, "error_description": description}))
    else:
        click.echo(f"error: {code}: {description}", err=True)
    sys.exit(1)


def refusals(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a refusal of the CA into a clear message and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except pki.PkiError as exc:
            _fail(bool(kwargs.get("as_json")), exc.code, exc.detail)
            raise AssertionError("unreachable") from exc

    return wrapper


@contextmanager
def _session(cfg: Config) -> Iterator[Session]:
    from db.migrate import SchemaMismatch, check_schema

    if cfg.database_missing:
        click.echo(f"error: no cityid database in {cfg.data_dir}: run `cityid init` first", err=True)
        sys.exit(3)  # as check_schema below, without leaving an empty SQLite file behind
    engine = make_engine(cfg.db_url, pool=False)
    try:
        from cli import reach_database

        reach_database(engine)  # started during a database restart: waits for it
        try:
            check_schema(engine)  # as every other command: not on an unmigrated or newer schema
        except SchemaMismatch as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(3)
        with make_session_factory(engine)() as session:
            from idp.instance import check_secrets

            check_secrets(session, cfg)  # the CA key passphrase too: another one writes unreadable keys
            session.rollback()
            yield session
    finally:
        engine.dispose()


def _store(cfg: Config) -> pki.KeyStore:
    return pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase)


@contextmanager
def _authority(data_dir: Path | None) -> Iterator[tuple[Session, pki.CertificateAuthority]]:
    cfg = load_config(data_dir)
    with _session(cfg) as session:
        yield session, pki.load_ca(session, cfg.ca, _store(cfg), cfg.issuer)


def init_ca(cfg: Config, *, actor: str = ACTOR) -> pki.CaInitResult:
    """What ``cityid init`` calls: create the CA if there is none (idempotent)."""
    from db.migrate import upgrade

    if cfg.ca.policy_arc == PLACEHOLDER_POLICY_ARC:
        click.echo(
            f"warning: ca.policy_arc is the documentation placeholder {PLACEHOLDER_POLICY_ARC} (RFC 5612);"
            " set an arc under your own IANA Private Enterprise Number before production (docs/pki.md)",
            err=True,
        )
    engine = make_engine(cfg.db_url, pool=False)
    try:
        upgrade(engine)
        with make_session_factory(engine)() as session:
            result = pki.init_ca(session, cfg.ca, _store(cfg), cfg.issuer, actor=actor)
    finally:
        engine.dispose()
    if result.recertify_problem:
        click.echo(
            "warning: the issuing CA certificate must be re-issued (same key) to assert every profile's "
            f"certificate policy, but {result.recertify_problem}; bring the root key back and run "
            "`cityid init` again (docs/pki.md)",
            err=True,
        )
    return result


# -- cityid ca ---------------------------------------------------------------------------------


@click.group("ca")
def ca_group() -> None:
    """The certificate authority: set-up, CRLs, chain, OCSP signer."""


@ca_group.command("init")
@data_dir_option
@json_option
@refusals
def ca_init(data_dir: Path | None, as_json: bool) -> None:
    """Create the root and issuing CA, OCSP signer and first CRLs (idempotent)."""
    result = init_ca(load_config(data_dir))
    _emit(
        as_json,
        dataclasses.asdict(result),
        ("created" if result.created else "already initialised")
        + f"\nroot serial       {result.root_serial}"
        + f"\nroot SHA-256      {result.root_fingerprint_sha256}"
        + f"\nroot key          {result.root_key_ref} (may be moved offline)"
        + f"\nissuing serial    {result.issuing_serial}"
        + f"\nOCSP signer       {result.ocsp_signer_serial}"
        + f"\nTSA               {result.tsa_serial}"
        + (
            f"\nre-certified      {result.recertified_issuing_serial} (issuing CA, same key, all policies)"
            if result.recertified_issuing_serial
            else ""
        ),
    )


@ca_group.command("crl")
@data_dir_option
@click.option("--shard", default="full", help="shard number, 'full' (default) or 'root'")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--regenerate", is_flag=True, help="sign a new CRL even if the current one is fresh")
@json_option
@refusals
def ca_crl(data_dir: Path | None, shard: str, out: Path, regenerate: bool, as_json: bool) -> None:
    """Write a CRL (DER) to FILE."""
    with _authority(data_dir) as (session, ca):
        crl.check_scope(ca, shard)
        if regenerate and shard != crl.ROOT:
            der = crl.generate(session, ca, shard)
            session.commit()
        else:
            der = crl.current(session, ca, shard)
    out.write_bytes(der)
    _emit(as_json, {"scope": shard, "out": str(out), "bytes": len(der)}, f"wrote {out}")


@ca_group.command("chain")
@data_dir_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@refusals
def ca_chain(data_dir: Path | None, out: Path | None) -> None:
    """Print (or write) the issuing CA and root certificates, PEM."""
    with _authority(data_dir) as (_, ca):
        pem = ca.chain_pem()
    if out is None:
        click.echo(pem.decode(), nl=False)
    else:
        out.write_bytes(pem)


@ca_group.command("revoke-abandoned")
@data_dir_option
@click.option(
    "--minutes",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),  # 0 or less: certificates being issued this moment would go too
    help="pending for longer than this",
)
@json_option
@refusals
def ca_revoke_abandoned(data_dir: Path | None, minutes: int, as_json: bool) -> None:
    """Revoke certificates whose issuing process died after signing (see pki/README.md)."""
    with _authority(data_dir) as (session, ca):
        serials = pki.revoke_abandoned(session, ca, older_than=dt.timedelta(minutes=minutes), actor=ACTOR)
    _emit(as_json, {"revoked": serials}, "\n".join(serials) or "none")


@ca_group.group("ocsp-signer")
def ocsp_signer_group() -> None:
    """The delegated OCSP signing certificate."""


@ocsp_signer_group.command("rotate")
@data_dir_option
@json_option
@refusals
def ocsp_signer_rotate(data_dir: Path | None, as_json: bool) -> None:
    """New OCSP signing key and certificate; the old one is retired."""
    with _authority(data_dir) as (session, ca):
        signer = rotate_ocsp_signer(session, ca, actor=ACTOR)
    _emit(
        as_json,
        {"serial": signer.serial, "not_after": signer.not_after, "key_ref": signer.key_ref},
        f"OCSP signer {signer.serial} until {signer.not_after.isoformat()}",
    )


# -- cityid cert -------------------------------------------------------------------------------


@click.group("cert")
def cert_group() -> None:
    """Certificates: issue, revoke, reinstate, list, show."""


def _status_dict(st: pki.CertificateStatus) -> dict[str, Any]:
    data = dataclasses.asdict(st)
    data.pop("certificate_der")
    return data


def _status_text(st: pki.CertificateStatus) -> str:
    lines = [
        f"serial      {st.serial}",
        f"profile     {st.profile}",
        f"subject     {st.subject}",
        f"status      {st.status}",
        f"valid       {st.not_before.isoformat()} .. {st.not_after.isoformat()}",
        f"shard       {st.shard}",
        f"sha256      {st.fingerprint_sha256 or '-'}",
    ]
    if st.revoked_at is not None:
        lines.append(f"revoked     {st.revoked_at.isoformat()} ({st.revocation_reason})")
    return "\n".join(lines)


@cert_group.command("issue")
@data_dir_option
@click.option("--csr", "csr_file", type=click.File("rb"), required=True, help="PKCS#10, PEM or DER")
@click.option("--profile", required=True, type=click.Choice(sorted(pki.PROFILES)))
@click.option("--device-id", default=None, help="device-auth: the device identifier")
@click.option(
    "--days", type=click.IntRange(1, 36_500), default=None, help="validity (default: the profile's)"
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@json_option
@refusals
def cert_issue(
    data_dir: Path | None,
    csr_file: Any,
    profile: str,
    device_id: str | None,
    days: int | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Issue a certificate from a CSR; prints (or writes) the PEM certificate."""
    request = pki.IssueRequest(
        csr=csr_file.read(),
        profile=profile,
        device_id=device_id,
        validity=dt.timedelta(days=days) if days else None,
        requested_by=ACTOR,
    )
    with _authority(data_dir) as (session, ca):
        result = pki.issue(session, ca, request)
    pem = result.certificate.public_bytes(Encoding.PEM)
    if out is not None:
        out.write_bytes(pem)
    data = {
        "serial": result.serial,
        "profile": result.profile,
        "subject": result.subject,
        "not_before": result.not_before,
        "not_after": result.not_after,
        "fingerprint_sha256": result.fingerprint_sha256,
        "certificate_pem": pem.decode(),
    }
    _emit(as_json, data, pem.decode() if out is None else f"{result.serial} -> {out}")


@cert_group.command("revoke")
@data_dir_option
@click.argument("serial")
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    type=click.Choice(sorted(pki.REASON_CODES), case_sensitive=False),
)
@json_option
@refusals
def cert_revoke(data_dir: Path | None, serial: str, reason: str, as_json: bool) -> None:
    """Revoke a certificate (idempotent); OCSP and its CRL shard show it at once."""
    with _authority(data_dir) as (session, ca):
        device_id = _active_device(session, parse_serial(serial))  # UnknownCertificate: a refusal
        if device_id is not None:
            # The device would stay an active factor, its sessions and tokens alive: that is
            # what `cityid device revoke` ends too (ARCHITECTURE flow 6).
            _fail(
                as_json,
                "device_certificate",
                f"this certificate belongs to the citizen's device {device_id}: revoke it with "
                f"`cityid device revoke {device_id}`, which also revokes the certificate and ends "
                "the sessions and tokens bound to the device",
            )
        st = pki.revoke(session, ca, serial, reason, actor=ACTOR)
    _emit(as_json, _status_dict(st), _status_text(st))


def _active_device(session: Session, serial: str) -> str | None:
    """The enrolled, not removed device whose certificate this is, if any."""
    try:
        from smartcard.models import Device
    except ModuleNotFoundError:  # installed without the smartcard package
        return None
    found = session.execute(
        select(Device.id).where(Device.cert_serial == serial, Device.revoked_at.is_(None))
    ).scalar()
    return str(found) if found is not None else None


@cert_group.command("reinstate")
@data_dir_option
@click.argument("serial")
@json_option
@refusals
def cert_reinstate(data_dir: Path | None, serial: str, as_json: bool) -> None:
    """Release a certificate from certificateHold."""
    with _authority(data_dir) as (session, ca):
        st = pki.reinstate(session, ca, serial, actor=ACTOR)
    _emit(as_json, _status_dict(st), _status_text(st))


@cert_group.command("list")
@data_dir_option
@click.option("--status", type=click.Choice(["pending", "issued", "revoked"]), default=None)
@click.option("--profile", type=click.Choice(sorted(pki.PROFILES)), default=None)
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@json_option
@refusals
def cert_list(
    data_dir: Path | None, status: str | None, profile: str | None, limit: int, as_json: bool
) -> None:
    """List certificates, newest first."""
    cfg = load_config(data_dir)
    with _session(cfg) as session:
        rows = pki.list_certificates(session, status=status, profile=profile, limit=limit)
    if as_json:
        payload = [{k: _jsonable(v) for k, v in _status_dict(r).items()} for r in rows]
        click.echo(json.dumps({"certificates": payload}, sort_keys=True))
        return
    for r in rows:
        click.echo(f"{r.serial}  {r.status:8}  {r.profile:14} {r.not_after:%Y-%m-%d}  {r.subject}")


@cert_group.command("show")
@data_dir_option
@click.argument("serial")
@click.option("--pem", is_flag=True, help="print the certificate itself")
@json_option
@refusals
def cert_show(data_dir: Path | None, serial: str, pem: bool, as_json: bool) -> None:
    """Show one certificate's record."""
    cfg = load_config(data_dir)
    with _session(cfg) as session:
        st = pki.status(session, serial)
    if pem and st.certificate_der is not None:
        from cryptography import x509

        click.echo(x509.load_der_x509_certificate(st.certificate_der).public_bytes(Encoding.PEM))
        return
    _emit(as_json, _status_dict(st), _status_text(st))


COMMANDS = [ca_group, cert_group]
