"""``cityid device …``: the reference device (a soft token) and the admin's device commands.

Reference device (over ``smartcard.softtoken``; state in ``--state DIR``, key in a file there
or on a PKCS#11 token): ``test-root``, ``enrol``, ``approve``, ``sign``, ``renew``, ``status``.
Admin (over the instance's database, ``--data-dir``): ``list``, ``revoke``.
Refusals exit 1 with ``{"error", "error_description"}`` under ``--json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cli_pki import _authority, data_dir_option, json_option

state_option = click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CITYID_DEVICE_STATE",
    default=Path(".cityid-device"),
    show_default=True,
    help="the soft token's directory",
)
pin_option = click.option(
    "--pkcs11-pin", envvar="CITYID_DEVICE_PKCS11_PIN", default=None, help="token user PIN"
)
root_option = click.option(
    "--attestation-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="directory of the TEST attestation root (cityid device test-root); none: no attestation",
)
level_option = click.option(
    "--security-level", type=click.Choice(["tee", "strongbox", "software"]), default="tee", show_default=True
)


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(data, sort_keys=True, default=str) if as_json else text)


def _fail(as_json: bool, code: str, description: str) -> None:
    if as_json:
        click.echo(json.dumps({"error": code, "error_description": description}))
    else:
        click.echo(f"error: {code}: {description}", err=True)
    sys.exit(1)


def _client(state_dir: Path, pin: str | None) -> Any:
    from smartcard.softtoken import DeviceClient, SoftToken

    if not (state_dir / "token.json").exists():
        raise click.UsageError(f"no soft token in {state_dir}: run `cityid device enrol` first")
    return DeviceClient(SoftToken.load(state_dir, pkcs11_pin=pin))


def _profile(root: Path | None, level: str) -> Any:
    from smartcard.softtoken import AttestationProfile

    return AttestationProfile(root, security_level=level) if root is not None else None


@click.group("device")
def device_group() -> None:
    """Virtual smartcards: the reference soft token and device administration."""


@device_group.command("test-root")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@json_option
def test_root(out: Path, as_json: bool) -> None:
    """Create a TEST attestation root. A server trusts it only if configured to
    (smartcard.extra_android_roots_file); never use one in production."""
    from smartcard.softtoken import write_test_root

    cert, key = write_test_root(out)
    _emit(as_json, {"certificate": str(cert), "key": str(key)}, f"TEST root: {cert}\nkey: {key}")


@device_group.command("enrol")
@state_option
@click.option("--server", required=True, help="cityid issuer URL")
@click.option(
    "--access-token", envvar="CITYID_DEVICE_ACCESS_TOKEN", required=True, help="scope smartcard:enroll"
)
@click.option(
    "--dpop-key",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="JWK of the token's DPoP key",
)
@click.option("--name", required=True)
@root_option
@level_option
@click.option("--pkcs11-module", default=None)
@click.option("--pkcs11-token", default=None)
@pin_option
@json_option
def enrol(
    state_dir: Path,
    server: str,
    access_token: str,
    dpop_key: Path,
    name: str,
    attestation_root: Path | None,
    security_level: str,
    pkcs11_module: str | None,
    pkcs11_token: str | None,
    pkcs11_pin: str | None,
    as_json: bool,
) -> None:
    """Create the device key, attest it and enrol it."""
    from smartcard.softtoken import DeviceApiError, DeviceClient, DpopSigner, SoftToken

    pkcs11 = None
    if pkcs11_module or pkcs11_token:
        if not (pkcs11_module and pkcs11_token and pkcs11_pin):
            raise click.UsageError("--pkcs11-module, --pkcs11-token and --pkcs11-pin go together")
        pkcs11 = {"module": pkcs11_module, "token": pkcs11_token, "pin": pkcs11_pin}
    if (state_dir / "token.json").exists():  # an enrolled device's key and certificate would be lost
        raise click.UsageError(f"{state_dir} holds a soft token already: use another --state directory")
    dpop = DpopSigner.load(dpop_key)  # inputs first: a bad one must not leave a half-made token
    token = SoftToken.create(state_dir, server=server, pkcs11=pkcs11)
    try:
        result = DeviceClient(token).enrol(
            access_token, dpop, name=name, attestation=_profile(attestation_root, security_level)
        )
    except DeviceApiError as exc:
        _fail(as_json, exc.error, str(exc.body.get("error_description", "")))
        return
    if attestation_root is not None:
        token.state["attestation"] = {"root": str(attestation_root), "security_level": security_level}
        token.save()
    data = {k: result[k] for k in ("device_id", "serial", "not_after", "security_level", "max_level")}
    _emit(as_json, data, f"enrolled device {data['device_id']} (max level {data['max_level']})")


@device_group.command("approve")
@state_option
@click.option("--code", default=None, help="only answer the challenge showing this binding code")
@click.option("--deny", is_flag=True, help="decline instead of approving")
@pin_option
@json_option
def approve(state_dir: Path, code: str | None, deny: bool, pkcs11_pin: str | None, as_json: bool) -> None:
    """Answer the oldest pending login challenge (after showing its code and service)."""
    from smartcard.softtoken import DeviceApiError

    client = _client(state_dir, pkcs11_pin)
    try:
        items = [i for i in client.pending() if code is None or i["binding_code"] == code]
        if not items:
            _fail(as_json, "nothing_pending", "no login is waiting for this device")
            return
        item = items[0]
        if not as_json:
            amount = f", amount {item['amount']}" if item.get("amount") else ""
            click.echo(f"code {item['binding_code']} for {item['service_name']}{amount}", err=True)
        result = client.answer(item, "deny" if deny else "approve")
    except DeviceApiError as exc:
        _fail(as_json, exc.error, str(exc.body.get("error_description", "")))
        return
    _emit(as_json, {"id": item["id"], **result}, f"{result['status']}: {item['binding_code']}")


@device_group.command("sign")
@state_option
@click.option("--sha256", "sha256", default=None, help="only the request for the document with this SHA-256")
@click.option("--deny", is_flag=True, help="decline instead of signing")
@pin_option
@json_option
def sign(state_dir: Path, sha256: str | None, deny: bool, pkcs11_pin: str | None, as_json: bool) -> None:
    """Sign the oldest pending document (after showing its title, pages, SHA-256, service)."""
    from smartcard.softtoken import DeviceApiError

    client = _client(state_dir, pkcs11_pin)
    try:
        items = [
            i for i in client.signature_requests() if sha256 is None or i["document_sha256"] == sha256.lower()
        ]
        if not items:
            _fail(as_json, "nothing_pending", "no document is waiting for this device")
            return
        item = items[0]
        if not as_json:
            click.echo(
                f'{item["service_name"]} asks you to sign "{item["title"] or "(untitled)"}", '
                f"{item['pages']} page(s), SHA-256 {item['document_sha256']}",
                err=True,
            )
        result = client.sign_document(item, "deny" if deny else "approve")
    except DeviceApiError as exc:
        _fail(as_json, exc.error, str(exc.body.get("error_description", "")))
        return
    _emit(as_json, {"id": item["id"], **result}, f"{result['status']}: {item['document_sha256']}")


@device_group.command("renew")
@state_option
@click.option("--new-key", is_flag=True, help="renew with a new key (needs attestation for > low)")
@root_option
@level_option
@pin_option
@json_option
def renew(
    state_dir: Path,
    new_key: bool,
    attestation_root: Path | None,
    security_level: str,
    pkcs11_pin: str | None,
    as_json: bool,
) -> None:
    """Renew the device certificate before it expires, signed by the current key."""
    from smartcard.softtoken import DeviceApiError

    client = _client(state_dir, pkcs11_pin)
    try:
        result = client.renew(attestation=_profile(attestation_root, security_level), new_key=new_key)
    except DeviceApiError as exc:
        _fail(as_json, exc.error, str(exc.body.get("error_description", "")))
        return
    data = {k: result[k] for k in ("device_id", "serial", "not_after", "max_level")}
    _emit(as_json, data, f"renewed: serial {data['serial']} until {data['not_after']}")


@device_group.command("status")
@state_option
@pin_option
@json_option
def status(state_dir: Path, pkcs11_pin: str | None, as_json: bool) -> None:
    """The soft token's certificate and whether the server still accepts it."""
    from cryptography import x509

    from smartcard.softtoken import DeviceApiError

    client = _client(state_dir, pkcs11_pin)
    cert = x509.load_pem_x509_certificate(client.token.state["certificate"].encode())
    data: dict[str, Any] = {
        "device_id": client.token.state.get("device_id"),
        "server": client.token.server,
        "serial": f"{cert.serial_number:040x}",
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key": "pkcs11" if "pkcs11" in client.token.state["key"] else "file",
    }
    try:
        data["pending"] = len(client.pending())
        data["accepted"] = True
    except DeviceApiError as exc:
        data["accepted"] = False
        data["error"] = exc.error
    _emit(
        as_json,
        data,
        "\n".join(f"{k:10} {v}" for k, v in data.items()),
    )
    if not data["accepted"]:
        sys.exit(1)


@device_group.command("list")
@data_dir_option
@click.option("--account", default=None, help="only this account id")
@click.option("--all", "include_revoked", is_flag=True, help="include removed devices")
@json_option
def list_devices(data_dir: Path | None, account: str | None, include_revoked: bool, as_json: bool) -> None:
    """Enrolled devices (admin)."""
    from smartcard import devices

    with _authority(data_dir) as (session, _ca):
        rows = [
            d.as_json()
            for d in devices.list_devices(session, account_id=account, include_revoked=include_revoked)
        ]
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
        return
    for r in rows:
        state = "removed" if r["revoked_at"] else "active"
        click.echo(
            f"{r['id']}  {r['account_id']}  {r['name']!r}  "
            f"{r['type']}/{r['security_level']}  max {r['max_level']}  {state}"
        )
    if not rows:
        click.echo("no devices")


@device_group.command("revoke")
@data_dir_option
@click.argument("device_id")
@click.option("--reason", default="revoked by admin", show_default=True)
@json_option
def revoke(data_dir: Path | None, device_id: str, reason: str, as_json: bool) -> None:
    """Revoke a device (admin): certificate cessationOfOperation, its tokens end."""
    from db import audit, utcnow
    from idp.views.smartcard import end_device_bindings
    from smartcard.errors import SmartcardError
    from smartcard.revoke import revoke_device

    with _authority(data_dir) as (session, ca):
        try:
            revoked = revoke_device(
                session,
                ca,
                device_id,
                actor="admin",
                reason=reason,
                now=utcnow(),
                end_bindings=end_device_bindings,
                commit=False,  # one commit below, with the audit entry
            )
        except SmartcardError as exc:
            session.rollback()
            audit.record(
                session,
                action="smartcard.device_revoke",
                outcome="denied",
                actor="admin",
                subject=device_id[:40],
                reason=exc.code,
            )
            session.commit()
            _fail(as_json, exc.code, exc.description)
            return
        audit.record(
            session,
            action="smartcard.device_revoke",
            outcome="success",
            actor="admin",
            subject=revoked.account_id,
            reason=reason,
            details={
                "device_id": revoked.device_id,
                "serial": revoked.serial,
                "grants": len(revoked.grant_ids),
            },
        )
        session.commit()
    _emit(
        as_json,
        {
            "device_id": revoked.device_id,
            "serial": revoked.serial,
            "revoked": True,
            "already": revoked.already,
        },
        f"device {revoked.device_id} revoked (certificate {revoked.serial})",
    )


COMMANDS = [device_group]
