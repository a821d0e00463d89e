"""Prometheus metrics (text exposition format via prometheus_client).

Two sources, each correct with several granian workers and several instances:

- **From the database at scrape time** (one truth for every worker and instance): logins by
  level and method, step-ups, tokens issued by grant (the funnel counters: rolled-up totals plus
  the hours not yet rolled up), enrolled devices, certificates issued and revoked, CRL age, mail
  outbox depth and oldest mail, back-channel logout backlog, audit chain head, key ages.
- **In the process** (request rate and latency per endpoint group, OCSP answers by status):
  prometheus_client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set (``cityid
  serve`` sets it, one directory per serve process, emptied at start), so that a scrape of any
  worker sums all workers. Several instances are scraped one by one (``instance`` label).

prometheus_client is imported only when metrics are on: its multiprocess mode is chosen when it
is first imported, which must be after ``cityid serve`` has set the directory.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from idp.config import Config

log = logging.getLogger("cityid")

# Endpoint groups (a closed list: no label per URL, no unbounded cardinality).
GROUPS: tuple[tuple[str, str], ...] = (
    ("/token", "token"),
    ("/authorize", "authorize"),
    ("/par", "par"),
    ("/userinfo", "userinfo"),
    ("/introspect", "introspect"),
    ("/revoke", "revoke"),
    ("/.well-known/", "discovery"),
    ("/jwks.json", "discovery"),
    ("/login", "login"),
    ("/logout", "logout"),
    ("/register", "account"),
    ("/account", "account"),
    ("/api/", "device_api"),
    ("/pki/ocsp", "ocsp"),
    ("/pki/", "pki"),
    ("/insights", "insights"),
    ("/metrics", "metrics"),
    ("/static/", "static"),
    ("/health", "health"),  # the load balancer's checks; 503 while draining (idp.health)
)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def group_of(path: str) -> str:
    for prefix, group in GROUPS:
        if path.startswith(prefix):
            return group
    return "other"


class _InProcess:
    """The in-process metrics, created once (after the multiprocess directory is known)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.duration = Histogram(
            "cityid_http_request_duration_seconds",
            "Time to answer an HTTP request, per endpoint group",
            ["group"],
            buckets=BUCKETS,
            registry=None,
        )
        self.requests = Counter(
            "cityid_http_requests",
            "HTTP requests answered, per endpoint group and status class",
            ["group", "status"],
            registry=None,
        )
        self.ocsp = Counter(
            "cityid_ocsp_responses",
            "OCSP answers by certificate or response status",
            ["status"],
            registry=None,
        )


_instance: _InProcess | None = None
_lock = threading.Lock()


def in_process() -> _InProcess:
    global _instance
    if _instance is None:
        with _lock:
            if _instance is None:
                _instance = _InProcess()
    return _instance


class RequestMetrics:
    """WSGI middleware: request count and latency per endpoint group (outermost)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.m = in_process()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        status: list[str] = ["500"]

        def recording_start(s: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = s[:3]
            return start_response(s, headers, exc_info) if exc_info else start_response(s, headers)

        group = group_of(environ.get("PATH_INFO", ""))
        try:
            return self.app(environ, recording_start)
        finally:
            self.m.duration.labels(group).observe(time.perf_counter() - started)
            self.m.requests.labels(group, status[0][:1] + "xx").inc()


def observe_ocsp(status: str) -> None:
    in_process().ocsp.labels(status).inc()


# --------------------------------------------------------------------------- from the database


def _seconds(a: dt.datetime | None, b: dt.datetime) -> float | None:
    if a is None:
        return None
    if a.tzinfo is None:
        a = a.replace(tzinfo=dt.UTC)
    return (b - a).total_seconds()


class DatabaseCollector:
    """Reads the figures of every worker and instance from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def describe(self) -> list[Any]:
        return []  # no registration-time scrape (it would need the database)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now = dt.datetime.now(dt.UTC)
        with self.sessions() as s:
            yield from self._funnel(s, CounterMetricFamily)
            yield from self._state(s, now, GaugeMetricFamily, CounterMetricFamily)
            s.rollback()

    def _funnel(self, s: Session, Counter: Any) -> Iterator[Any]:
        from idp.insights.report import totals

        t = totals(s)
        tokens = Counter("cityid_tokens_issued", "Token responses by grant type", labels=["grant"])
        logins = Counter(
            "cityid_logins",
            "Authorizations that got a code, by level reached and method",
            labels=["level", "method"],
        )
        stepups = Counter("cityid_stepups", "Step-ups by method and outcome", labels=["method", "outcome"])
        steps = Counter("cityid_funnel_steps", "Login funnel steps by outcome", labels=["step", "outcome"])
        by_grant: dict[str, int] = {}
        by_login: dict[tuple[str, str], int] = {}
        by_stepup: dict[tuple[str, str], int] = {}
        by_step: dict[tuple[str, str], int] = {}
        for (step, outcome, reached, method), n in sorted(t.items()):
            by_step[(step, outcome)] = by_step.get((step, outcome), 0) + n
            if step == "code" and outcome == "redeemed":
                by_grant["authorization_code"] = by_grant.get("authorization_code", 0) + n
            elif step == "token":
                by_grant[outcome] = by_grant.get(outcome, 0) + n
            elif step == "code" and outcome == "issued":
                key = (reached or "unknown", method or "unknown")
                by_login[key] = by_login.get(key, 0) + n
            elif step == "stepup":
                key = (method or "unknown", outcome)
                by_stepup[key] = by_stepup.get(key, 0) + n
        for grant in ("authorization_code", "refresh_token", "client_credentials"):
            by_grant.setdefault(grant, 0)
        for g, n in sorted(by_grant.items()):
            tokens.add_metric([g], n)
        for (level, method), n in sorted(by_login.items()):
            logins.add_metric([level, method], n)
        for (method, outcome), n in sorted(by_stepup.items()):
            stepups.add_metric([method, outcome], n)
        for (step, outcome), n in sorted(by_step.items()):
            steps.add_metric([step, outcome], n)
        yield from (tokens, logins, stepups, steps)

    def _state(self, s: Session, now: dt.datetime, Gauge: Any, Counter: Any) -> Iterator[Any]:
        from db.audit import AuditHead
        from idp.insights.funnel import platform_of
        from idp.models import LogoutOutbox, MailOutbox, SigningKey
        from idp.webauthn_models import WebAuthnCredential
        from pki.models import CaAuthority, CaCertificate, CaCrlState
        from smartcard.models import Device

        devices = Gauge(
            "cityid_enrolled_devices", "Enrolled, unrevoked devices by platform", labels=["platform"]
        )
        per_platform: dict[str, int] = {}
        for kind, n in s.execute(
            select(Device.type, func.count()).where(Device.revoked_at.is_(None)).group_by(Device.type)
        ).all():
            per_platform[platform_of(kind)] = per_platform.get(platform_of(kind), 0) + int(n)
        per_platform["security_key"] = int(
            s.execute(select(func.count()).select_from(WebAuthnCredential)).scalar() or 0
        )
        for p, n in sorted(per_platform.items()):
            devices.add_metric([p], n)
        yield devices
        enrolled = Counter("cityid_enrolments", "Device enrolments (virtual smartcards) ever recorded")
        enrolled.add_metric([], int(s.execute(select(func.count()).select_from(Device)).scalar() or 0))
        yield enrolled

        issued = Counter(
            "cityid_certificates_issued", "Certificates issued by the CA, by profile", labels=["profile"]
        )
        for profile, n in s.execute(
            select(CaCertificate.profile, func.count())
            .where(CaCertificate.status != "pending")
            .group_by(CaCertificate.profile)
        ).all():
            issued.add_metric([profile], int(n))
        yield issued
        revoked = Counter("cityid_certificates_revoked", "Certificates revoked")
        revoked.add_metric(
            [],
            int(s.execute(select(func.count()).where(CaCertificate.revoked_at.is_not(None))).scalar() or 0),
        )
        yield revoked

        crl = Gauge("cityid_crl_age_seconds", "Age of the newest full CRL of each issuer", labels=["issuer"])
        for issuer, this_update in s.execute(
            select(CaCrlState.issuer_id, func.max(CaCrlState.this_update)).group_by(CaCrlState.issuer_id)
        ).all():
            age = _seconds(this_update, now)
            if age is not None:
                crl.add_metric([issuer], age)
        yield crl

        depth = Gauge("cityid_mail_outbox_depth", "Mails waiting in the outbox")
        depth.add_metric([], int(s.execute(select(func.count()).select_from(MailOutbox)).scalar() or 0))
        yield depth
        oldest = Gauge("cityid_mail_outbox_oldest_seconds", "Age of the oldest mail waiting (0: none)")
        oldest.add_metric(
            [], _seconds(s.execute(select(func.min(MailOutbox.created_at))).scalar(), now) or 0.0
        )
        yield oldest

        backlog = Gauge("cityid_backchannel_logout_backlog", "Back-channel logout tokens not yet delivered")
        backlog.add_metric(
            [],
            int(
                s.execute(
                    select(func.count()).where(
                        LogoutOutbox.delivered_at.is_(None), LogoutOutbox.failed_at.is_(None)
                    )
                ).scalar()
                or 0
            ),
        )
        yield backlog

        head = Gauge("cityid_audit_chain_head", "Sequence number of the newest audit log entry")
        head.add_metric([], int(s.execute(select(AuditHead.last_seq)).scalar() or 0))
        yield head

        signer = Gauge(
            "cityid_token_signer_age_seconds", "Age of the active token-signing keys", labels=["alg"]
        )
        for alg, created in s.execute(
            select(SigningKey.alg, func.max(SigningKey.active_from))
            .where(SigningKey.retired_at.is_(None), SigningKey.active_from <= now)
            .group_by(SigningKey.alg)
        ).all():
            age = _seconds(created, now)
            if age is not None:
                signer.add_metric([alg], age)
        yield signer

        ocsp_age = Gauge("cityid_ocsp_signer_age_seconds", "Age of the active OCSP signer certificate")
        expiry = Gauge("cityid_ca_expiry_seconds", "Seconds until a CA certificate expires", labels=["kind"])
        for kind, not_before, not_after in s.execute(
            select(CaAuthority.kind, CaAuthority.not_before, CaAuthority.not_after).where(CaAuthority.active)
        ).all():
            if kind == "ocsp-signer":
                ocsp_age.add_metric([], _seconds(not_before, now) or 0.0)
            else:
                left = _seconds(now, not_after)  # negative once expired
                if left is not None:
                    expiry.add_metric([kind], left)
        yield ocsp_age
        yield expiry


def exposition(sessions: sessionmaker[Session], cfg: Config) -> tuple[bytes, str]:
    """The text exposition of every metric: (body, Content-Type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(sessions))
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(_InProcessCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _InProcessCollector:
    def collect(self) -> Iterator[Any]:
        m = in_process()
        for metric in (m.duration, m.requests, m.ocsp):
            yield from metric.collect()


# --------------------------------------------------------------------------- own listener


def metrics_app(cfg: Config) -> Callable[..., Iterable[bytes]]:
    """A WSGI app answering GET /metrics only: for the metrics' own address."""
    from db import make_engine, make_session_factory

    sessions = make_session_factory(make_engine(cfg.db_url))

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        try:
            body, ctype = exposition(sessions, cfg)
        except Exception:
            log.exception("metrics: scrape failed")
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"scrape failed\n"]
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]

    return app


def listener(cfg: Config, bind: str) -> Any:
    """A small threaded HTTP server for /metrics on ``bind`` (HOST:PORT)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"metrics_bind {bind!r}: expected HOST:PORT")
    return make_server(host.strip("[]") or "127.0.0.1", int(port), metrics_app(cfg), _Server, _Quiet)


def start_listener(cfg: Config, bind: str) -> Any:
    server = listener(cfg, bind)
    threading.Thread(target=server.serve_forever, daemon=True, name="cityid-metrics").start()
    return server


def serve_forever(cfg: Config, bind: str) -> None:
    listener(cfg, bind).serve_forever()


def prepare_multiprocess(cfg: Config) -> str:
    """Before workers start: an empty directory for the workers' metric files."""
    import shutil

    directory = cfg.data_dir / "metrics" / str(os.getpid())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return str(directory)
