"""Faults: several ``cityid serve`` on one PostgreSQL, a mixed workload, kills and outages; then
the invariants. Prints one JSON document (``ok``: every invariant held).

    python -m bench.faults --minutes 10                 # the long run
    python -m bench.faults --profile short              # <= 90 s (tests/faults/test_faults_short.py)
    python -m bench.faults --profile rolling            # rolling restart (tests/faults/test_rolling_restart.py)
    python -m bench.faults --profile rolling --drain-seconds 0   # the same without the drain

Rolling restart (``--profile rolling``, no faults): the instances run ``cityid serve
--drain-seconds 1.5``, the proxy checks ``GET /health`` of each every 0.2 s and sends new
connections only to those whose last answer was 200, and does not retry a refused connection
elsewhere; each instance in turn gets SIGTERM (it answers /health 503 and serves on while the
proxy takes it out), exits (code noted), is started again and taken back at its first 200.
Invariant ``rolling_restart``: every instance restarted, 0 failed requests (no 5xx, no
connection closed unanswered), every exit code 0.

Set-up: a PRIVATE PostgreSQL 15 cluster (``initdb`` in a temporary directory, its own port, run
as the ``postgres`` user when we are root), never the shared one, because this bench restarts
it. ``--instances`` (default 2) ``cityid serve --workers 1`` behind a small round-robin TCP proxy
(a new backend per connection; a backend that refuses the connection is skipped, as a load
balancer's health check would), an aiosmtpd SMTP server, a back-channel logout receiver.

Workload (threads, all through the proxy unless said):
- ``login``: authorization code + PKCE with the password, then a chain of refreshes (rotation);
- ``client_credentials`` tokens;
- ``lifecycle``: ``cityid user add`` (CLI), a login at the service with a back-channel logout
  URI, ``cityid user delete`` (CLI): the erasure queues a logout token for the receiver;
- ``mail``: POST /forgot for accounts of a mail pool: a reset link by SMTP;
- ``certs``: ``cityid cert issue`` (tls-server profile, CLI) and ``cityid cert revoke``;
- ``devices``: a citizen without a device (made at set-up; once those are used, by ``cityid user
  add``), the city app's login (public client, PKCE, a DPoP-bound ``smartcard:enroll`` token),
  an enrolment of a soft token with Android key attestation under a TEST root trusted by this
  run's configuration only (``smartcard.softtoken``), then a PKI-2FA login at a service asking
  for ``acr_values`` substantial: the password, the device's approval of the pending login (its
  binding code checked against the page's), the page's continue button.

Faults: ``kill -9`` of one instance (its process group) every ``--kill-every`` seconds, restarted
at once; one ``pg_ctl restart -m fast`` of the private cluster; the SMTP server and the
back-channel receiver down for a while. Then recovery: the load stops, the outboxes drain.

Invariants (each with its counts; see ``check``): the effect of every 2xx answer is in the
database (an enrolment answered 201: its device, with the certificate it was sent, issued);
refused/failed requests left no partial effect (no device without an issued certificate);
``cityid audit verify`` passes and the audit log holds an entry for every state change seen
(every device row has its ``smartcard.enroll`` entry); every PKI-2FA login's ID token says
``acr`` substantial; no certificate serial twice and every certificate the CLI signed recorded;
no refresh-token family with two live successors; every queued mail and logout token delivered
or recorded as given up (or, for the short profile's mails, still queued for a retry) and never
dropped: at least once, and a repeat (a kill between the peer's acceptance and the row's update)
is the same message (mail: the same Message-ID; logout token: the same ``jti``); no process
ended by a signal we did not send, and none ended on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from bench._server import ROOT, free_port

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/cb"
APP_REDIRECT = "http://127.0.0.1:9/app"
SUBSTANTIAL = "http://eidas.europa.eu/LoA/substantial"
APP_PACKAGE = "de.musterstadt.cityapp"  # the city app the TEST attestation root vouches for
APP_SIGNING_DIGEST = hashlib.sha256(b"cityid faults app signing certificate").digest()
# a request cut at the restart answers once the instance notices (its connection's next use):
# within this long after `pg_ctl restart` returned
RESTART_GRACE_SECONDS = 5.0
PG_BIN = Path(os.environ.get("CITYID_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass
class Profile:
    seconds: float
    instances: int = 2
    kill_every: float = 8.0
    pg_restart_at: float = 0.5  # fraction of the run
    outage_at: float = 0.2  # SMTP and receiver down from here ...
    outage_seconds: float = 60.0  # ... for this long
    recovery_seconds: float = 420.0  # at most, for the outboxes to drain (mail lease: 5 min)
    login_threads: int = 3
    cc_threads: int = 2
    mail_pool: int = 300
    device_threads: int = 1  # enrolment + PKI-2FA login chains
    device_pool: int = 200  # citizens made at set-up for them (then `cityid user add` each)
    # rolling restart (``--profile rolling``): no faults; each instance in turn gets SIGTERM, is
    # drained (``cityid serve --drain-seconds``) out of the health-checking proxy, exits and is
    # started again
    rolling: bool = False
    drain_seconds: float = 0.0  # `cityid serve --drain-seconds` of every instance
    health_interval: float | None = None  # the proxy checks GET /health this often (None: never)
    settle_seconds: float = 2.0  # load before the first and after the last restart
    # the proxy tries the next backend when one refuses the connection; without (rolling), a
    # refused connection is the client's failed request, as behind a load balancer that does
    # not retry, or one whose pooled connection to the backend is cut
    proxy_retries: bool = True


def profile_for(name: str, minutes: float) -> Profile:
    if name == "short":
        # mails not taken during the outage are retried after 1 minute (idp.mail): here they
        # may still be queued at the end (counted as retry scheduled, not lost); the long run
        # shows them delivered
        return Profile(
            seconds=22,
            kill_every=6,
            pg_restart_at=0.5,
            outage_at=0.0,
            outage_seconds=4,
            recovery_seconds=20,
            login_threads=2,
            cc_threads=1,
            mail_pool=30,
            # citizens made at set-up: a kill every 6 s cuts many a chain of a citizen made by
            # CLI first (one such run had 2 enrolments and no PKI-2FA login); with these, 11-17
            device_pool=20,
        )
    if name == "rolling":  # tests/faults/test_rolling_restart.py
        return Profile(
            seconds=0,
            kill_every=1e9,
            pg_restart_at=2.0,
            outage_at=2.0,
            recovery_seconds=20,
            # light: the restarts' own start-up (two interpreters importing cityid) is the cost
            login_threads=1,
            cc_threads=1,
            mail_pool=10,
            device_threads=0,
            rolling=True,
            drain_seconds=1.5,
            health_interval=0.2,  # as a real load balancer's, scaled down: well within the drain
            settle_seconds=1.0,
            proxy_retries=False,  # only the drain, not a retry, keeps the requests from failing
        )
    if name == "pooler":  # no faults: the workload through PgBouncer (tests/faults/test_pgbouncer.py)
        return Profile(
            seconds=15,
            kill_every=1e9,
            pg_restart_at=2.0,
            outage_at=2.0,
            recovery_seconds=20,
            login_threads=2,
            cc_threads=1,
            mail_pool=30,
        )
    return Profile(seconds=minutes * 60)


# --------------------------------------------------------------------------- private PostgreSQL


class PgCluster:
    """A PostgreSQL 15 cluster of our own: ``initdb`` + ``pg_ctl`` (as ``postgres`` if root)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "pgdata"
        self.sock = root / "pgsock"
        self.port = free_port()
        self.log = root / "postgres.log"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(PG_BIN / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir.parent, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run("initdb", "-D", str(self.dir), "--auth=trust", "-U", "postgres", "-E", "UTF8")
        with (self.dir / "postgresql.conf").open("a") as fh:
            fh.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sock}'\nmax_connections = 200\n"
                "fsync = on\nshared_buffers = 64MB\n"
            )
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "cityid")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-l", str(self.log), "-w", "start")

    def restart(self) -> float:
        t0 = time.monotonic()
        self._run("pg_ctl", "-D", str(self.dir), "-l", str(self.log), "-m", "fast", "-w", "restart")
        return time.monotonic() - t0

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-m", "immediate", "-w", "stop", check=False)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/cityid"


class PgBouncer:
    """PgBouncer (Debian ``pgbouncer``) in transaction pooling mode in front of ``pg``."""

    def __init__(self, root: Path, pg: PgCluster) -> None:
        self.dir, self.pg = root / "pgbouncer", pg
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(exist_ok=True)
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\ncityid = host=127.0.0.1 port={self.pg.port} dbname=cityid user=postgres\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'userlist.txt'}\npool_mode = transaction\n"
            "max_client_conn = 500\ndefault_pool_size = 20\nserver_reset_query =\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
        )
        cmd = ["pgbouncer", str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            shutil.chown(self.dir, "postgres")
            for f in self.dir.iterdir():
                shutil.chown(f, "postgres")
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def url(self, query: str = "") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/cityid{query}"


# --------------------------------------------------------------------------- peers


class SmtpSink:
    """aiosmtpd on a fixed port; ``down()``/``up()`` simulate the mail server's outage."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[str] = []
        self.lock = threading.Lock()
        self.controller: Any = None

    def up(self) -> None:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink.lock:
                    sink.messages.append(envelope.content.decode("utf-8", "replace"))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def down(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


class LogoutReceiver:
    """The services' back-channel logout endpoint: records every logout token it is sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.tokens: list[str] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0)).decode()
                token = parse_qs(body).get("logout_token", [""])[0]
                with recv.lock:
                    recv.tokens.append(token)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Proxy:
    """Round robin per TCP connection over the instances; a refused backend is skipped.

    ``health_interval``: as a load balancer's active health check, ``GET /health`` of every
    backend this often; only those whose last answer was 200 get new connections (a 503 from
    a draining instance, a refused connection or no answer within the interval takes it out;
    with none healthy, all are tried). ``retries``: whether a refused connection is tried on the
    next backend; if not, the client's connection is closed unanswered."""

    def __init__(
        self, port: int, backends: list[int], health_interval: float | None = None, retries: bool = True
    ) -> None:
        self.port, self.backends = port, backends
        self.health_interval = health_interval
        self.retries = retries
        self.healthy = set(backends)
        self.i = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._conn, "127.0.0.1", self.port)
        if self.health_interval is not None:
            checks = [asyncio.create_task(self._check(port, self.health_interval)) for port in self.backends]
            self._checks = checks  # referenced: the loop keeps only weak references to tasks
        self.ready.set()
        async with server:
            await server.serve_forever()

    async def _check(self, port: int, interval: float) -> None:
        # a second for the answer (a busy machine's slow answer is no failure), as a load
        # balancer's check timeout; a 503 or a refused connection counts at once
        timeout = max(1.0, interval)
        while True:
            healthy = False
            with contextlib.suppress(OSError, asyncio.TimeoutError, ValueError):
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
                try:
                    w.write(b"GET /health HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
                    status = await asyncio.wait_for(r.readline(), timeout)
                    healthy = status.split(b" ")[1:2] == [b"200"]
                finally:
                    w.close()
            if healthy:
                self.healthy.add(port)
            else:
                self.healthy.discard(port)
            await asyncio.sleep(interval)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        for _ in range(len(self.backends) * 3):
            rotation = [b for b in self.backends if b in self.healthy] or self.backends
            self.i += 1
            port = rotation[self.i % len(rotation)]
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                if not self.retries:
                    break
                await asyncio.sleep(0.05)
        if upstream is None:
            writer.close()
            return
        ur, uw = upstream

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    w.close()

        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))


class Instance:
    """One ``cityid serve --workers 1`` in its own process group."""

    def __init__(self, data: Path, port: int, n: int, drain_seconds: float = 0.0) -> None:
        self.data, self.port, self.n = data, port, n
        self.drain_seconds = drain_seconds
        self.stopping = False  # SIGTERM sent by signal_stop()
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []  # return codes of ends we did not cause
        self.exit_logs: list[str] = []  # what each such end printed last
        self.kills = 0
        self.log = data.parent / f"serve-{n}.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cli",
                    "serve",
                    "--data-dir",
                    str(self.data),
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                    "--threads",
                    "4",
                    "--drain-seconds",
                    str(self.drain_seconds),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/jwks.json", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"instance {self.n} did not start: {self.log.read_text()[-2000:]}")

    def _note_end(self, rc: int) -> None:
        self.exits.append(rc)
        self.exit_logs.append(self.log.read_text(errors="replace")[-1500:])

    def check_alive(self) -> None:
        """Note an end we did not cause (a crash) and restart."""
        if self.proc is not None and self.proc.poll() is not None:
            self._note_end(self.proc.returncode)
            self.start()

    def _wait_group_gone(self, timeout: float = 10) -> None:
        """As a supervisor does (systemd's KillMode=control-group): the next start waits until
        every process of the killed one is gone, its worker too, which held the listening socket."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)

    def kill9(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its worker
        self.proc.wait()
        self._wait_group_gone()
        self.kills += 1
        self.start()

    def wait_healthy(self, timeout: float = 60) -> None:
        """Until ``GET /health`` answers 200 (what the proxy's health check waits for)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"instance {self.n} not healthy: {self.log.read_text()[-2000:]}")

    def roll(self) -> dict[str, Any]:
        """One step of a rolling restart: SIGTERM (the drain, then the graceful stop), the exit
        code, the new process started on the same port, until its /health answers 200."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        stopped = time.monotonic() - t0
        self._wait_group_gone()
        self.start()
        self.wait_healthy()
        return {
            "exit_code": rc,
            "stop_seconds": round(stopped, 2),
            "seconds": round(time.monotonic() - t0, 2),
        }

    def signal_stop(self) -> None:
        """SIGTERM now, the exit collected by :meth:`stop` (the instances drain in parallel)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.stopping = True

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            if self.proc.returncode != 0 or not self.stopping:  # an end we did not cause
                self._note_end(self.proc.returncode)
            return self.proc.returncode
        if not self.stopping:  # a second SIGTERM would cut the drain short (idp.serve)
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # a worker left behind
        return rc


# --------------------------------------------------------------------------- workload records


@dataclass
class Record:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # 4xx
    server_error: Counter[str] = field(default_factory=Counter)  # 5xx
    unknown: Counter[str] = field(default_factory=Counter)  # connection lost: outcome unknown
    errors: list[str] = field(default_factory=list)
    refresh_ok: list[tuple[str, str]] = field(default_factory=list)  # (old, new) refresh tokens
    refresh_unknown: list[str] = field(default_factory=list)  # refresh tokens sent, outcome unknown
    logins_ok: int = 0
    accounts_deleted: list[str] = field(default_factory=list)  # CLI said done
    accounts_delete_failed: list[str] = field(default_factory=list)
    accounts_added: list[str] = field(default_factory=list)
    certs_issued: list[str] = field(default_factory=list)
    certs_revoked: list[str] = field(default_factory=list)
    cli_failures: Counter[str] = field(default_factory=Counter)
    enrolled: list[tuple[str, str]] = field(default_factory=list)  # (device id, certificate serial)
    pki2fa_acr: Counter[str] = field(default_factory=Counter)  # acr of each PKI-2FA login's ID token
    server_error_at: list[float] = field(default_factory=list)  # time.monotonic() of each 5xx

    def count(self, what: str, status: int | None, note: str = "") -> None:
        with self.lock:
            if status is None:
                self.unknown[what] += 1
            elif status < 400:
                self.ok[what] += 1
            elif status < 500:
                self.refused[what] += 1
            else:
                self.server_error[what] += 1
                self.server_error_at.append(time.monotonic())
                if len(self.errors) < 30:
                    self.errors.append(f"{what} {status}: {note[:200]}")

    def count_failed(self, what: str, status: int, note: str = "") -> None:
        """A flow that ended without what it was for: at a 4xx or 5xx, or at a page (2xx/3xx)
        where the next step was expected: counted as refused, never as done."""
        self.count(what, status if status >= 400 else 409, note)
        if status < 500:
            with self.lock:
                if len(self.errors) < 30:
                    self.errors.append(f"{what} ended at {status}: {note[:200]}")


class Unknown(Exception):
    """The connection ended before an answer: the request may or may not have taken effect."""


def _http(fn: Any, *args: Any, **kw: Any) -> requests.Response:
    try:
        return fn(*args, timeout=30, **kw)  # type: ignore[no-any-return]
    except requests.RequestException as exc:
        raise Unknown(str(exc)) from exc


class Workload:
    def __init__(
        self,
        url: str,
        data: Path,
        rec: Record,
        clients: dict[str, Any],
        pool: list[str],
        fresh: list[str] | None = None,
    ) -> None:
        self.url, self.data, self.rec, self.clients, self.pool = url, data, rec, clients, pool
        self.fresh = list(fresh or [])  # citizens with no device yet (the device loop's)
        self.stop = threading.Event()
        self.pool_next = 0
        self.pool_lock = threading.Lock()

    # ---- browser login (a fresh browser: no cookie from an earlier login)
    def login(
        self,
        email: str,
        client: dict[str, Any],
        *,
        what: str = "login",
        scope: str = "openid email",
        acr: str | None = None,
        device: Any = None,
        dpop: Any = None,
    ) -> dict[str, Any] | None:
        """The code flow with PKCE through the pages, then the token. ``acr``: the level asked
        for; ``device`` (a DeviceClient) confirms the PKI-2FA step; ``dpop`` (a DpopSigner): a
        public client's DPoP-bound token (RFC 9449), else the client's secret (Basic)."""
        http = requests.Session()
        http.headers["Connection"] = "close"  # a new connection each time: the proxy spreads them
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        redirect = client.get("redirect_uri", REDIRECT)
        params = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": redirect,
            "scope": scope,
            "state": "s",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if acr:
            params["acr_values"] = acr
        try:
            r = _http(http.get, f"{self.url}/authorize", params=params, allow_redirects=False)
            if r.status_code != 302:
                self.rec.count_failed(what, r.status_code, r.text)
                return None
            page = _http(http.get, _abs(self.url, r.headers["Location"]))
            m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            if not m:
                self.rec.count_failed(what, page.status_code, page.text)
                return None
            r = _http(
                http.post,
                f"{self.url}/login",
                data={"csrf_token": m.group(1), "email": email, "password": PASSWORD},
                allow_redirects=False,
            )
            if r.status_code not in (302, 303):
                self.rec.count_failed(what, r.status_code, r.text)
                return None
            # not answered with the code at once: our own pages (the device step, consent)
            while r.status_code in (302, 303) and r.headers["Location"].startswith("/"):
                r = _http(http.get, _abs(self.url, r.headers["Location"]), allow_redirects=False)
                if device is not None and r.status_code == 200 and 'id="device-continue"' in r.text:
                    r = self._device_step(http, device, r)
                    if r is None:
                        self.rec.count_failed(what, 403, "the device step did not complete")
                        return None
            if r.status_code == 200 and 'name="decision"' in r.text:  # first time: consent
                m = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
                assert m
                r = _http(
                    http.post,
                    r.url,
                    data={"csrf_token": m.group(1), "decision": "allow"},
                    allow_redirects=False,
                )
            loc = r.headers.get("Location", "")
            if "code=" not in loc:
                self.rec.count_failed(what, r.status_code, r.text + loc)
                return None
            code = parse_qs(urlsplit(loc).query)["code"][0]
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": verifier,
            }
            if dpop is None:
                r = _http(
                    http.post,
                    f"{self.url}/token",
                    auth=(client["client_id"], client["client_secret"]),
                    data=form,
                )
            else:  # a public client (RFC 6749 §2.1) with a DPoP proof, once more with a nonce (§8)
                form["client_id"] = client["client_id"]
                for _ in range(2):
                    proof = dpop.proof("POST", f"{self.url}/token")
                    r = _http(http.post, f"{self.url}/token", data=form, headers={"DPoP": proof})
                    if r.status_code == 400 and r.json().get("error") == "use_dpop_nonce":
                        dpop.nonce = r.headers["DPoP-Nonce"]
                        continue
                    break
            self.rec.count(what, r.status_code, r.text)
            if r.status_code == 200:
                with self.rec.lock:
                    self.rec.logins_ok += 1
                return r.json()  # type: ignore[no-any-return]
            return None
        except Unknown:
            self.rec.count(what, None)
            return None

    def _device_step(
        self, http: requests.Session, device: Any, page: requests.Response
    ) -> requests.Response | None:
        """PKI-2FA (docs/device-api.md): the device fetches the pending login, checks that its
        binding code is the page's, approves it with its key; the page's no-JS button goes on."""
        from smartcard.softtoken import DeviceApiError

        code = re.search(r'class="binding-code">([^<]+)<', page.text)
        action = re.search(r'<form method="post" action="([^"]+)" id="device-continue"', page.text)
        public_id = re.search(r'data-id="([^"]+)"', page.text)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if not (code and action and public_id and csrf):
            return None
        try:
            items = [i for i in device.pending() if i["binding_code"] == code.group(1)]
            if len(items) != 1 or device.answer(items[0]) != {"status": "approved"}:
                return None
        except requests.RequestException as exc:
            raise Unknown(str(exc)) from exc
        except DeviceApiError:
            return None
        target = self.url + action.group(1).replace("&amp;", "&")
        return _http(
            http.post,
            target,
            data={"csrf_token": csrf.group(1), "id": public_id.group(1)},
            allow_redirects=False,
        )

    def refresh(self, client: dict[str, Any], token: str) -> str | None:
        try:
            r = _http(
                requests.post,
                f"{self.url}/token",
                auth=(client["client_id"], client["client_secret"]),
                data={"grant_type": "refresh_token", "refresh_token": token},
                headers={"Connection": "close"},
            )
        except Unknown:
            self.rec.count("refresh", None)
            with self.rec.lock:
                self.rec.refresh_unknown.append(token)
            return None
        self.rec.count("refresh", r.status_code, r.text)
        if r.status_code == 200:
            new: str = r.json()["refresh_token"]
            with self.rec.lock:
                self.rec.refresh_ok.append((token, new))
            return new
        return None

    def login_loop(self) -> None:
        client = self.clients["web"]
        while not self.stop.is_set():
            email = random.choice(self.pool)
            tokens = self.login(email, client)
            if not tokens:
                time.sleep(0.2)
                continue
            rt = tokens.get("refresh_token")
            for _ in range(random.randint(3, 10)):
                if self.stop.is_set() or not rt:
                    break
                new = self.refresh(client, rt)
                if new is None:
                    break  # unknown or refused: the family may be spent; a new login
                rt = new

    def cc_loop(self) -> None:
        m = self.clients["machine"]
        while not self.stop.is_set():
            try:
                r = _http(
                    requests.post,
                    f"{self.url}/token",
                    auth=(m["client_id"], m["client_secret"]),
                    data={"grant_type": "client_credentials"},
                    headers={"Connection": "close"},
                )
                self.rec.count("client_credentials", r.status_code, r.text)
            except Unknown:
                self.rec.count("client_credentials", None)
            time.sleep(0.02)

    def mail_loop(self) -> None:
        while not self.stop.is_set():
            with self.pool_lock:  # each address at most once a minute (the resend interval)
                email = self.pool[self.pool_next % len(self.pool)]
                self.pool_next += 1
            http = requests.Session()
            http.headers["Connection"] = "close"
            try:
                page = _http(http.get, f"{self.url}/forgot")
                m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
                if m:
                    r = _http(
                        http.post, f"{self.url}/forgot", data={"csrf_token": m.group(1), "email": email}
                    )
                    self.rec.count("forgot", r.status_code, r.text)
                else:
                    self.rec.count("forgot", page.status_code, page.text)
            except Unknown:
                self.rec.count("forgot", None)
            self.stop.wait(max(0.2, 61.0 / len(self.pool)))

    def cli(self, *args: str) -> tuple[int, Any]:
        res = subprocess.run(
            [sys.executable, "-m", "cli", *args, "--data-dir", str(self.data), "--json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            env={**os.environ, "CITYID_NEW_USER_PASSWORD": PASSWORD},
        )
        out = _json_out(res.stdout)
        if res.returncode != 0:
            with self.rec.lock:
                self.rec.cli_failures[args[0] + " " + args[1]] += 1
                if len(self.rec.errors) < 30:
                    self.rec.errors.append(
                        f"cli {args[:2]} rc={res.returncode}: {(res.stderr or res.stdout)[-300:]}"
                    )
        return res.returncode, out

    def lifecycle_loop(self) -> None:
        client = self.clients["logout"]
        while not self.stop.is_set():
            email = f"life-{secrets.token_hex(6)}@faults.example"
            rc, out = self.cli("user", "add", "--email", email, "--verified")
            if rc != 0:
                continue
            with self.rec.lock:
                self.rec.accounts_added.append(out.get("id") or email)
            self.login(email, client)  # a session with a grant at the service: a logout token
            if self.stop.is_set():
                break
            rc, out = self.cli("user", "delete", email, "--yes")
            with self.rec.lock:
                (self.rec.accounts_deleted if rc == 0 else self.rec.accounts_delete_failed).append(email)

    def device_loop(self, devices: Path, attestation: Any) -> None:
        """A citizen without a device (made at set-up, then by CLI), the city app's login
        (DPoP-bound smartcard:enroll token), an enrolment with (TEST) Android key attestation,
        then a PKI-2FA login at the service: the password and the device's approval (eIDAS
        substantial)."""
        from cryptography import x509

        from pki.serials import serial_hex
        from smartcard.softtoken import DeviceApiError, DeviceClient, DpopSigner, SoftToken

        while not self.stop.is_set():
            with self.pool_lock:  # a citizen without a device: one made at set-up, else by CLI
                email = self.fresh.pop() if self.fresh else ""
            if not email:
                email = f"device-{secrets.token_hex(6)}@faults.example"
                rc, _out = self.cli("user", "add", "--email", email, "--verified")
                if rc != 0:
                    continue
            dpop = DpopSigner()
            tokens = self.login(
                email, self.clients["app"], what="app_login", scope="openid smartcard:enroll", dpop=dpop
            )
            if not tokens or self.stop.is_set():
                continue
            http = requests.Session()
            http.headers["Connection"] = "close"
            device = DeviceClient(SoftToken.create(devices / secrets.token_hex(8), server=self.url), http)
            try:
                result = device.enrol(tokens["access_token"], dpop, name="phone", attestation=attestation)
            except DeviceApiError as exc:
                self.rec.count("enrol", exc.status, str(exc))
                continue
            except requests.RequestException:
                self.rec.count("enrol", None)
                continue
            self.rec.count("enrol", 200)
            serial = serial_hex(x509.load_der_x509_certificate(device.token.certificate_der).serial_number)
            with self.rec.lock:
                self.rec.enrolled.append((result["device_id"], serial))
            answer = self.login(
                email, self.clients["rp"], what="pki2fa_login", acr=SUBSTANTIAL, device=device
            )
            if answer and answer.get("id_token"):
                claims = json.loads(base64.urlsafe_b64decode(answer["id_token"].split(".")[1] + "=="))
                with self.rec.lock:
                    self.rec.pki2fa_acr[str(claims.get("acr"))] += 1

    def cert_loop(self, csr: Path) -> None:
        while not self.stop.is_set():
            rc, out = self.cli("cert", "issue", "--csr", str(csr), "--profile", "tls-server", "--days", "30")
            if rc != 0:
                continue
            serial = out.get("serial", "")
            with self.rec.lock:
                self.rec.certs_issued.append(serial)
            if random.random() < 0.5:
                rc, _ = self.cli("cert", "revoke", serial, "--reason", "superseded")
                if rc == 0:
                    with self.rec.lock:
                        self.rec.certs_revoked.append(serial)


def _abs(url: str, location: str) -> str:
    return location if location.startswith("http") else url + location


# --------------------------------------------------------------------------- invariants


def check(
    db_url: str,
    data: Path,
    keys: Any,
    rec: Record,
    smtp: SmtpSink,
    recv: LogoutReceiver,
    instances: list[Instance],
) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    eng = create_engine(db_url)
    inv: dict[str, Any] = {}
    with eng.connect() as c:

        def q(sql: str, **p: Any) -> Any:
            return c.execute(text(sql), p)

        # 1. every 2xx answer's effect is in the database
        digests = {keys.token_digest(new) for _old, new in rec.refresh_ok}
        present = set()
        for chunk in _chunks(sorted(digests), 500):
            present |= set(
                q(
                    "SELECT token_digest FROM idp_refresh_token WHERE token_digest = ANY(:d)", d=chunk
                ).scalars()
            )
        used = set()
        olds = [keys.token_digest(old) for old, _new in rec.refresh_ok]
        for chunk in _chunks(olds, 500):
            used |= set(
                q(
                    "SELECT token_digest FROM idp_refresh_token WHERE token_digest = ANY(:d) AND used_at IS NOT NULL",
                    d=chunk,
                ).scalars()
            )
        deleted_left = 0
        for chunk in _chunks([keys.email_lookup(e) for e in rec.accounts_deleted], 500):
            deleted_left += q(
                "SELECT count(*) FROM idp_account WHERE email_index = ANY(:d)", d=chunk
            ).scalar_one()

        def pairs(sql: str, keys: list[str]) -> dict[str, str]:
            """``sql``'s two columns as a dict, for ``keys`` (its ``= ANY(:k)``), 500 at a time."""
            return {r[0]: r[1] for chunk in _chunks(keys, 500) for r in q(sql, k=chunk)}

        cert_status = "SELECT serial, status FROM ca_certificate WHERE serial = ANY(:k)"
        certs = pairs(cert_status, rec.certs_issued)
        # enrolments answered 2xx: the device is there, with the certificate it was given issued
        devices = pairs(
            "SELECT id, cert_serial FROM sc_device WHERE id = ANY(:k)", [d for d, _s in rec.enrolled]
        )
        device_certs = pairs(cert_status, [s for _d, s in rec.enrolled])
        inv["effects_of_2xx"] = {
            "enrolments_2xx": len(rec.enrolled),
            "enrolled_devices_missing": sum(1 for d, _s in rec.enrolled if d not in devices),
            "enrolled_device_with_another_certificate": sum(
                1 for d, s in rec.enrolled if d in devices and devices[d] != s
            ),
            "enrolled_device_certificate_not_issued": sum(
                1 for _d, s in rec.enrolled if device_certs.get(s) != "issued"
            ),
            "refreshes_2xx": len(rec.refresh_ok),
            "new_refresh_tokens_missing": len(digests - present),
            "rotated_tokens_not_marked_used": len(set(olds) - used),
            "accounts_deleted_by_cli": len(rec.accounts_deleted),
            "deleted_accounts_still_present": deleted_left,
            "certs_issued_by_cli": len(rec.certs_issued),
            "issued_certs_missing": len(set(rec.certs_issued) - set(certs)),
            "revoked_by_cli_not_revoked": sum(1 for s in rec.certs_revoked if certs.get(s) != "revoked"),
        }
        inv["effects_of_2xx"]["ok"] = not any(
            inv["effects_of_2xx"][k]
            for k in (
                "enrolled_devices_missing",
                "enrolled_device_with_another_certificate",
                "enrolled_device_certificate_not_issued",
                "new_refresh_tokens_missing",
                "rotated_tokens_not_marked_used",
                "deleted_accounts_still_present",
                "issued_certs_missing",
                "revoked_by_cli_not_revoked",
            )
        )

        # 2. no partial effects: rows that outlived what they belong to, half-issued certificates
        orphans = {
            "grants_without_account": q(
                "SELECT count(*) FROM idp_grant g WHERE g.account_id IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM idp_account a WHERE a.id = g.account_id)"
            ).scalar_one(),
            "live_refresh_of_revoked_grant": q(
                "SELECT count(*) FROM idp_refresh_token r JOIN idp_grant g ON g.id = r.grant_id "
                "WHERE g.revoked_at IS NOT NULL AND r.used_at IS NULL"
            ).scalar_one(),
            "certificates_pending": q(
                "SELECT count(*) FROM ca_certificate WHERE status = 'pending'"
            ).scalar_one(),
            "issued_without_der": q(
                "SELECT count(*) FROM ca_certificate WHERE status <> 'pending' AND der IS NULL"
            ).scalar_one(),
            # a device is trusted only with its certificate: never one without an issued one
            "devices_without_issued_certificate": q(
                "SELECT count(*) FROM sc_device d WHERE NOT EXISTS (SELECT 1 FROM ca_certificate c "
                "WHERE c.serial = d.cert_serial AND c.status IN ('issued', 'revoked'))"
            ).scalar_one(),
        }
        # a serial reserved (pending) by a `cert issue` or an enrolment that died or rolled back
        # after the intent's commit is by design (pki/README.md; `cityid ca revoke-abandoned`):
        # never more of them than failed issuances and enrolments without a 2xx answer
        pending = orphans.pop("certificates_pending")
        issue_failures = rec.cli_failures["cert issue"]
        enrol_failures = rec.unknown["enrol"] + rec.server_error["enrol"]
        inv["no_partial_effects"] = {
            **orphans,
            "certificates_pending": pending,
            "cert_issue_cli_failures": issue_failures,
            "enrolments_unknown_or_5xx": enrol_failures,
            "ok": not any(orphans.values()) and pending <= issue_failures + enrol_failures,
        }

        # 3. audit: chain verifies; state changes have entries
        res = subprocess.run(
            [sys.executable, "-m", "cli", "audit", "verify", "--data-dir", str(data), "--json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
        verify = _json_out(res.stdout + res.stderr)
        issue_entries = q(
            "SELECT count(*) FROM audit_event WHERE action = 'token.issue' AND outcome = 'success'"
        ).scalar_one()
        token_2xx = rec.ok["client_credentials"] + rec.ok["refresh"] + rec.logins_ok
        token_unknown = (
            rec.unknown["client_credentials"]
            + rec.unknown["refresh"]
            + rec.unknown["login"]
            + rec.unknown["app_login"]
            + rec.unknown["pki2fa_login"]
        )
        enrol_entries = q(
            "SELECT count(*) FROM audit_event WHERE action = 'smartcard.enroll' AND outcome = 'success'"
        ).scalar_one()
        device_rows = q("SELECT count(*) FROM sc_device").scalar_one()
        cert_issue_entries = q(
            "SELECT count(*) FROM audit_event WHERE action = 'pki.certificate.issue' AND outcome = 'success'"
        ).scalar_one()
        erase_entries = q(
            "SELECT count(*) FROM audit_event WHERE action = 'account.delete' AND outcome = 'success'"
        ).scalar_one()
        inv["audit"] = {
            "verify_exit": res.returncode,
            "verify": verify,
            "token_issue_entries": issue_entries,
            "token_2xx": token_2xx,
            "token_outcome_unknown": token_unknown,
            "cert_issue_entries": cert_issue_entries,
            "certs_issued_by_cli": len(rec.certs_issued),
            "erasure_entries": erase_entries,
            "accounts_deleted_by_cli": len(rec.accounts_deleted),
            "enrolment_entries": enrol_entries,
            "enrolments_2xx": len(rec.enrolled),
            "enrolment_outcome_unknown": rec.unknown["enrol"],
            "devices": device_rows,
        }
        inv["audit"]["ok"] = (
            res.returncode == 0
            # every 2xx token has its entry; an entry without a 2xx only where the answer was lost
            and token_2xx <= issue_entries <= token_2xx + token_unknown
            and cert_issue_entries >= len(rec.certs_issued)
            and erase_entries >= len(rec.accounts_deleted)
            # every enrolment answered has its entry; an entry without an answer only where the
            # answer was lost; every device row has its entry (none erased in this workload)
            and len(rec.enrolled) <= enrol_entries <= len(rec.enrolled) + rec.unknown["enrol"]
            and device_rows == enrol_entries
        )
        # PKI-2FA: every login confirmed by the device got the level it asked for
        inv["pki2fa"] = {
            "logins_2xx": rec.ok["pki2fa_login"],
            "acr_of_id_tokens": dict(rec.pki2fa_acr),
            "ok": set(rec.pki2fa_acr) <= {SUBSTANTIAL},
        }

        # 4. certificates: serials unique, every signed one recorded
        dup_cli = [s for s, n in Counter(rec.certs_issued).items() if n > 1]
        inv["certificates"] = {
            "serials_issued_twice": len(dup_cli),
            "rows": q("SELECT count(*) FROM ca_certificate").scalar_one(),
            "issued_certs_missing": inv["effects_of_2xx"]["issued_certs_missing"],
        }
        inv["certificates"]["ok"] = not dup_cli and not inv["certificates"]["issued_certs_missing"]

        # 5. refresh families: at most one live successor per grant; each old token rotated once
        two_live = q(
            "SELECT count(*) FROM (SELECT grant_id FROM idp_refresh_token WHERE used_at IS NULL "
            "GROUP BY grant_id HAVING count(*) > 1) t"
        ).scalar_one()
        olds_twice = sum(1 for _o, n in Counter(o for o, _ in rec.refresh_ok).items() if n > 1)
        inv["refresh_families"] = {
            "families_with_two_live_tokens": two_live,
            "refresh_tokens_rotated_twice": olds_twice,
            "rotations": len(rec.refresh_ok),
            "ok": two_live == 0 and olds_twice == 0,
        }

        # 6. outboxes: mails exactly once, logout tokens delivered (or given up)
        # a link (its token's digest) -> the Message-IDs it arrived with
        arrivals: dict[str, list[str]] = {}
        for msg in smtp.messages:
            text_, message_id = _mail_texts(msg)
            for t in re.findall(r"/reset\?token=([A-Za-z0-9_\-]+)", text_):
                arrivals.setdefault(keys.token_digest(t), []).append(message_id)
        received = Counter({d: len(ids) for d, ids in arrivals.items()})
        queued = set(q("SELECT token_digest FROM idp_email_token WHERE purpose = 'reset'").scalars())
        outbox_left = q("SELECT count(*) FROM idp_mail_outbox").scalar_one()
        # still queued with a retry scheduled (a lease of an instance killed while sending lasts
        # idp.mail.LEASE = 5 minutes): not lost, not yet delivered
        retry_scheduled = q(
            "SELECT count(*) FROM idp_mail_outbox WHERE attempts < :m", m=_mail_max_attempts()
        ).scalar_one()
        gave_up = q("SELECT count(*) FROM audit_event WHERE action = 'mail.give_up'").scalar_one()
        inv["mail"] = {
            "queued": len(queued),
            "received": sum(received.values()),
            "received_twice": sum(1 for n in received.values() if n > 1),
            # sent again after a kill between the server's acceptance and the row's removal: the
            # same Message-ID (idp.mail), one message to the citizen's mail program
            "received_twice_as_different_messages": sum(1 for ids in arrivals.values() if len(set(ids)) > 1),
            "queued_not_received": len(queued - set(received)),
            "received_not_queued": len(set(received) - queued),
            "outbox_left": outbox_left,
            "outbox_left_retry_scheduled": retry_scheduled,
            "given_up": gave_up,
        }
        # every queued mail: received once, or given up (audited), or still queued for a retry
        inv["mail"]["ok"] = (
            inv["mail"]["received_twice_as_different_messages"] == 0
            and inv["mail"]["received_not_queued"] == 0
            and inv["mail"]["queued_not_received"] <= gave_up + retry_scheduled
            and outbox_left == retry_scheduled
        )
        rows = q(
            "SELECT delivered_at IS NOT NULL, failed_at IS NOT NULL, logout_token FROM idp_logout_outbox"
        ).all()
        got = Counter(_jti(t) for t in recv.tokens)
        inv["backchannel_logout"] = {
            "queued": len(rows),
            "delivered": sum(1 for d, _f, _t in rows if d),
            "failed_after_retries": sum(1 for d, f, _t in rows if f and not d),
            "pending": sum(1 for d, f, _t in rows if not d and not f),
            "received": sum(got.values()),
            "received_more_than_once": sum(1 for n in got.values() if n > 1),
            "delivered_not_received": sum(1 for d, _f, t in rows if d and got[_jti(t)] == 0),
        }
        b = inv["backchannel_logout"]
        b["ok"] = b["pending"] == 0 and b["delivered_not_received"] == 0
        b["note"] = "at least once: a token sent again after a kill carries the same jti (OIDC BCL §2.6)"
    eng.dispose()

    # 7. processes: ended only by our kill -9 (or a clean exit at the end)
    ends = [rc for i in instances for rc in i.exits]
    inv["processes"] = {
        "kills_sent": sum(i.kills for i in instances),
        "unexpected_ends": ends,
        "unexpected_end_logs": [log for i in instances for log in i.exit_logs],
        "signal_deaths": sum(1 for rc in ends if rc < 0),
        "segfault_lines_in_dmesg": _dmesg_segfaults(),
    }
    inv["processes"]["ok"] = not ends and not inv["processes"]["segfault_lines_in_dmesg"]
    return inv


_DMESG_BEFORE: set[str] = set()


def _dmesg() -> set[str]:
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line for line in out.splitlines() if "segfault" in line or "general protection" in line}


def _dmesg_segfaults() -> list[str]:
    return sorted(_dmesg() - _DMESG_BEFORE)[:10]


def _jti(token: str) -> str:
    try:
        payload = token.split(".")[1]
        return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])
    except (IndexError, ValueError, KeyError):
        return token


def _mail_max_attempts() -> int:
    from idp.mail import MAX_ATTEMPTS

    return MAX_ATTEMPTS


def _json_out(text: str) -> Any:
    """The JSON a ``--json`` command printed (indented, possibly after other lines)."""
    text = text.strip()
    for start in [i for i, ch in enumerate(text) if ch == "{" and (i == 0 or text[i - 1] == "\n")]:
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            continue
    return {"raw": text[-300:]}


def _mail_texts(raw: str) -> tuple[str, str]:
    """The decoded text parts of one message (quoted-printable, base64) and its Message-ID."""
    import email
    from email import policy

    msg = email.message_from_string(raw, policy=policy.default)
    parts = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            parts.append(str(part.get_content()))
    return "\n".join(parts), str(msg.get("Message-ID", ""))


def _chunks(items: list[str], n: int) -> list[list[str]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


# --------------------------------------------------------------------------- main


def run(
    profile: Profile, instances_n: int | None = None, keep: bool = False, pgbouncer: str | None = None
) -> dict[str, Any]:
    """``pgbouncer``: None, or the query string of the database URL through PgBouncer (transaction
    pooling) that the instances and the CLI use (e.g. ``?prepare_threshold=0``)."""
    global _DMESG_BEFORE
    _DMESG_BEFORE = _dmesg()
    tmp = Path(tempfile.mkdtemp(prefix="cityid-faults-"))
    os.chmod(tmp, 0o755)
    pg = PgCluster(tmp)
    smtp, recv = SmtpSink(), LogoutReceiver()
    data = tmp / "data"
    data.mkdir()
    n_inst = instances_n or profile.instances
    proxy_port = free_port()
    url = f"http://127.0.0.1:{proxy_port}"
    instances: list[Instance] = []
    bouncer: PgBouncer | None = None
    events: list[dict[str, Any]] = []
    t_start = time.monotonic()

    def event(what: str, **kw: Any) -> None:
        events.append({"t": round(time.monotonic() - t_start, 1), "event": what, **kw})

    try:
        pg.init()
        from smartcard.softtoken import AttestationProfile, write_test_root

        att_root, _att_key = write_test_root(tmp / "att-root")
        att_status = tmp / "attestation-status.json"
        att_status.write_text('{"entries": {}}')
        attestation = AttestationProfile(tmp / "att-root", APP_PACKAGE, APP_SIGNING_DIGEST, "tee")
        (tmp / "devices").mkdir()
        (data / "cityid.toml").write_text(
            f'issuer = "{url}"\nsecret_key = "{secrets.token_urlsafe(32)}"\n'
            f'key_passphrase = "{secrets.token_urlsafe(32)}"\ndatabase_url = "{pg.url}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\ntimeout_seconds = 5\n'
            # devices attested by a TEST root trusted here only (smartcard.softtoken)
            f'[smartcard]\nandroid_package = "{APP_PACKAGE}"\n'
            f'android_signing_digests = "{APP_SIGNING_DIGEST.hex()}"\n'
            f'extra_android_roots_file = "{att_root}"\nvendor_roots = false\n'
            f'android_revocation_list_file = "{att_status}"\n'
        )
        subprocess.run(
            [sys.executable, "-m", "cli", "init", "--data-dir", str(data)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        if pgbouncer is not None:  # migrations ran directly; the instances and the CLI go through it
            bouncer = PgBouncer(tmp, pg)
            bouncer.start()
            toml = (data / "cityid.toml").read_text().replace(pg.url, bouncer.url(pgbouncer))
            (data / "cityid.toml").write_text(toml)
            event("through pgbouncer", url=bouncer.url(pgbouncer))
        smtp.up()
        recv.up()

        pool = [f"citizen{i}@faults.example" for i in range(profile.mail_pool)]
        fresh = [
            f"device{i}@faults.example" for i in range(profile.device_pool * (profile.device_threads > 0))
        ]
        clients = _setup(data, pool + fresh, f"http://127.0.0.1:{recv.port}/backchannel")
        # a CSR for the certificate work
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "faults.example")]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("faults.example")]), critical=False)
            .sign(key, hashes.SHA256())
        )
        csr_path = tmp / "csr.pem"
        csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))

        ports = [free_port() for _ in range(n_inst)]
        instances = [Instance(data, p, i, profile.drain_seconds) for i, p in enumerate(ports)]
        for inst in instances:
            inst.start()
        for inst in instances:
            inst.wait_ready()
        Proxy(proxy_port, ports, profile.health_interval, profile.proxy_retries)
        rec = Record()
        wl = Workload(url, data, rec, clients, pool, fresh)
        threads = (
            [threading.Thread(target=wl.login_loop) for _ in range(profile.login_threads)]
            + [threading.Thread(target=wl.cc_loop) for _ in range(profile.cc_threads)]
            + [threading.Thread(target=wl.mail_loop), threading.Thread(target=wl.lifecycle_loop)]
            + [threading.Thread(target=wl.cert_loop, args=(csr_path,))]
            + [
                threading.Thread(target=wl.device_loop, args=(tmp / "devices", attestation))
                for _ in range(profile.device_threads)
            ]
        )
        for t in threads:
            t.start()
        event("instances ready", instances=n_inst)
        t_start = time.monotonic()
        event("load started", instances=n_inst)
        next_kill = profile.kill_every
        pg_restarted = outage_started = outage_ended = False
        restart_began = restart_ended = -1.0
        victim = 0
        rolled: list[dict[str, Any]] = []
        if profile.rolling:  # each instance in turn, the load going on (docs/operations.md)
            time.sleep(profile.settle_seconds)
            for inst in instances:
                event("SIGTERM", instance=inst.n, drain_seconds=profile.drain_seconds)
                step = inst.roll()
                rolled.append({"instance": inst.n, **step})
                event("restarted and healthy", instance=inst.n, **step)
            time.sleep(profile.settle_seconds)
        while (elapsed := time.monotonic() - t_start) < profile.seconds:
            for inst in instances:
                inst.check_alive()
            if elapsed >= next_kill:
                inst = instances[victim % len(instances)]
                victim += 1
                inst.kill9()
                event("kill -9", instance=inst.n)
                next_kill += profile.kill_every
            if not outage_started and elapsed >= profile.outage_at * profile.seconds:
                smtp.down()
                recv.down()
                outage_started = True
                event("smtp and logout receiver down")
            if (
                outage_started
                and not outage_ended
                and elapsed >= profile.outage_at * profile.seconds + profile.outage_seconds
            ):
                smtp.up()
                recv.up()
                outage_ended = True
                event("smtp and logout receiver up")
            if not pg_restarted and elapsed >= profile.pg_restart_at * profile.seconds:
                restart_began = time.monotonic()
                took = pg.restart()
                restart_ended = time.monotonic()
                pg_restarted = True
                event("postgresql restart", seconds=round(took, 2))
            time.sleep(0.2)
        if outage_started and not outage_ended:
            smtp.up()
            recv.up()
            event("smtp and logout receiver up")
        wl.stop.set()
        for t in threads:
            t.join(timeout=180)
        event("load stopped")
        # recovery: the instances deliver what is queued (mail retries after 1, 2, 4 … minutes)
        from sqlalchemy import create_engine, text

        eng = create_engine(pg.url)
        deadline = time.monotonic() + profile.recovery_seconds
        window_end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=profile.recovery_seconds)
        while time.monotonic() < deadline:
            for inst in instances:
                inst.check_alive()
            with eng.connect() as c:
                left, due = c.execute(
                    text(
                        "SELECT (SELECT count(*) FROM idp_mail_outbox) + (SELECT count(*) FROM idp_logout_outbox "
                        "WHERE delivered_at IS NULL AND failed_at IS NULL), "
                        "(SELECT count(*) FROM idp_mail_outbox WHERE next_attempt_at < :end) + "
                        "(SELECT count(*) FROM idp_logout_outbox WHERE delivered_at IS NULL AND failed_at IS NULL "
                        "AND next_attempt_at < :end)"
                    ),
                    {"end": window_end},
                ).one()
            if due == 0:  # nothing left, or only retries scheduled after the window (checked as such)
                break
            time.sleep(1)
        eng.dispose()
        event("outboxes drained" if left == 0 else "recovery window over", left=left, due_in_window=due)
        time.sleep(1)  # a delivery under way finishes its bookkeeping
        for inst in instances:
            inst.signal_stop()  # in parallel: each drains for --drain-seconds
        clean_exits = [inst.stop() for inst in instances]
        for inst, rc in zip(instances, clean_exits, strict=True):
            if rc not in (0, None) and inst.exits and inst.exits[-1] == rc:
                pass  # already noted by stop()
            elif rc not in (0, None):
                inst._note_end(rc)
        event("instances stopped", exit_codes=clean_exits)
        checked_from = time.monotonic()
        from idp.config import load_config
        from idp.instance import InstanceKeys

        keys = InstanceKeys.from_config(load_config(data))
        invariants = check(pg.url, data, keys, rec, smtp, recv, instances)
        if profile.rolling:
            # no request failed across the restarts: no 5xx, no connection lost (RFC 9110 §15.6:
            # a 5xx is the server's failure; a lost connection leaves the client not knowing)
            failed = sum(rec.server_error.values()) + sum(rec.unknown.values())
            invariants["rolling_restart"] = {
                "drain_seconds": profile.drain_seconds,
                "health_check_interval": profile.health_interval,
                "restarts": rolled,
                "exit_codes": [r["exit_code"] for r in rolled] + clean_exits,
                "failed_requests": failed,
                "ok": len(rolled) == n_inst
                and failed == 0
                and all(r["exit_code"] == 0 for r in rolled)
                and all(rc == 0 for rc in clean_exits),
            }
        result: dict[str, Any] = {
            "bench": "faults",
            "seconds": profile.seconds,
            "instances": n_inst,
            "requests": {
                "ok": dict(rec.ok),
                "refused_4xx": dict(rec.refused),
                "server_error_5xx": dict(rec.server_error),
                # a request whose COMMIT the restart cut answers 500 (whether it committed is
                # unknown; docs/scaling.md); any other 5xx is a failure. The window: from the
                # restart's start until RESTART_GRACE seconds after it answered again
                "server_error_5xx_outside_restart": sum(
                    1
                    for at in rec.server_error_at
                    if not restart_began <= at <= restart_ended + RESTART_GRACE_SECONDS
                ),
                "outcome_unknown": dict(rec.unknown),
                "total": sum(rec.ok.values())
                + sum(rec.refused.values())
                + sum(rec.server_error.values())
                + sum(rec.unknown.values()),
            },
            "cli": {
                "accounts_added": len(rec.accounts_added),
                "accounts_deleted": len(rec.accounts_deleted),
                "accounts_delete_failed": len(rec.accounts_delete_failed),
                "certs_issued": len(rec.certs_issued),
                "certs_revoked": len(rec.certs_revoked),
                "failures": dict(rec.cli_failures),
            },
            "events": events,
            "check_seconds": round(time.monotonic() - checked_from, 1),
            "invariants": invariants,
            "errors_sample": rec.errors[:15],
            "ok": all(v.get("ok") for v in invariants.values()),
        }
        return result
    finally:
        for inst in instances:
            if inst.proc is not None and inst.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(inst.proc.pid, signal.SIGKILL)
        smtp.down()
        recv.down()
        if bouncer is not None:
            bouncer.stop()
        pg.stop()
        if keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _setup(data: Path, emails: list[str], logout_uri: str) -> dict[str, dict[str, str]]:
    """The clients and the mail and login pool, in one process (a ``cityid client add`` or
    ``cityid user add`` each would take a second or two)."""
    from db import make_engine, make_session_factory, transaction
    from idp.accounts import create_account
    from idp.clients import ClientSpec, add_client
    from idp.config import load_config
    from idp.instance import InstanceKeys

    cfg = load_config(data)
    keys = InstanceKeys.from_config(cfg)
    engine = make_engine(cfg.db_url)
    sessions = make_session_factory(engine)
    specs = {
        "web": ClientSpec(name="web", redirect_uris=[REDIRECT]),
        "logout": ClientSpec(name="logout", redirect_uris=[REDIRECT], backchannel_logout_uri=logout_uri),
        "machine": ClientSpec(name="machine", grant_types=["client_credentials"], scope="permits:read"),
        # the city app (public, PKCE + DPoP) enrols devices; a service asks for substantial
        "app": ClientSpec(
            name="City app", redirect_uris=[APP_REDIRECT], auth_method="none", scope="openid smartcard:enroll"
        ),
        "rp": ClientSpec(name="Parking permits", redirect_uris=[REDIRECT], scope="openid"),
    }
    clients = {}
    with transaction(sessions) as s:
        for name, spec in specs.items():
            row, secret = add_client(s, keys, spec)
            clients[name] = {
                "client_id": row.client_id,
                "client_secret": secret or "",
                "redirect_uri": spec.redirect_uris[0] if spec.redirect_uris else REDIRECT,
            }
        for email in emails:
            create_account(s, keys, email, PASSWORD, verified=True, actor="admin")
    engine.dispose()
    return clients


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--profile", choices=["long", "short", "pooler", "rolling"], default="long")
    ap.add_argument(
        "--drain-seconds",
        type=float,
        default=None,
        help="`cityid serve --drain-seconds` of the instances (default: the profile's; rolling: 1.5)",
    )
    ap.add_argument("--instances", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, cluster)")
    ap.add_argument(
        "--pgbouncer",
        nargs="?",
        const="",
        default=None,
        help="through PgBouncer in transaction mode; optional URL query, e.g. '?prepare_threshold=0'",
    )
    a = ap.parse_args()
    profile = profile_for(a.profile, a.minutes)
    if a.drain_seconds is not None:
        profile.drain_seconds = a.drain_seconds
    result = run(profile, a.instances, a.keep, a.pgbouncer)
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
