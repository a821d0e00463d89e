"""The reference device and the admin commands, through ``cityid device …``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from smartcard.models import Device
from tests.conftest import SOFTHSM_MODULE
from tests.smartcard.conftest import World, app_token, citizen, continue_device, device_page_id, rp_authorize

ESSENTIAL = json.dumps(
    {"id_token": {"acr": {"essential": True, "value": "http://eidas.europa.eu/LoA/substantial"}}}
)


def _run(*args: str, env: dict[str, str] | None = None, ok: bool = True) -> dict[str, Any]:
    result = CliRunner().invoke(main, [*args, "--json"], env=env, catch_exceptions=False)
    assert (result.exit_code == 0) == ok, result.output
    out: dict[str, Any] = json.loads(result.output.strip().splitlines()[-1])
    return out


def _enrol_and_login(world: World, tmp_path: Path, *extra: str, pin: str | None = None) -> tuple[Path, str]:
    address = f"cli{len(extra)}@example.org"
    browser = citizen(world, address)
    at, dpop = app_token(world, browser, address)
    dpop.save(tmp_path / "dpop.jwk")
    state = tmp_path / "token"
    env = {"CITYID_DEVICE_PKCS11_PIN": pin} if pin else None
    enrolled = _run(
        "device", "enrol", "--state", str(state), "--server", world.idp.url, "--access-token", at,
        "--dpop-key", str(tmp_path / "dpop.jwk"), "--name", "CLI token",
        "--attestation-root", str(world.root_dir), *extra, env=env,
    )  # fmt: skip
    assert enrolled["max_level"] == "substantial"
    page, _ = rp_authorize(world, browser, claims=ESSENTIAL)
    _, code = device_page_id(page)
    answered = _run("device", "approve", "--state", str(state), "--code", code, env=env)
    assert answered["status"] == "approved"
    done = continue_device(browser, page)
    if done.status_code == 200 and 'name="decision"' in done.text:
        done = browser.consent(done)
    assert done.status_code in (302, 303) and "code=" in done.headers["Location"]
    return state, enrolled["device_id"]


def test_reference_device_enrols_approves_and_admin_revokes(world: World, tmp_path: Path) -> None:
    state, device_id = _enrol_and_login(world, tmp_path)
    assert _run("device", "status", "--state", str(state))["accepted"] is True
    data_dir = ["--data-dir", str(world.idp.config.data_dir)]
    env = {"CITYID_DATABASE_URL": world.idp.config.database_url, **_cfg_env(world)}
    listed = CliRunner().invoke(
        main, ["device", "list", *data_dir, "--json"], env=env, catch_exceptions=False
    )
    assert device_id in listed.output
    with world.idp.sessions()() as s:  # the device's certificate: `cert revoke` sends the admin on
        serial = s.get(Device, device_id).cert_serial  # type: ignore[union-attr]
    refused = _run("cert", "revoke", serial, "--reason", "keyCompromise", *data_dir, env=env, ok=False)
    assert refused["error"] == "device_certificate" and device_id in refused["error_description"]
    revoked = _run("device", "revoke", device_id, *data_dir, env=env)
    assert revoked["revoked"] is True
    status = _run("device", "status", "--state", str(state), ok=False)
    assert status["error"] == "certificate_revoked"
    assert _run("device", "revoke", "nope-nope-nope", *data_dir, env=env, ok=False)["error"] == "not_found"


def _cfg_env(world: World) -> dict[str, str]:
    cfg = world.idp.config
    return {
        "CITYID_SECRET_KEY": cfg.secret_key,
        "CITYID_KEY_PASSPHRASE": cfg.key_passphrase,
        "CITYID_ISSUER": cfg.issuer,
    }


def test_reference_device_key_in_pkcs11_token(
    world: World, tmp_path: Path, softhsm_token: tuple[str, str]
) -> None:
    label, pin = softhsm_token
    state, _ = _enrol_and_login(
        world, tmp_path, "--pkcs11-module", SOFTHSM_MODULE, "--pkcs11-token", label, pin=pin
    )
    token = json.loads((state / "token.json").read_text())
    assert "pkcs11" in token["key"] and not list(state.glob("device-key-*.pem"))


@pytest.mark.parametrize("args", [["approve"], ["status"]])
def test_reference_device_without_state_is_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, ["device", *args, "--state", str(tmp_path / "none")])
    assert result.exit_code == 2


def test_enrolling_again_into_a_used_state_directory_is_refused_and_keeps_the_token(
    world: World, tmp_path: Path
) -> None:
    state, _device_id = _enrol_and_login(world, tmp_path)
    before = (state / "token.json").read_text()
    files = sorted(p.name for p in state.iterdir())
    args = ["device", "enrol", "--state", str(state), "--server", world.idp.url, "--access-token", "x"]
    args += ["--dpop-key", str(tmp_path / "dpop.jwk"), "--name", "again", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert (state / "token.json").read_text() == before and sorted(p.name for p in state.iterdir()) == files
    assert _run("device", "status", "--state", str(state))["accepted"] is True
