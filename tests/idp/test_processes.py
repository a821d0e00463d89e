"""Two `cityid serve` processes on one database behave as one; the CLI's contracts."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from click.testing import CliRunner

from tests.idp.conftest import csrf, free_port, query

CITYID = [sys.executable, "-m", "cli"]
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def cityid(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``cityid ARGS --data-dir DATA_DIR``. ``serve`` runs as its own process; every other command
    runs in this one through click's CliRunner: the same command function, exit code, stdout and
    stderr, without the second of CPU a new interpreter spends importing cityid."""
    argv = [*args, "--data-dir", str(data_dir)]
    if args[0] == "serve":
        res = subprocess.run(
            [*CITYID, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
    else:
        import cli

        ran = CliRunner(env=env).invoke(cli.main, argv, prog_name="cityid", catch_exceptions=True)
        stderr = ran.stderr
        if ran.exception is not None and not isinstance(ran.exception, SystemExit):
            stderr += "".join(traceback.format_exception(ran.exception))
        res = subprocess.CompletedProcess(["cityid", *argv], ran.exit_code, ran.stdout, stderr)
    if check and res.returncode != 0:
        raise AssertionError(f"cityid {args} failed: {res.stdout}\n{res.stderr}")
    return res


def write_config(data_dir: Path, db_url: str, issuer: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "cityid.toml").write_text(
        f'issuer = "{issuer}"\nsecret_key = "{secrets.token_urlsafe(32)}"\n'
        f'key_passphrase = "{secrets.token_urlsafe(32)}"\ndatabase_url = "{db_url}"\n'
    )


@pytest.fixture
def two_servers(db_url: str, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    data = tmp_path / "data"
    pa, pb = free_port(), free_port()
    issuer = f"http://127.0.0.1:{pa}"
    write_config(data, db_url, issuer)
    cityid(data, "init")
    # one process on each production server: granian (the default) and gunicorn
    procs = [
        subprocess.Popen(
            [*CITYID, "serve", "--data-dir", str(data), "--bind", f"127.0.0.1:{p}", "--workers", "1"]
            + (["--server", server] if server else []),
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"serve-{p}.log").open("w"),
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,  # its own process group: the workers go down with it
        )
        for p, server in ((pa, None), (pb, "gunicorn"))
    ]
    try:
        for p in (pa, pb):
            for _ in range(300):
                try:
                    if requests.get(f"http://127.0.0.1:{p}/jwks.json", timeout=1).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.1)
            else:
                raise AssertionError("server did not start")
        yield data, issuer, f"http://127.0.0.1:{pb}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group: no orphans
            proc.wait()


def test_authorize_on_one_process_tokens_on_another(two_servers: Any) -> None:
    data, a, b = two_servers
    redirect = "http://127.0.0.1:9/cb"
    client = json.loads(
        cityid(data, "client", "add", "--name", "Svc", "--redirect-uri", redirect, "--json").stdout
    )
    cityid(
        data,
        "user",
        "add",
        "--email",
        "hans@example.org",
        "--verified",
        env={"CITYID_NEW_USER_PASSWORD": PASSWORD},
    )
    http = requests.Session()
    rp = OAuth2Session(
        client["client_id"],
        client["client_secret"],
        scope="openid email",
        redirect_uri=redirect,
        code_challenge_method="S256",
    )
    verifier = secrets.token_urlsafe(48)
    url, _ = rp.create_authorization_url(f"{a}/authorize", code_verifier=verifier)
    r = http.get(url, allow_redirects=False)
    page = http.get(a + r.headers["Location"])
    r = http.post(
        f"{a}/login",
        data={"csrf_token": csrf(page.text), "email": "hans@example.org", "password": PASSWORD},
        allow_redirects=False,
    )
    consent = http.get(a + r.headers["Location"])
    r = http.post(
        a + r.headers["Location"],
        allow_redirects=False,
        data={"csrf_token": csrf(consent.text), "decision": "allow"},
    )
    code = query(r.headers["Location"])["code"]
    # step 2 on the other process
    tok = rp.fetch_token(f"{b}/token", code=code, code_verifier=verifier)
    assert tok["id_token"]
    info = requests.get(
        f"{b}/userinfo", headers={"Authorization": f"Bearer {tok['access_token']}"}, timeout=10
    ).json()
    assert info["email"] == "hans@example.org"
    new = rp.refresh_token(f"{b}/token", refresh_token=tok["refresh_token"])
    replay = requests.post(
        f"{a}/token",
        auth=(client["client_id"], client["client_secret"]),
        data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]},
        timeout=10,
    )
    assert replay.json()["error"] == "invalid_grant"
    intro = requests.post(
        f"{a}/introspect",
        auth=(client["client_id"], client["client_secret"]),
        data={"token": new["access_token"]},
        timeout=10,
    ).json()
    assert intro == {"active": False}  # family revoked, seen by the other process
    verify = json.loads(cityid(data, "audit", "verify", "--json").stdout)
    assert verify["ok"] and verify["entries"] > 5


def test_cli_refuses_unmigrated_database_with_clear_message(tmp_path: Path) -> None:
    data = tmp_path / "d"
    write_config(data, f"sqlite:///{tmp_path / 'empty.sqlite3'}", "http://127.0.0.1:1")
    res = cityid(data, "client", "list", "--json", check=False)
    assert res.returncode == 3 and "cityid init" in json.loads(res.stdout)["error"]
    res = cityid(data, "serve", check=False)
    assert res.returncode == 3 and "cityid init" in res.stderr  # as client commands and init
    for args in (("cert", "list"), ("device", "list")):  # the CA and device commands too
        res = cityid(data, *args, check=False)
        assert res.returncode == 3 and "cityid init" in res.stderr, (args, res.stderr[-300:])


def test_init_is_idempotent_and_client_commands_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "d"
    cityid(data, "init")
    cityid(data, "init")
    added = json.loads(
        cityid(
            data,
            "client",
            "add",
            "--name",
            "Portal",
            "--redirect-uri",
            "https://portal.example/cb",
            "--min-level",
            "low",
            "--json",
        ).stdout
    )
    listed = json.loads(cityid(data, "client", "list", "--json").stdout)
    assert [c["client_id"] for c in listed] == [added["client_id"]]
    assert "client_secret" not in listed[0]
    bad = cityid(
        data,
        "client",
        "add",
        "--name",
        "X",
        "--redirect-uri",
        "http://evil.example/cb",
        "--json",
        check=False,
    )
    assert bad.returncode == 2 and "https" in json.loads(bad.stdout)["error"]
    cityid(data, "client", "remove", added["client_id"])
    assert cityid(data, "client", "show", added["client_id"], check=False).returncode == 4


def test_serve_listens_on_a_unix_socket_for_a_proxy_on_the_same_machine(tmp_path: Path) -> None:
    import socket as sock

    data = tmp_path / "d"
    cityid(data, "init")
    path = tmp_path / "cityid.sock"
    proc = subprocess.Popen(
        [*CITYID, "serve", "--data-dir", str(data), "--bind", f"unix:{path}", "--workers", "1"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        reply = b""
        for _ in range(100):
            try:
                with sock.socket(sock.AF_UNIX) as s:
                    s.connect(str(path))
                    s.sendall(b"GET /jwks.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    while chunk := s.recv(65536):
                        reply += chunk
                break
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.1)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b'"keys"' in reply
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
