"""cityid.toml and CITYID_* variables: a setting that cannot be used stops the command with its
name, never a traceback, and never falls back to a default silently."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main as cli_main
from idp.config import ConfigError, load_config, serve_problem

SECRETS = f'secret_key = "{secrets.token_urlsafe(32)}"\nkey_passphrase = "{secrets.token_urlsafe(32)}"\n'


def _dir(tmp_path: Path, toml: str, issuer: str = "https://login.example.de") -> Path:
    (tmp_path / "cityid.toml").write_text(f'issuer = "{issuer}"\n{SECRETS}{toml}', encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("sesion_lifetime_minutes = 5\n", "sesion_lifetime_minutes"),  # a typo: the default would rule
        ("[smartcard]\nallow_softwar_keys = false\n", "smartcard.allow_softwar_keys"),
        ('dpop_require_nonce = "false"\n', "dpop_require_nonce"),  # a string, which counts as true
        ('fast_paths = "false"\n', "fast_paths"),
        ("fast_paths = 0\n", "fast_paths"),
        ('access_token_lifetime_seconds = "600"\n', "access_token_lifetime_seconds"),
        ("access_token_lifetime_seconds = -5\n", "access_token_lifetime_seconds"),
        ('scope_levels = "payment"\n', "scope_levels"),
        ("smtp = 5\n", "smtp"),
        ("x = [\n", "cityid.toml"),  # not TOML
    ],
)
def test_an_unusable_setting_in_the_file_is_refused_by_name(tmp_path: Path, toml: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(_dir(tmp_path, toml))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CITYID_DPOP_REQUIRE_NONCE", "flase"),
        ("CITYID_FAST_PATHS", "fasle"),
        ("CITYID_SMTP_PORT", "abc"),
        ("CITYID_SCOPE_LEVELS", "payment"),  # was read as no levels at all: payment at *low*
        ("CITYID_SCOPE_LEVELS", "payment:substantial"),
    ],
)
def test_an_unusable_environment_variable_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_config(_dir(tmp_path, ""))


def test_fast_paths_are_on_by_default_and_can_be_switched_off(tmp_path: Path) -> None:
    assert load_config(_dir(tmp_path, "")).fast_paths is True
    (tmp_path / "off").mkdir()
    assert load_config(_dir(tmp_path / "off", "fast_paths = false\n")).fast_paths is False


def test_environment_values_that_are_clear_are_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYID_DPOP_REQUIRE_NONCE", "off")
    monkeypatch.setenv("CITYID_SCOPE_LEVELS", "payment=high, permits:write=substantial")
    cfg = load_config(_dir(tmp_path, ""))
    assert cfg.dpop_require_nonce is False
    assert sorted(cfg.scope_levels) == ["payment", "permits:write"]


@pytest.mark.parametrize(
    ("toml", "issuer", "problem"),
    [
        (
            'eid_connector = "simulator"\neid_simulator_enabled = true\n',
            "https://login.example.de",
            "simulator",
        ),
        ("code_lifetime_seconds = 0\n", "https://login.example.de", "code_lifetime_seconds"),
        (
            '[branding]\naccessibility_contact = "barrierefreiheit@example.de"\n',
            "https://login.example.de",
            None,
        ),
        ("", "https://login.example.de", "accessibility_contact"),  # BITV 2.0 §7: feedback reaches the city
        ('eid_connector = "simulator"\neid_simulator_enabled = true\n', "http://127.0.0.1:8000", None),
    ],
)
def test_serve_refuses_the_simulator_outside_development_and_zero_lifetimes(
    tmp_path: Path, toml: str, issuer: str, problem: str | None
) -> None:
    found = serve_problem(load_config(_dir(tmp_path, toml, issuer)))
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_serve_refuses_short_secrets(tmp_path: Path) -> None:
    (tmp_path / "cityid.toml").write_text('issuer = "https://login.example.de"\nsecret_key = "x"\n')
    found = serve_problem(load_config(tmp_path))
    assert found is not None and "secret_key" in found


def test_the_cli_answers_a_bad_setting_with_one_line_and_exit_2(tmp_path: Path) -> None:
    data = _dir(tmp_path, "sesion_lifetime_minutes = 5\n")
    r = CliRunner().invoke(cli_main, ["user", "list", "--data-dir", str(data), "--json"])
    assert r.exit_code == 2 and "sesion_lifetime_minutes" in json.loads(r.stdout)["error"]
    r = CliRunner().invoke(cli_main, ["client", "list", "--data-dir", str(data)])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_commands_with_another_instances_secrets_are_refused_and_write_nothing(tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "d"
    run = CliRunner().invoke
    assert run(cli_main, ["init", "--data-dir", str(data)]).exit_code == 0
    for variable in ("CITYID_SECRET_KEY", "CITYID_KEY_PASSPHRASE"):
        env = {variable: secrets.token_urlsafe(32)}  # a typo'd variable, another machine's file
        args = ["user", "add", "--data-dir", str(data), "--email", "carl@example.org", "--json"]
        r = run(cli_main, [*args, "--password", "a long passphrase here"], env=env)
        assert r.exit_code == 2 and variable.removeprefix("CITYID_").lower() in json.loads(r.stdout)["error"]
        r = run(cli_main, ["keys", "rotate", "--data-dir", str(data), "--publish-ahead", "0"], env=env)
        assert r.exit_code == 2
    r = run(cli_main, ["user", "list", "--data-dir", str(data), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == []  # nothing was written with them
    # `init` on a copy of the database without its cityid.toml: fresh secrets would not fit
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    (copy / "cityid.toml").unlink()
    r = run(cli_main, ["init", "--data-dir", str(copy)])
    assert r.exit_code == 2 and not (copy / "cityid.toml").exists()


def test_init_with_an_unusable_ca_setting_refuses_before_any_key_is_made(tmp_path: Path) -> None:
    data = tmp_path / "d"
    env = {"CITYID_CA_ISSUING_SUBJECT": "O=Musterstadt,C=DE"}  # no CN
    r = CliRunner().invoke(cli_main, ["init", "--data-dir", str(data), "--json"], env=env)
    assert r.exit_code == 2 and "issuing_subject" in json.loads(r.stdout)["error"]
    assert not list((data / "ca-keys").glob("*")) if (data / "ca-keys").exists() else True


@pytest.mark.parametrize("args", [["--bind", "nonsense"], ["--workers", "0"], ["--threads", "-3"]])
def test_serve_refuses_unusable_options(tmp_path: Path, args: list[str]) -> None:
    data = _dir(tmp_path, "", issuer="http://127.0.0.1:8000")
    r = CliRunner().invoke(cli_main, ["serve", "--data-dir", str(data), *args])
    assert r.exit_code == 2, r.output


def test_a_usage_error_with_json_is_answered_in_json(tmp_path: Path) -> None:
    data = _dir(tmp_path, "")
    r = CliRunner().invoke(
        cli_main, ["audit", "list", "--data-dir", str(data), "--since", "gestern", "--json"]
    )
    assert r.exit_code == 2 and "--since" in json.loads(r.stdout)["error"]
    r = CliRunner().invoke(cli_main, ["audit", "list", "--data-dir", str(data), "--since", "gestern"])
    assert r.exit_code == 2 and "Usage:" in r.output  # without --json, click's own message


@pytest.mark.parametrize("command", [["user", "list"], ["cert", "list"], ["user", "export", "x@example.org"]])
def test_a_mistyped_data_dir_is_named_and_gets_no_empty_database(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "cityid-dta"
    r = CliRunner().invoke(cli_main, [*command, "--data-dir", str(typo)])
    assert r.exit_code == 3 and "cityid init" in r.output
    assert not (typo / "cityid.sqlite3").exists()
