"""The ``cityid`` command line: a thin click group over the packages.

Command groups of one area live in ``cli_<area>.py`` beside this file and are added here.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import make_engine, make_session_factory, transaction
from db.migrate import SchemaMismatch, check_schema
from idp.config import Config, ConfigError, issuer_problem, load_config, serve_problem

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="CITYID_DATA_DIR",
    default=Path(".cityid-data"),
    show_default=True,
    help="instance data directory",
)
json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


def fail(message: str, as_json: bool = False, code: int = 1) -> None:
    if as_json:
        click.echo(json.dumps({"error": message}))
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


def out(data: Any, as_json: bool, human: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else human)


@contextmanager
def session_for(data_dir: Path, as_json: bool = False) -> Iterator[tuple[Config, Session]]:
    """Open the instance's database in one transaction, refusing a wrong schema."""
    cfg = load_config(data_dir)
    _refuse_missing_database(cfg, as_json)
    engine = make_engine(cfg.db_url)
    try:
        reach_database(engine)
        check_schema(engine)
    except SchemaMismatch as exc:
        fail(str(exc), as_json, code=3)
    try:
        with transaction(make_session_factory(engine)) as s:
            from idp.instance import check_secrets

            check_secrets(s, cfg)  # data written under another cityid.toml's secrets would be lost
            yield cfg, s
    finally:
        engine.dispose()


# A command started while PostgreSQL restarts or fails over (`pg_ctl restart` took 1-2 s under
# load, bench/faults.py) waits this long for it before it gives up with exit code 2.
CLI_DATABASE_WAIT_SECONDS = 15.0


def reach_database(engine: Any) -> None:
    """Return once PostgreSQL answers, waiting while it is away (a restart, a failover: the
    connection refused or cut) up to CLI_DATABASE_WAIT_SECONDS; then its error, as before. Other
    errors (a wrong password, no such database) and SQLite's are raised at once. Before the
    command has done anything: a command that loses its connection later has committed nothing
    of its transaction, and says so (exit code 2); running it again is the admin's decision."""
    if engine.dialect.name != "postgresql":
        return
    from idp.serve import wait_for_database

    wait_for_database(engine, CLI_DATABASE_WAIT_SECONDS)


def _refuse_missing_database(cfg: Config, as_json: bool) -> None:
    """A mistyped --data-dir: say so, and leave no empty SQLite file there (opening creates one)."""
    if cfg.database_missing:
        fail(f"no cityid database in {cfg.data_dir}: run `cityid init` first", as_json, code=3)


def instance_keys(cfg: Config) -> Any:
    from idp.instance import InstanceKeys

    return InstanceKeys.from_config(cfg)


class _Commands(click.Group):
    """Errors of the admin's making (a setting, a file, the database out of reach) end with one
    line and exit code 2, never a traceback; `--json` gets them as JSON."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import OperationalError

        as_json = "--json" in [*getattr(ctx, "_protected_args", []), *ctx.args]  # before click takes them
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if not as_json:
                raise  # click prints the usage and exits 2
            fail(exc.format_message(), True, code=2)
        except ConfigError as exc:
            fail(str(exc), as_json, code=2)
        except OperationalError as exc:  # unreachable server, unopenable SQLite file: no secrets in it
            fail(f"the database cannot be used: {str(exc.orig).strip().splitlines()[0]}", as_json, code=2)
        except (OSError, UnicodeError) as exc:  # a path, a file, bytes that are not UTF-8
            fail(f"{type(exc).__name__}: {exc}", as_json, code=2)


@click.group(cls=_Commands)
def main() -> None:
    """cityid — the city's identity provider."""


# ----------------------------------------------------------------------------- instance


@main.command()
@data_dir_option
@click.option("--issuer", help="public base URL, e.g. https://login.musterstadt.de")
@json_option
def init(data_dir: Path, issuer: str | None, as_json: bool) -> None:
    """Create or migrate the instance (idempotent)."""
    if issuer is not None and (problem := issuer_problem(issuer)) is not None:
        fail(problem, as_json, code=2)  # before anything is written
    if issuer is not None and (data_dir / "cityid.toml").exists():
        written = load_config(data_dir).issuer
        if written != issuer:  # the toml is what `serve` reads; the CA's URLs were made from it
            fail(
                f"cityid.toml already names the issuer {written}; to change it, edit `issuer` in "
                f"{data_dir / 'cityid.toml'} (the CA's certificates keep URLs of the first issuer)",
                as_json,
                code=2,
            )
    try:
        cfg, ca = _init_all(data_dir, issuer)
    except SchemaMismatch as exc:
        fail(str(exc), as_json, code=3)
    except ValueError as exc:  # the issuer in an existing cityid.toml, other secrets
        fail(str(exc), as_json, code=2)
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "pki":
            raise
        fail(f"the CA cannot be set up: {exc} (see [ca] in docs/pki.md)", as_json, code=2)
    out(
        {
            "data_dir": str(data_dir),
            "issuer": cfg.issuer,
            "database": cfg.db_url.split("@")[-1],
            "ca_root_sha256": ca.root_fingerprint_sha256 if ca else None,
        },
        as_json,
        f"cityid initialised in {data_dir} (issuer {cfg.issuer})",
    )


def _init_all(data_dir: Path, issuer: str | None) -> tuple[Config, Any]:
    """Instance (config, migrations, signing keys), then the CA (idempotent)."""
    from idp.setup import init_instance

    cfg = init_instance(data_dir, issuer=issuer)
    try:
        import cli_pki
    except ModuleNotFoundError:
        return cfg, None
    return cfg, cli_pki.init_ca(cfg)


@main.command()
@data_dir_option
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT or unix:PATH")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--threads", default=4, show_default=True, type=click.IntRange(1, 1024), help="request threads per worker"
)
@click.option(
    "--server",
    type=click.Choice(["granian", "gunicorn"]),
    default="granian",
    show_default=True,
    help="production WSGI server",
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="one line per request (the TLS proxy in front usually logs them already)",
)
@click.option(
    "--drain-seconds",
    default=5.0,
    show_default=True,
    envvar="CITYID_DRAIN_SECONDS",
    type=click.FloatRange(0, 600),
    help="on SIGTERM, /health answers 503 this long (the load balancer takes the instance out) "
    "while every other request is still served; then the graceful stop",
)
def serve(
    data_dir: Path, bind: str, workers: int, threads: int, server: str, access_log: bool, drain_seconds: float
) -> None:
    """Serve cityid with a production WSGI server (granian by default, or gunicorn)."""
    from idp.serve import bind_problem, run, wait_for_database, while_database_away

    cfg = load_config(data_dir)
    if (problem := serve_problem(cfg)) is not None:
        fail(problem, code=2)
    if not bind.startswith("unix:"):
        host, _, port = bind.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            fail(f"--bind {bind!r}: use HOST:PORT (e.g. 127.0.0.1:8000) or unix:PATH", code=2)
    if (problem := bind_problem(bind)) is not None:
        fail(problem, code=2)
    engine = make_engine(cfg.db_url, pool=False)
    wait_for_database(engine)  # started during a database restart or failover: comes up with it
    from idp.instance import check_secrets

    def checks() -> str | None:  # again from the start if the database goes away meanwhile
        check_schema(engine)
        with transaction(make_session_factory(engine)) as s:
            check_secrets(s, cfg, record=True)  # an instance set up before the check values gets them
        return _ca_keys_problem(cfg, engine)

    try:
        problem = while_database_away(checks, "checking the instance")
    except SchemaMismatch as exc:
        fail(str(exc), code=3)  # as `cityid init` (docs/operations.md)
    if problem is not None:
        fail(
            f"this machine cannot use the CA's keys: {problem}. Every machine that serves needs the "
            "same key store (docs/pki.md: the ca-keys directory on shared storage, or an HSM)",
            code=2,
        )
    engine.dispose()
    run(
        cfg,
        bind=bind,
        workers=workers,
        threads=threads,
        server=server,
        access_log=access_log,
        drain_seconds=drain_seconds,
    )


def _ca_keys_problem(cfg: Config, engine: Any) -> str | None:
    try:
        import pki
    except ModuleNotFoundError:
        return None
    with make_session_factory(engine)() as s:
        try:
            store = pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase)
        except pki.PkiError as exc:
            return str(exc)
        return pki.check_key_store(s, cfg.ca, store, cfg.issuer)


@main.command()
@data_dir_option
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
def demo(data_dir: Path, bind: str) -> None:
    """Initialise a demo instance with a demo service and citizen, and serve it."""
    from idp.demo import prepare_demo
    from idp.serve import bind_problem, run

    host, _, port = bind.rpartition(":")
    if (problem := issuer_problem(f"http://{host}:{port}")) is not None:
        fail(f"{problem} (the demo serves plain http: bind it to 127.0.0.1 or localhost)", code=2)
    if (problem := bind_problem(bind)) is not None:
        fail(problem, code=2)
    _init_all(data_dir, f"http://{host}:{port}")
    cfg, info = prepare_demo(data_dir, issuer=f"http://{host}:{port}")
    click.echo(info)
    run(cfg, bind=bind, workers=1, demo=True, access_log=True)


# ----------------------------------------------------------------------------- clients


@main.group()
def client() -> None:
    """Relying services (OAuth/OIDC clients)."""


@client.command("add")
@data_dir_option
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option(
    "--grant-type",
    "grant_types",
    multiple=True,
    type=click.Choice(["authorization_code", "refresh_token", "client_credentials"]),
)
@click.option(
    "--auth-method",
    default="client_secret_basic",
    show_default=True,
    type=click.Choice(["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]),
)
@click.option("--scope", default="openid profile email", show_default=True)
@click.option("--post-logout-uri", "post_logout_uris", multiple=True)
@click.option("--backchannel-logout-uri")
@click.option("--min-level", type=click.Choice(["low", "substantial", "high"]))
@click.option(
    "--scope-level",
    "scope_levels",
    multiple=True,
    metavar="SCOPE=LEVEL",
    help="a scope that needs a level, e.g. payment=substantial",
)
@click.option("--public-subject", is_flag=True, help="same `sub` for all services (default: pairwise)")
@click.option("--id-token-alg", default="ES256", type=click.Choice(["ES256", "RS256"]))
@click.option(
    "--jwks-file",
    type=click.Path(exists=True, path_type=Path),
    help="client's public JWKS (private_key_jwt)",
)
@click.option("--client-id", help="choose the client_id (default: random)")
@click.option("--require-par", is_flag=True, help="authorization requests only pushed (RFC 9126)")
@click.option(
    "--allow-missing-pkce",
    is_flag=True,
    help="a legacy confidential client may leave out PKCE (RFC 9700 §2.1.1 wants it of every client)",
)
@click.option(
    "--profile",
    type=click.Choice(["fapi2"]),
    help="fapi2: FAPI 2.0 Security Profile (PAR, PKCE, private_key_jwt, DPoP/mTLS-bound tokens)",
)
@json_option
def client_add(
    data_dir: Path,
    name: str,
    redirect_uris: tuple[str, ...],
    grant_types: tuple[str, ...],
    auth_method: str,
    scope: str,
    post_logout_uris: tuple[str, ...],
    backchannel_logout_uri: str | None,
    min_level: str | None,
    scope_levels: tuple[str, ...],
    public_subject: bool,
    id_token_alg: str,
    jwks_file: Path | None,
    client_id: str | None,
    require_par: bool,
    allow_missing_pkce: bool,
    profile: str | None,
    as_json: bool,
) -> None:
    """Register a relying service. Its secret is shown once."""
    from idp.clients import ClientError, ClientSpec, add_client, client_as_dict
    from idp.config import LEVEL_HIGH, LEVEL_LOW, LEVEL_SUBSTANTIAL

    levels = {"low": LEVEL_LOW, "substantial": LEVEL_SUBSTANTIAL, "high": LEVEL_HIGH}
    parsed_levels = {}
    for item in scope_levels:
        sc, _, lv = item.partition("=")
        if lv not in levels:
            fail(f"--scope-level {item}: level must be low, substantial or high", as_json, 2)
        parsed_levels[sc] = levels[lv]
    spec = ClientSpec(
        name=name,
        redirect_uris=list(redirect_uris),
        grant_types=list(grant_types) or ["authorization_code", "refresh_token"],
        auth_method=auth_method,
        scope=scope,
        post_logout_redirect_uris=list(post_logout_uris),
        backchannel_logout_uri=backchannel_logout_uri,
        min_level=levels[min_level] if min_level else None,
        subject_type="public" if public_subject else "pairwise",
        id_token_alg=id_token_alg,
        jwks=_jwks_from(jwks_file, as_json) if jwks_file else None,
        scope_levels=parsed_levels,
        client_id=client_id,
        require_par=require_par,
        allow_missing_pkce=allow_missing_pkce,
        profile=profile or "",
    )
    try:
        with session_for(data_dir, as_json) as (cfg, s):
            row, secret = add_client(s, instance_keys(cfg), spec)
            data = client_as_dict(row) | {"client_secret": secret}
    except ClientError as exc:
        fail(str(exc), as_json, 2)
    human = f"client_id:     {data['client_id']}"
    if secret:
        human += f"\nclient_secret: {secret}\n(store the secret now: it is not shown again)"
    out(data, as_json, human)


def _jwks_from(path: Path, as_json: bool) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not JSON, or not UTF-8
        fail(f"--jwks-file {path}: not a JSON key set ({exc})", as_json, 2)


@client.command("list")
@data_dir_option
@json_option
def client_list(data_dir: Path, as_json: bool) -> None:
    from idp.clients import client_as_dict, list_clients

    with session_for(data_dir, as_json) as (_cfg, s):
        rows = [client_as_dict(c) for c in list_clients(s)]
    out(rows, as_json, "\n".join(_client_line(r) for r in rows) or "no clients")


def _client_line(r: dict[str, Any]) -> str:
    """One line of `client list`: id, name, and the security settings that differ per client."""
    flags = [f"profile={r['profile']}"] if r["profile"] else []
    if r["require_pushed_authorization_requests"]:
        flags.append("par")
    if r["allow_missing_pkce"]:
        flags.append("pkce-optional")
    return f"{r['client_id']}  {r['name']}" + (f"  [{' '.join(flags)}]" if flags else "")


@client.command("show")
@data_dir_option
@click.argument("client_id")
@json_option
def client_show(data_dir: Path, client_id: str, as_json: bool) -> None:
    from idp.clients import client_as_dict
    from idp.models import Client

    with session_for(data_dir, as_json) as (_cfg, s):
        row = s.get(Client, client_id)
        if row is None:
            fail(f"no client {client_id}", as_json, 4)
        data = client_as_dict(row)
    out(data, as_json, "\n".join(f"{k}: {v}" for k, v in data.items()))


@client.command("update")
@data_dir_option
@click.argument("client_id")
@click.option(
    "--min-level", type=click.Choice(["low", "substantial", "high", "none"]), help="none: no minimum"
)
@click.option(
    "--scope-level",
    "scope_levels",
    multiple=True,
    metavar="SCOPE=LEVEL",
    help="replaces all per-scope levels, e.g. payment=substantial (give none=none to clear)",
)
@click.option(
    "--require-par/--allow-unpushed",
    default=None,
    help="authorization requests only pushed (RFC 9126), or also in the URL",
)
@click.option(
    "--allow-missing-pkce/--require-pkce",
    default=None,
    help="a legacy confidential client may leave out PKCE, or (default) must send it",
)
@click.option(
    "--profile",
    type=click.Choice(["fapi2", "none"]),
    help="fapi2: FAPI 2.0 Security Profile; none: cityid's defaults",
)
@json_option
def client_update(
    data_dir: Path,
    client_id: str,
    min_level: str | None,
    scope_levels: tuple[str, ...],
    require_par: bool | None,
    allow_missing_pkce: bool | None,
    profile: str | None,
    as_json: bool,
) -> None:
    """Change a service's minimum level, per-scope levels, PAR and PKCE requirements or profile."""
    from idp.clients import ClientError, client_as_dict, update_client
    from idp.config import LEVEL_HIGH, LEVEL_LOW, LEVEL_SUBSTANTIAL

    levels = {"low": LEVEL_LOW, "substantial": LEVEL_SUBSTANTIAL, "high": LEVEL_HIGH}
    parsed: dict[str, str] | None = None
    if scope_levels:
        parsed = {}
        for item in scope_levels:
            sc, _, lv = item.partition("=")
            if (sc, lv) == ("none", "none"):
                continue
            if not sc or lv not in levels:
                fail(f"--scope-level {item}: level must be low, substantial or high", as_json, 2)
            parsed[sc] = levels[lv]
    minimum = None if min_level is None else levels.get(min_level, "")
    try:
        with session_for(data_dir, as_json) as (_cfg, s):
            row = update_client(
                s,
                client_id,
                min_level=minimum,
                scope_levels=parsed,
                require_par=require_par,
                allow_missing_pkce=allow_missing_pkce,
                profile=None if profile is None else ("" if profile == "none" else profile),
            )
            data = client_as_dict(row)
    except ClientError as exc:
        fail(str(exc), as_json, 4 if str(exc).startswith("no client") else 2)
    human = (
        f"updated {client_id}: min_level={data['min_level']} scope_levels={data['scope_levels']} "
        f"require_pushed_authorization_requests={data['require_pushed_authorization_requests']} "
        f"allow_missing_pkce={data['allow_missing_pkce']} profile={data['profile']}"
    )
    out(data, as_json, human)


@client.command("remove")
@data_dir_option
@click.argument("client_id")
@json_option
def client_remove(data_dir: Path, client_id: str, as_json: bool) -> None:
    from idp.clients import ClientError, remove_client

    try:
        with session_for(data_dir, as_json) as (_cfg, s):
            remove_client(s, client_id)
    except ClientError as exc:
        fail(str(exc), as_json, 4)
    out({"removed": client_id}, as_json, f"removed {client_id}")


# ----------------------------------------------------------------------------- users


@main.group()
def user() -> None:
    """Citizen accounts."""


@user.command("add")
@data_dir_option
@click.option("--email", required=True)
@click.password_option(envvar="CITYID_NEW_USER_PASSWORD")
@click.option("--verified", is_flag=True, help="mark the e-mail address as verified")
@json_option
def user_add(data_dir: Path, email: str, password: str, verified: bool, as_json: bool) -> None:
    """Create a citizen account (the password is asked for, or taken from the environment)."""
    from idp.accounts import AccountError, create_account

    try:
        with session_for(data_dir, as_json) as (cfg, s):
            acct = create_account(s, instance_keys(cfg), email, password, verified=verified, actor="admin")
            data = {"id": acct.id, "email_verified": verified}
    except AccountError as exc:
        fail(str(exc), as_json, 2)
    out(data, as_json, f"account {data['id']} created")


@user.command("list")
@data_dir_option
@json_option
def user_list(data_dir: Path, as_json: bool) -> None:
    """List the accounts: id, e-mail address, whether confirmed or disabled."""
    from idp.accounts import email_of
    from idp.models import Account

    with session_for(data_dir, as_json) as (cfg, s):
        keys = instance_keys(cfg)
        rows = [
            {
                "id": a.id,
                "email": email_of(keys, a),
                "email_verified": a.email_verified_at is not None,
                "disabled": a.disabled,
                "created_at": a.created_at.isoformat(),
            }
            for a in s.execute(select(Account).order_by(Account.created_at)).scalars()
        ]
    out(
        rows,
        as_json,
        "\n".join(f"{r['id']}  {r['email']}{'  (disabled)' if r['disabled'] else ''}" for r in rows)
        or "no accounts",
    )


@user.command("disable")
@data_dir_option
@click.argument("email_or_id")
@json_option
def user_disable(data_dir: Path, email_or_id: str, as_json: bool) -> None:
    """Disable an account: it cannot log in; its sessions end (services are told) and its tokens."""
    from idp.admin import disable_account
    from idp.keys import KeyCache

    with session_for(data_dir, as_json) as (cfg, s):
        keys = KeyCache(cfg.key_passphrase or cfg.secret_key)
        acct_id = disable_account(s, instance_keys(cfg), email_or_id, key_cache=keys, issuer=cfg.issuer)
        if acct_id is None:
            fail(f"no account {email_or_id}", as_json, 4)
    out({"disabled": acct_id}, as_json, f"account {acct_id} disabled")


@user.group("role")
def user_role() -> None:
    """Staff roles: ``analyst`` and ``admin`` see the insights dashboard (/insights)."""


def _change_role(data_dir: Path, email_or_id: str, role: str, grant: bool, as_json: bool) -> None:
    from idp.insights.access import UnknownRole, change_role

    with session_for(data_dir, as_json) as (cfg, s):
        try:
            acct_id = change_role(s, instance_keys(cfg), email_or_id, role, grant=grant)
        except UnknownRole as exc:
            fail(str(exc), as_json, 2)
        if acct_id is None:
            fail(f"no account {email_or_id}", as_json, 4)
    verb = "granted to" if grant else "withdrawn from"
    out(
        {"account": acct_id, "role": role, "granted": grant}, as_json, f"role {role} {verb} account {acct_id}"
    )


@user_role.command("add")
@data_dir_option
@click.argument("email_or_id")
@click.argument("role", type=click.Choice(["analyst", "admin"]))
@json_option
def user_role_add(data_dir: Path, email_or_id: str, role: str, as_json: bool) -> None:
    """Grant ROLE to the account (analyst: read the insights; admin: the same, for now)."""
    _change_role(data_dir, email_or_id, role, True, as_json)


@user_role.command("remove")
@data_dir_option
@click.argument("email_or_id")
@click.argument("role", type=click.Choice(["analyst", "admin"]))
@json_option
def user_role_remove(data_dir: Path, email_or_id: str, role: str, as_json: bool) -> None:
    """Withdraw ROLE from the account."""
    _change_role(data_dir, email_or_id, role, False, as_json)


@user.command("enable")
@data_dir_option
@click.argument("email_or_id")
@json_option
def user_enable(data_dir: Path, email_or_id: str, as_json: bool) -> None:
    """Enable a disabled account again: the citizen can log in (old sessions stay ended)."""
    from idp.admin import enable_account

    with session_for(data_dir, as_json) as (cfg, s):
        acct_id = enable_account(s, instance_keys(cfg), email_or_id)
        if acct_id is None:
            fail(f"no account {email_or_id}", as_json, 4)
    out({"enabled": acct_id}, as_json, f"account {acct_id} enabled")


def _account_or_fail(s: Session, keys: Any, email_or_id: str, as_json: bool) -> Any:
    """The account an administrator names by e-mail address or id; exit 4 if there is none."""
    from idp.admin import find_account

    acct = find_account(s, keys, email_or_id)
    if acct is None:
        fail(f"no account {email_or_id}", as_json, 4)
    return acct


@contextmanager
def _app_transaction(data_dir: Path, as_json: bool) -> Iterator[tuple[Config, Any, Session]]:
    """The application (its packages' export and erasure hooks, the CA) and one transaction:
    for what an administrator does on a citizen's behalf."""
    from idp.app import create_app

    cfg = load_config(data_dir)
    _refuse_missing_database(cfg, as_json)
    try:
        app = create_app(cfg)
    except SchemaMismatch as exc:
        fail(str(exc), as_json, code=3)
    rt = app.extensions["cityid"]
    try:
        with app.app_context(), transaction(rt.sessions) as s:
            yield cfg, rt, s
    finally:
        rt.courier.stop()
        rt.engine.dispose()


@user.command("unlink-eid")
@data_dir_option
@click.argument("email_or_id")
@json_option
def user_unlink_eid(data_dir: Path, email_or_id: str, as_json: bool) -> None:
    """Remove an account's ID card link (a new card has a new pseudonym and cannot be linked
    next to the old one; a lost card must not log in). The citizen is told by e-mail; after it,
    the next ID card login with the password links the card she has now."""
    from db import audit
    from idp import eid_store
    from idp.accounts import email_of
    from idp.mail import queue_mail

    with session_for(data_dir, as_json) as (cfg, s):
        keys = instance_keys(cfg)
        acct = _account_or_fail(s, keys, email_or_id, as_json)
        if not eid_store.unlink(s, acct.id):
            fail(f"account {acct.id} has no ID card linked", as_json, 4)
        audit.record(
            s,
            action="eid.unlink",
            outcome="success",
            actor="admin",
            subject=acct.id,
            reason="by the service desk",
        )
        queue_mail(  # sent by the next worker's mail thread (the outbox)
            s,
            keys,
            email_of(keys, acct),
            f"{cfg.branding.city_name}: ID card removed from your account",
            "The city's service desk removed the ID card from your account. If you did not ask for "
            f"this, contact the service desk and change your password: {cfg.issuer}/account/password\n\n"
            "Der Service der Stadt hat den Personalausweis von Ihrem Konto entfernt. Wenn Sie das "
            "nicht veranlasst haben, wenden Sie sich an den Service und ändern Sie Ihr Passwort.",
            account_id=acct.id,
        )
    out({"unlinked": acct.id}, as_json, f"ID card removed from account {acct.id}")


@user.command("export")
@data_dir_option
@click.argument("email_or_id")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), help="default: stdout")
def user_export(data_dir: Path, email_or_id: str, out_file: Path | None) -> None:
    """Everything held about an account, as the citizen's own download (GDPR Art. 15, 20): for a
    request by letter, or an account that is disabled or cannot log in any more."""
    from db import audit
    from idp.privacy import export_account

    target, written, fresh = None, False, None
    if out_file is not None:  # opened first: an export that cannot be written is not audited as done
        # a new file beside the target (readable by the admin only, never through a planted
        # link), renamed onto it once the export is done: a failure leaves what was there
        fresh = out_file.with_name(f".{out_file.name}.{secrets.token_hex(4)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        target = os.fdopen(os.open(fresh, flags, 0o600), "w", encoding="utf-8")
    try:
        with _app_transaction(data_dir, True) as (cfg, rt, s):
            acct = _account_or_fail(s, rt.keys, email_or_id, True)
            data = export_account(s, rt.keys, acct.id, controller=cfg.branding.city_name)
            text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)
            if target is not None:
                target.write(text + "\n")
                target.flush()
                os.fsync(target.fileno())
            audit.record(
                s,
                action="data.export",
                outcome="success",
                actor="admin",
                subject=acct.id,
                reason="exported by an administrator (GDPR Art. 15)",
            )
        written = True
    finally:
        if target is not None and fresh is not None and out_file is not None:
            target.close()
            if written:
                os.replace(fresh, out_file)  # a link at out_file is replaced, not followed
            else:
                fresh.unlink()  # no half export, nothing for an unknown account
    if target is None:
        click.echo(text)


@user.command("delete")
@data_dir_option
@click.argument("email_or_id")
@click.option("--yes", is_flag=True, help="confirm: the account and its data are erased for good")
@json_option
def user_delete(data_dir: Path, email_or_id: str, yes: bool, as_json: bool) -> None:
    """Erase an account as the citizen's own deletion does (GDPR Art. 17): services are told,
    tokens revoked, device certificates revoked, the audit log pseudonymised."""
    from db import audit
    from idp.privacy import erase_account

    if not yes:
        fail("erasure cannot be undone: add --yes", as_json, 2)
    with _app_transaction(data_dir, as_json) as (cfg, rt, s):
        acct = _account_or_fail(s, rt.keys, email_or_id, as_json)
        result = erase_account(s, rt.keys, rt.key_cache, issuer=cfg.issuer, account_id=acct.id)
        audit.record(
            s,
            action="account.delete",
            outcome="success",
            actor="admin",
            subject=result.pseudonym,
            reason="erased by an administrator (GDPR Art. 17)",
            details={
                "sessions": result.sessions,
                "grants": result.grants,
                "logout_notices": result.logout_notices,
            },
        )
    out({"erased": result.pseudonym}, as_json, f"account erased; the audit log names it {result.pseudonym}")


# ----------------------------------------------------------------------------- keys, audit


@main.group()
def keys() -> None:
    """Token-signing keys."""


@keys.command("rotate")
@data_dir_option
@click.option("--alg", default="ES256", type=click.Choice(["ES256", "RS256"]))
@click.option(
    "--publish-ahead",
    default=3600,
    show_default=True,
    type=click.IntRange(min=0),
    help="seconds the new key is published before it signs",
)
@json_option
def keys_rotate(data_dir: Path, alg: str, publish_ahead: int, as_json: bool) -> None:
    from idp.keys import rotate

    with session_for(data_dir, as_json) as (cfg, s):
        lifetime = max(cfg.access_token_lifetime_seconds, cfg.id_token_lifetime_seconds)
        new = rotate(
            s,
            cfg.key_passphrase or cfg.secret_key,
            alg=alg,
            publish_ahead=dt.timedelta(seconds=publish_ahead),
            max_token_lifetime=dt.timedelta(seconds=lifetime + 300),
        )
        data = {"kid": new.kid, "alg": alg, "active_from": new.active_from.isoformat()}
    out(data, as_json, f"new {alg} key {data['kid']} signs from {data['active_from']}")


@main.group()
def audit() -> None:
    """The audit log."""


@audit.command("list")
@data_dir_option
@click.option("--party", help="an account's e-mail address or id, or a client id: as actor or subject")
@click.option("--action", "action_prefix", help="actions starting with this, e.g. login. or token.refuse")
@click.option("--outcome", type=click.Choice(["success", "failure", "denied", "info"]))
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="UTC, e.g. 2026-11-24 or 2026-11-24T06:00",
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@json_option
def audit_list(
    data_dir: Path,
    party: str | None,
    action_prefix: str | None,
    outcome: str | None,
    since: dt.datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show audit entries, newest first, for the helpdesk or an investigation."""
    from db import audit as audit_log
    from idp.admin import find_account

    with session_for(data_dir, as_json) as (cfg, s):
        if party is not None and "@" in party:
            acct = find_account(s, instance_keys(cfg), party)
            if acct is None:
                fail(f"no account {party}", as_json, 4)
            party = acct.id
        found = audit_log.entries(
            s,
            party=party,
            action_prefix=action_prefix,
            outcome=outcome,
            since=since.replace(tzinfo=dt.UTC) if since is not None else None,
            limit=limit,
        )
        rows = [
            {
                "seq": e.seq,
                "at": e.at.isoformat(),
                "action": e.action,
                "outcome": e.outcome,
                "actor": e.actor,
                "subject": e.subject,
                "reason": e.reason,
                "details": json.loads(e.details or "{}"),
            }
            for e in found
        ]
    out(
        rows,
        as_json,
        "\n".join(
            f"{r['seq']:>8}  {r['at'][:19]}  {r['outcome']:<7}  {r['action']:<28}  "
            f"{r['actor']} -> {r['subject']}  {r['reason']}"
            for r in rows
        )
        or "no entries",
    )


_ANCHOR = re.compile(r"([0-9]{1,18}):([0-9a-f]{64})")


def _anchor(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[int, str]:
    anchors: dict[int, str] = {}
    for value in values:
        m = _ANCHOR.fullmatch(value.strip().lower())
        if m is None:
            raise click.BadParameter(f"{value!r}: use SEQ:HASH as `audit verify --json` prints them")
        anchors[int(m.group(1))] = m.group(2)
    return anchors


@audit.command("verify")
@data_dir_option
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    callback=_anchor,
    metavar="SEQ:HASH",
    help="an entry's hash from an earlier run (last_seq:last_hash), kept outside the database",
)
@json_option
def audit_verify(data_dir: Path, anchors: dict[int, str], as_json: bool) -> None:
    """Check the audit log's hash chain (and that anchored entries are unchanged)."""
    from db import audit as audit_log

    with session_for(data_dir, as_json) as (_cfg, s):
        # entries a stopped process committed, not chained; and the chain on disk before it is read
        audit_log.chain_pending(s.get_bind(), durable=True)
        res = audit_log.verify(s, anchors)
    data = {
        "ok": res.ok,
        "entries": res.entries,
        "first_bad_seq": res.first_bad_seq,
        "problem": res.problem,
        "last_seq": res.last_seq,
        "last_hash": res.last_hash,
        "anchors_checked": len(anchors),
        "sequence_gaps": res.gaps,
        "first_gap": res.first_gap,
        "pending": res.pending,
    }
    gaps = (
        f"; {res.gaps} unused sequence number(s) from {res.first_gap} on, left by rolled-back "
        "transactions of an earlier release: the chain shows no entry is missing there"
        if res.gaps
        else ""
    )
    out(
        data,
        as_json,
        f"audit log intact ({res.entries} entries; keep as anchor: {res.last_seq}:{res.last_hash}{gaps})"
        if res.ok
        else f"audit log BROKEN at {res.first_bad_seq}: {res.problem}",
    )
    if not res.ok:
        sys.exit(5)


@main.command()
@data_dir_option
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@json_option
def backup(data_dir: Path, out_file: Path, as_json: bool) -> None:
    """Write one archive (mode 0600) with the database snapshot, cityid.toml and the key store."""
    from idp.backup import BackupError, create

    try:
        cfg = load_config(data_dir)
        res = create(cfg, out_file)
    except (BackupError, ConfigError, OSError) as exc:
        fail(str(exc), as_json, code=2)
    data = {
        "backup": str(res.path),
        "database": res.database,
        "files": res.files,
        "audit_last_seq": res.audit_last_seq,
        "audit_last_hash": res.audit_last_hash,
    }
    out(
        data,
        as_json,
        f"backup written to {res.path} ({res.database}, {res.files} files; it holds the instance's "
        f"secrets: keep it encrypted and offline; audit anchor {res.audit_last_seq}:{res.audit_last_hash})",
    )


@main.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@data_dir_option
@click.option(
    "--database-url",
    envvar="CITYID_DATABASE_URL",
    default="",
    help="PostgreSQL backups: the empty database to restore into",
)
@json_option
def restore(archive: Path, data_dir: Path, database_url: str, as_json: bool) -> None:
    """Restore a backup into a new, empty data dir (and an empty PostgreSQL database)."""
    from idp.backup import BackupError
    from idp.backup import restore as do_restore

    try:
        res = do_restore(archive, data_dir, database_url=database_url)
    except (BackupError, OSError) as exc:
        fail(str(exc), as_json, code=2)
    data = {
        "data_dir": str(res.data_dir),
        "database": res.database,
        "backup_created_at": res.created_at,
        "audit_entries": res.audit_entries,
        "audit_last_seq": res.audit_last_seq,
    }
    out(
        data,
        as_json,
        f"restored the backup of {res.created_at} into {res.data_dir} ({res.database}; audit log "
        f"verified to its anchor, {res.audit_entries} entries). Accounts erased since then are back: "
        "erase them again (docs/operations.md, Backups)",
    )


def _add_area_commands(group: click.Group) -> None:
    for name in ("cli_pki", "cli_device", "cli_signing", "cli_credentials", "cli_insights"):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        for cmd in mod.COMMANDS:
            group.add_command(cmd)


if __name__ == "__main__":
    # `python -m cli`: run the module under its own name, which the area modules import from
    # (loading them from __main__ would import this file a second time, half-initialised)
    import cli

    cli.main()
else:
    _add_area_commands(main)
