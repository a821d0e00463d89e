"""Production serving, plus each worker's background duties.

The default server is granian (HTTP/1.1 and HTTP/2 in Rust, WSGI interface): on one core it serves a
plain Flask view at about 1.5x the rate of gunicorn's gthread worker (measured: 3,050 vs 1,990
requests/s), which the token endpoint's target of 2,000 requests/s per core needs. gunicorn stays
available (`cityid serve --server gunicorn`) for sites that already run it.
"""

from __future__ import annotations

import atexit
import datetime as dt
import errno
import logging
import multiprocessing.util
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from idp.config import Config

T = TypeVar("T")

log = logging.getLogger("cityid")


# Rows kept a day past their use, for support questions; then they go (GDPR Art. 5(1)(e)).
KEEP_AFTER_USE = dt.timedelta(days=1)


def purge_expired(session: Any, now: Any, *, insights_retention_months: int = 25) -> None:
    """Rows whose time is up: browser sessions, the revoked-token and replay caches (client
    assertions, DPoP proofs, device proofs), pushed requests, quiet throttle runs, old challenges;
    a day after their end: e-mail links (a change of address holds the new address), codes,
    refresh tokens, revoked grants, delivered or abandoned logout tokens (they name the subject);
    a refresh's kept answer once past any grace window."""
    from sqlalchemy import delete, update

    from idp import throttle
    from idp.config import MAX_REFRESH_GRACE_SECONDS
    from idp.insights import funnel, store
    from idp.models import (
        AuthorizationCode,
        EmailToken,
        Grant,
        LoginSession,
        LogoutOutbox,
        RefreshToken,
        RevokedAccessToken,
        SeenJti,
    )
    from idp.oauth import par
    from signing import citizen_requests
    from smartcard import challenges
    from smartcard.models import SeenProof

    # a login flow that stops is counted abandoned at its last step once its session expires
    funnel.count_expired(session, now)
    cutoff = now - KEEP_AFTER_USE
    session.execute(delete(EmailToken).where(EmailToken.expires_at <= cutoff))
    session.execute(delete(AuthorizationCode).where(AuthorizationCode.expires_at <= cutoff))
    session.execute(delete(RefreshToken).where(RefreshToken.expires_at <= cutoff))
    # a rotation's kept answer (idp.oauth.rotation) once no grace window can reach it any more
    session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.answer_sealed.is_not(None),
            RefreshToken.used_at <= now - dt.timedelta(seconds=MAX_REFRESH_GRACE_SECONDS),
        )
        .values(answer_sealed=None)
    )
    session.execute(delete(Grant).where(Grant.revoked_at <= cutoff))  # its codes, tokens go with it
    session.execute(
        delete(LogoutOutbox).where((LogoutOutbox.delivered_at <= cutoff) | (LogoutOutbox.failed_at <= cutoff))
    )
    session.execute(delete(LoginSession).where(LoginSession.expires_at <= now))
    session.execute(delete(RevokedAccessToken).where(RevokedAccessToken.expires_at <= now))
    session.execute(delete(SeenJti).where(SeenJti.expires_at <= now))
    session.execute(delete(SeenProof).where(SeenProof.expires_at <= now))
    challenges.purge_expired(session, now)
    citizen_requests.purge(session, now)  # documents to sign: 15 minutes at most (issue 13)
    par.purge(session, now)
    throttle.purge(session, now)
    store.purge(session, now, insights_retention_months)  # counters past their retention


def background(app: Any, stop: threading.Event, interval: float = 2.0) -> None:
    """Deliver back-channel logouts and purge expired rows, until stopped (mails have their own
    thread: idp.mail.Courier)."""
    from db import audit, transaction, utcnow
    from idp import audit_spool
    from idp.insights import funnel
    from idp.insights.report import roll_up
    from idp.oauth.backchannel import deliver_due
    from idp.privacy import purge_unconfirmed

    rt = app.extensions["cityid"]
    rt.courier.start()  # retries of mails left in the outbox, also before this worker sends one
    ticks = 0
    while not stop.wait(interval):
        try:
            audit_spool.replay(rt.sessions, rt.config.data_dir)  # records kept while the db was down
            audit.chain_pending(rt.engine)  # entries committed by a process that died before chaining
            deliver_due(rt.sessions, rt.key_cache)
            funnel.flush(app)  # this worker's login funnel increments (idp.insights)
            ticks += 1
            if ticks % 30 == 0:
                with transaction(rt.sessions) as s:
                    purge_expired(s, utcnow(), insights_retention_months=rt.config.insights.retention_months)
                with transaction(rt.sessions) as s:  # completed days of the funnel counters
                    roll_up(s, utcnow())
                with app.app_context():  # erasure hooks of other packages may load the CA
                    purge_unconfirmed(
                        rt.sessions, rt.keys, rt.key_cache, issuer=rt.config.issuer, now=utcnow()
                    )
        except Exception:  # keep the worker alive; the outbox keeps what is not done
            log.exception("background duty failed")


def bind_problem(bind: str) -> str | None:
    """Why ``bind`` (HOST:PORT or unix:PATH) cannot be served on, or None.

    granian listens with SO_REUSEPORT: a second `cityid serve` on an address another process
    already listens on would not fail, the kernel would split the connections between the two
    (perhaps of different versions or configurations) without a word. So the address is tried
    first with a socket *without* SO_REUSEPORT, which the kernel refuses (EADDRINUSE) while
    anyone listens there; SO_REUSEADDR lets a just-stopped server's connections in TIME_WAIT
    not count. (A process that binds between this check and the server's own bind is not
    caught: this is for the mistake, not for a race.)"""
    if bind.startswith("unix:"):
        path = bind[len("unix:") :]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except OSError:
                return None  # nobody answers there: a stale socket file is replaced
        return f"--bind {bind}: another process is already listening on {path}"
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        addresses = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, ValueError) as exc:
        return f"--bind {bind}: {exc}"
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return (
                        f"--bind {bind}: another process is already listening on that address "
                        "(stop it, or pick another port: two servers on one address would split "
                        "the requests between them)"
                    )
                return f"--bind {bind}: {exc.strerror or exc}"
    return None


class Background:
    """A worker's background duties (idp.serve.background, the mail courier) and their end.

    A worker that stops ends them before the interpreter goes: a daemon thread still inside a
    database driver or a C extension while the process finalises is how Python processes die of
    SIGSEGV at exit. Bounded: a duty stuck on a hanging mail server is left after ``grace``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=background, args=(app, self.stop_event), daemon=True, name="cityid-background"
        )
        self._stopped = False
        self._lock = threading.Lock()

    def start(self) -> Background:
        self.thread.start()
        return self

    def stop(self, grace: float = 10.0) -> bool:
        """Idempotent; True when every duty ended within ``grace`` seconds."""
        with self._lock:
            if self._stopped:
                return True
            self._stopped = True
        deadline = time.monotonic() + grace
        self.stop_event.set()
        rt = self.app.extensions["cityid"]
        try:
            from idp.insights import funnel

            funnel.flush(self.app)  # the last counts of this worker
        except Exception:
            log.exception("insights: the last funnel counts could not be written")
        courier_done = rt.courier.stop(wait=max(0.1, deadline - time.monotonic()))
        if self.thread.is_alive():
            self.thread.join(max(0.1, deadline - time.monotonic()))
        clean = courier_done and not self.thread.is_alive()
        if clean:
            rt.engine.dispose()  # the database sees its connections closed, not cut
        log.info("cityid worker %d: background duties %s", os.getpid(), "ended" if clean else "left running")
        return clean


def start_background(app: Any) -> Background:
    """Start the duties and end them when this process exits: a granian worker leaves through
    multiprocessing (its finalizers run, atexit does not), gunicorn's and the demo through atexit."""
    duties = Background(app).start()
    multiprocessing.util.Finalize(None, duties.stop, exitpriority=100)
    atexit.register(duties.stop)
    return duties


class _DrainingArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master with the drain ahead of its graceful stop (as ``_draining_granian``).

    gunicorn's master takes signals from a queue in its main loop and calls ``handle_term`` for
    SIGTERM, which raises StopIteration: the graceful stop. Here the first SIGTERM sets the
    shared flag of idp.health (created before the workers are forked, so they see it) and only
    notes the drain's end; ``manage_workers``, which the loop calls at least once a second,
    raises the StopIteration once it is reached. A second SIGTERM stops at once."""

    drain_seconds = 0.0
    _drain_until: float | None = None

    def handle_term(self) -> None:
        if self.drain_seconds <= 0 or self._drain_until is not None:
            raise StopIteration
        from idp import health

        health.start_drain()
        log.warning(
            "cityid: SIGTERM, /health answers 503 for %.1f s, then a graceful stop", self.drain_seconds
        )
        self._drain_until = time.monotonic() + self.drain_seconds

    def manage_workers(self) -> None:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            raise StopIteration  # the drain is over: gunicorn's graceful stop
        super().manage_workers()


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, cfg: Config, options: dict[str, Any], demo: bool, drain_seconds: float = 0.0) -> None:
        self._cfg = cfg
        self._options = options
        self._demo = demo
        self._drain_seconds = drain_seconds
        super().__init__()

    def run(self) -> None:
        from idp import health

        health.prepare()  # before the fork: the workers share this flag with the master
        arbiter = _DrainingArbiter(self)
        arbiter.drain_seconds = self._drain_seconds
        try:
            arbiter.run()
        except RuntimeError as e:  # as gunicorn's BaseApplication.run
            print(f"\nError: {e}\n", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(1)

    def load_config(self) -> None:
        for k, v in self._options.items():
            self.cfg.set(k, v)

    def load(self) -> Any:
        return _load(self._cfg, self._demo)


# A worker started while the database is away (a restart, a failover; bench/faults.py) waits
# this long for it before giving up; granian would otherwise respawn it at once, see it fail
# again and end the whole server ("Worker crash loop detected").
STARTUP_DATABASE_WAIT_SECONDS = 120.0


def wait_for_database(engine: Any, seconds: float = STARTUP_DATABASE_WAIT_SECONDS) -> None:
    """Return once ``engine`` connects; wait (up to ``seconds``) while the database is away, so
    that `cityid serve` started by its supervisor during a database restart or failover comes up
    with the database instead of exiting. Other errors (a wrong password, no such database) are
    raised at once."""
    from sqlalchemy.exc import DBAPIError

    from idp.retry import lost_connection

    deadline = time.monotonic() + seconds
    pause = 0.2
    while True:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return
        except DBAPIError as exc:
            if not lost_connection(exc) or time.monotonic() + pause > deadline:
                raise
            log.warning("database not reachable at start (%s): waiting", type(exc).__name__)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def while_database_away(
    step: Callable[[], T], what: str, seconds: float = STARTUP_DATABASE_WAIT_SECONDS
) -> T:
    """Run a start-up ``step`` that reads the database; while the connection is lost (a restart
    or failover that began after :func:`wait_for_database` saw the database up), wait and run it
    again from the start, up to ``seconds``. Any other error is raised at once."""
    from idp.retry import lost_connection

    deadline = time.monotonic() + seconds
    pause = 0.2
    while True:
        try:
            return step()
        except Exception as exc:
            if not lost_connection(exc) or time.monotonic() + pause > deadline:
                raise
            log.warning("database not reachable while %s (%s): waiting", what, type(exc).__name__)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def _load(cfg: Config, demo: bool) -> Any:
    from idp.app import create_app

    app = while_database_away(lambda: create_app(cfg, demo=demo), "the worker starts")
    start_background(app)
    return app


# Default of `cityid serve --drain-seconds`: longer than a load balancer's health-check interval
# plus the checks it needs to take an instance out (docs/operations.md, "Stopping").
DEFAULT_DRAIN_SECONDS = 5.0


def _draining_granian(drain_seconds: float) -> Any:
    """granian's server with a drain ahead of its graceful stop.

    granian's main process handles SIGTERM and SIGINT with ``signal_handler_interrupt`` (set by
    its ``startup``, looked up on the instance, so a subclass's method is the one installed): it
    wakes the main loop, which stops the workers (SIGTERM to each: accepted requests finish, up
    to ``workers_kill_timeout``) and exits 0. Here the first SIGTERM instead starts the drain:
    the shared flag of idp.health is set (the workers see it through the shared memory they
    inherited at their fork, so ``/health`` answers 503 in all of them while they go on serving
    every other request), and only after ``drain_seconds`` does a timer thread call granian's
    own handler, so the stop is the same graceful stop as without a drain. SIGINT (Ctrl-C at a
    terminal, which reaches the workers too) and a second SIGTERM stop at once.

    The workers must not get the SIGTERM themselves: under systemd, ``KillMode=mixed`` (the
    signal to the main process only; docs/operations.md)."""
    import signal as signals

    from granian import Granian

    from idp import health

    class DrainingGranian(Granian):  # type: ignore[misc,valid-type]
        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            signum = args[0] if args else None
            if drain_seconds <= 0 or signum != signals.SIGTERM or health.draining():
                super().signal_handler_interrupt(*args, **kwargs)
                return
            health.start_drain()
            log.warning(
                "cityid: SIGTERM, /health answers 503 for %.1f s, then a graceful stop", drain_seconds
            )
            timer = threading.Timer(drain_seconds, super().signal_handler_interrupt)
            timer.daemon = True
            timer.start()

    health.prepare()  # before the fork: the workers share this flag with the main process
    return DrainingGranian


def _run_granian(
    cfg: Config,
    *,
    bind: str,
    workers: int,
    threads: int,
    demo: bool,
    access_log: bool,
    drain_seconds: float = DEFAULT_DRAIN_SECONDS,
) -> None:
    from granian.constants import Interfaces

    Granian = _draining_granian(drain_seconds)

    where: dict[str, Any]
    if bind.startswith("unix:"):  # a Unix socket for the proxy on the same machine (as gunicorn)
        where = {"uds": Path(bind[len("unix:") :]), "uds_permissions": 0o660}
    else:
        host, _, port = bind.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"--bind {bind!r}: expected HOST:PORT or unix:PATH")
        where = {"address": host.strip("[]") or "127.0.0.1", "port": int(port)}
    server = Granian(
        "cityid",  # a name for the logs: the app comes from the loader below
        **where,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        log_access=access_log,
        websockets=False,  # WSGI has none
        respawn_failed_workers=True,
        workers_kill_timeout=15,  # a worker stuck in a request does not hold up a shutdown for ever
    )
    # Workers are forked: each builds its own app (own database pool) after the fork.
    server.serve(target_loader=lambda _target: _load(cfg, demo))


def run(
    cfg: Config,
    *,
    bind: str,
    workers: int,
    demo: bool = False,
    threads: int = 4,
    server: str = "granian",
    access_log: bool = False,
    drain_seconds: float = DEFAULT_DRAIN_SECONDS,
) -> None:
    """Serve until stopped. ``access_log``: one line per request on standard error; off by
    default because the TLS proxy in front logs every request anyway, and the line costs about a
    third of the OCSP responder's throughput (measured: 6,000 vs 4,000 responses/s on one core).
    Security decisions are in the audit log either way. ``drain_seconds``: on SIGTERM, ``/health``
    answers 503 this long before the graceful stop (idp.health)."""
    if cfg.insights.metrics:
        from idp.insights import metrics

        # before any worker imports prometheus_client: its multiprocess mode (one truth per
        # serve process, whatever worker a scrape reaches)
        metrics.prepare_multiprocess(cfg)
        if cfg.insights.metrics_bind:  # /metrics on its own address, never on the public bind
            metrics.start_listener(cfg, cfg.insights.metrics_bind)
    if server == "granian":
        _run_granian(
            cfg,
            bind=bind,
            workers=workers,
            threads=threads,
            demo=demo,
            access_log=access_log,
            drain_seconds=drain_seconds,
        )
        return
    worker_class = "gthread" if threads > 1 else "sync"
    options = {
        "bind": bind,
        "workers": workers,
        "worker_class": worker_class,
        "threads": threads,
        "accesslog": "-" if access_log else None,
        "timeout": 30,
        "graceful_timeout": 10,
        "forwarded_allow_ips": "127.0.0.1",
        "limit_request_line": 8190,
    }
    _Gunicorn(cfg, options, demo, drain_seconds).run()
