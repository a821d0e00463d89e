"""``/insights`` for city staff, its download, and ``/metrics`` on the public bind (token only).

The dashboard is protected like a service that asks for *substantial*: the same policies decide,
the same step-up pages raise a low session (ARCHITECTURE: step up, never restart).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, redirect, render_template, request
from flask_babel import gettext as _

from db import utcnow
from idp import browser, levels, uow
from idp.crypto import equal
from idp.insights import funnel, metrics, render, report
from idp.insights.access import may_see_insights
from idp.runtime import runtime
from policies import AskStep, AuthnRequestFacts, ClientPolicy, Level, Refused, next_step, required_level

bp = Blueprint("insights", __name__, template_folder="templates")

DASHBOARD_LEVEL = Level.SUBSTANTIAL
MAX_DAYS = 800  # 25 months and a little
STEP_URLS = {
    "password": "/login",
    "device": "/login/device",
    "webauthn": "/login/webauthn",
    "eid": "/login/eid",
}


def _range() -> tuple[report.Range, str | None]:
    """The range asked for in the query (default: the last 30 days), or an error text."""
    today = utcnow().date()
    error = None
    try:
        since = dt.date.fromisoformat(
            request.args.get("since", "")[:10] or (today - dt.timedelta(days=29)).isoformat()
        )
        until = dt.date.fromisoformat(request.args.get("until", "")[:10] or today.isoformat())
        if until < since or (until - since).days > MAX_DAYS:
            raise ValueError
    except ValueError:
        error = _("Please enter a valid period (from before to, at most 25 months).")
        since, until = today - dt.timedelta(days=29), today
    service = request.args.get("service", "")[:64] or None
    return report.Range(since, until, service), error


def _guard() -> Any:
    """None when the browser may see the dashboard; else the answer (login, step-up, 403)."""
    account = browser.current_account()
    here = request.full_path if request.query_string else request.path
    if account is None:
        _wait_here(here)
        return redirect("/login")
    if not may_see_insights(account):
        uow.record(
            action="insights.view",
            outcome="denied",
            actor=account.id,
            subject="insights",
            reason="no analyst or admin role",
        )
        return render_template(
            "message.html",
            title=_("No access"),
            message=_("This page is for city staff with the analyst role."),
            status="error",
        ), 403
    session = browser.current()
    decision = required_level(
        AuthnRequestFacts(requested_at=utcnow()), ClientPolicy("cityid-insights", DASHBOARD_LEVEL), {}
    )
    outcome = next_step(
        decision, levels.session_facts(session), levels.account_facts(uow.db(), account), utcnow()
    )
    if isinstance(outcome, Refused):
        uow.record(
            action="insights.view",
            outcome="denied",
            actor=account.id,
            subject="insights",
            reason=f"{outcome.error}: {outcome.reason.code}",
        )
        return render_template(
            "message.html",
            title=_("A stronger login is needed"),
            message=_(
                "The statistics can only be opened with a login of level substantial: please set up "
                "the city app or a security key first."
            ),
            status="error",
            link="/account",
            link_text=_("My account"),
        ), 403
    if isinstance(outcome, AskStep):
        _wait_here(here)
        uow.record(
            action="insights.step_up",
            outcome="info",
            actor=account.id,
            subject="insights",
            reason=f"{outcome.step}: {outcome.reason.code}",
        )
        return redirect(STEP_URLS[str(outcome.step)])
    return None


def _wait_here(url: str) -> None:
    """The login and step-up pages continue here when done (the pending authorization)."""
    s = browser.ensure()
    s.pending = json.dumps({"q": "", "started": int(time.time()), "url": url})


@bp.get("/insights")
def dashboard() -> Any:
    refused = _guard()
    if refused is not None:
        return refused
    rng, error = _range()
    started = time.perf_counter()
    board = report.dashboard(uow.db(), rng)
    services = {s for s, _n in board.logins_per_service} | {f.service for f in board.funnels}
    if rng.service:
        services.add(rng.service)
    uow.record(
        action="insights.view",
        outcome="success",
        actor=browser.current_account().id,  # type: ignore[union-attr]
        subject="insights",
        reason=f"{rng.since}..{rng.until} {rng.service or 'all'}",
    )
    days = [(d.isoformat(), n) for d, n in board.logins_per_day]
    names = _service_names(sorted(services))
    return render_template(
        "insights/dashboard.html",
        board=board,
        rng=rng,
        error=error,
        services=sorted(services),
        chart_days=render.column_chart(days),
        names=names,
        chart_services=render.bar_chart([(names.get(s, s), n) for s, n in board.logins_per_service[:20]]),
        chart_methods=render.bar_chart(list(board.methods)),
        chart_devices=render.bar_chart(list(board.devices_by_platform)),
        k=runtime().config.insights.min_count,
        download=urlencode({"since": rng.since.isoformat(), "until": rng.until.isoformat()}),
        took_ms=round((time.perf_counter() - started) * 1000),
    )


def _service_names(client_ids: list[str]) -> dict[str, str]:
    """The services' names (the counters know only their client_id)."""
    from sqlalchemy import select

    from idp.models import Client

    if not client_ids:
        return {}
    rows = uow.db().execute(
        select(Client.client_id, Client.name).where(Client.client_id.in_(client_ids[:500]))
    )
    return {cid: name for cid, name in rows.all()}


@bp.get("/insights/export.<fmt>")
def download(fmt: str) -> Any:
    refused = _guard()
    if refused is not None:
        return refused
    if fmt not in ("csv", "json"):
        return render_template("message.html", title=_("Page not found"), message="", status="error"), 404
    rng, _error = _range()
    k = runtime().config.insights.min_count
    rows = report.export(uow.db(), report.Range(rng.since, rng.until), k)
    body = report.export_csv(rows) if fmt == "csv" else report.export_json(rows, rng, k)
    resp = Response(body, mimetype="text/csv" if fmt == "csv" else "application/json")
    name = f"cityid-insights-{rng.since}-{rng.until}.{fmt}"
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/metrics")
def public_metrics() -> Any:
    """Prometheus on the public bind: only with ``metrics_token`` and not when the metrics have
    their own address (then this path does not exist here)."""
    cfg = runtime().config.insights
    if not cfg.metrics or cfg.metrics_bind or not cfg.metrics_token:
        return Response("not found\n", status=404, mimetype="text/plain")
    sent = request.headers.get("Authorization", "")
    scheme, _sp, token = sent.partition(" ")
    # RFC 6750 §2.1 bearer token; compared in constant time
    if scheme.lower() != "bearer" or not equal(token.strip(), cfg.metrics_token):
        uow.record(
            action="metrics.refuse",
            outcome="denied",
            actor="anonymous",
            subject="metrics",
            reason="missing or wrong bearer token",
        )
        resp = Response("unauthorized\n", status=401, mimetype="text/plain")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="cityid-metrics"'  # RFC 6750 §3
        return resp
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    funnel.flush(app)  # this worker's latest counts too
    body, content_type = metrics.exposition(runtime().sessions, runtime().config)
    resp = Response(body, status=200)
    resp.headers["Content-Type"] = content_type
    resp.headers["Cache-Control"] = "no-store"
    return resp
