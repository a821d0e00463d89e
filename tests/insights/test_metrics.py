"""/metrics: Prometheus text format accepted by promtool, off by default, a bearer token on the
public bind, absent there when the metrics have their own address (issue 15)."""

from __future__ import annotations

import subprocess
import threading
from typing import Any

import requests

from idp.config import InsightsConfig
from idp.insights import metrics
from tests.conftest import SERVER_POLL_SECONDS
from tests.idp.conftest import free_port
from tests.insights.conftest import METRICS_TOKEN, Pair


def _scrape(url: str, token: str | None = METRICS_TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{url}/metrics", headers=headers, timeout=10)


def test_metrics_output_is_accepted_by_promtool(pair: Pair) -> None:
    requests.get(f"{pair.a.url}/.well-known/openid-configuration", timeout=10)  # a request to count
    resp = _scrape(pair.a.url)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    text = resp.text
    for name in (
        "cityid_http_request_duration_seconds_bucket",
        "cityid_http_requests_total",
        "cityid_tokens_issued_total",
        "cityid_enrolled_devices",
        "cityid_certificates_revoked_total",
        "cityid_mail_outbox_depth",
        "cityid_mail_outbox_oldest_seconds",
        "cityid_backchannel_logout_backlog",
        "cityid_audit_chain_head",
        "cityid_token_signer_age_seconds",
    ):
        assert name in text, name
    assert 'cityid_http_requests_total{group="discovery",status="2xx"}' in text
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_metrics_refuse_anonymous_and_wrong_tokens_when_a_token_is_configured(pair: Pair) -> None:
    anonymous = _scrape(pair.a.url, None)
    assert anonymous.status_code == 401 and "cityid_" not in anonymous.text
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = _scrape(pair.a.url, METRICS_TOKEN[:-1] + "y")
    assert wrong.status_code == 401 and "cityid_" not in wrong.text
    assert _scrape(pair.a.url).status_code == 200


def test_metrics_are_off_by_default(idp_factory: Any) -> None:
    idp = idp_factory()
    assert _scrape(idp.url).status_code == 404
    assert _scrape(idp.url, None).status_code == 404


def test_metrics_on_their_own_address_are_absent_on_the_public_bind(idp_factory: Any) -> None:
    bind = f"127.0.0.1:{free_port()}"
    idp = idp_factory(insights=InsightsConfig(metrics=True, metrics_bind=bind, metrics_token=METRICS_TOKEN))
    # the public bind has no /metrics, not even with the token
    assert _scrape(idp.url).status_code == 404
    server = metrics.listener(idp.config, bind)
    threading.Thread(target=server.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
    try:
        own = requests.get(f"http://{bind}/metrics", timeout=10)
        assert own.status_code == 200 and "cityid_audit_chain_head" in own.text
        assert requests.get(f"http://{bind}/other", timeout=10).status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_grafana_dashboard_is_valid_json_over_metrics_cityid_serves(pair: Pair) -> None:
    import json
    import re
    from pathlib import Path

    board = json.loads((Path(__file__).parents[2] / "docs" / "grafana" / "cityid.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = {re.sub(r"_bucket$", "", m) for e in exprs for m in re.findall(r"cityid_[a-z_]+", e)}
    text = _scrape(pair.a.url).text
    served = set(re.findall(r"^# TYPE (cityid_[a-z_]+) ", text, re.M))
    served |= {n + "_total" for n in served}
    missing = used - served - {"cityid_ocsp_responses_total"}  # only once an OCSP request came
    assert not missing, missing
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_client_credentials_tokens_are_counted_on_the_fast_path_too(pair: Pair) -> None:
    from idp.insights import funnel

    cid, secret = pair.a.add_client(name="Fachverfahren", grant_types=["client_credentials"], scope="openid")
    for _ in range(3):
        resp = requests.post(
            f"{pair.a.url}/token",
            auth=(cid, secret or ""),
            data={"grant_type": "client_credentials"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
    funnel.flush(pair.a.app)
    text = _scrape(pair.b.url).text
    assert 'cityid_tokens_issued_total{grant="client_credentials"} 3.0' in text
