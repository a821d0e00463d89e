"""Issue 19, graceful stop: a rolling restart of every instance under load fails no request.

Runs ``bench/faults.py --profile rolling`` (32 s on an idle machine, 60-65 s at a load average
of 10 on its 2 cores: the restarted instances' start-up is most of it): its own PostgreSQL 15
cluster, two ``cityid serve --drain-seconds 1.5`` behind a proxy that checks ``GET /health``
every 0.2 s (as a load balancer's active health check) and does not retry a refused connection
on another backend; the mixed load; then each instance in turn gets SIGTERM, is drained out of
the rotation, exits, is started again on its port and taken back once its ``/health`` answers
200.

Without the drain (``python -m bench.faults --profile rolling --drain-seconds 0``) the same run
loses requests: 6 of 772, 7 of 712 and 8 of 486 (three runs) ended with the connection closed unanswered
(client credentials, refreshes, logins, a mail request), the ones the proxy sent in the instant
between the instance closing its socket and the next health check. With the drain: 0 failed of
690, 764 and 625 (three runs with two login threads), 0 of 1,059 with ``--instances 3``, 0 of
391 with this profile's lighter load, besides this test's own runs.
"""

from __future__ import annotations

import json

import pytest

from bench.faults import PG_BIN, profile_for, run
from tests.conftest import PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL tests (CI sets CITYID_TEST_POSTGRES_URL)")


def test_rolling_restart_of_every_instance_under_load_fails_no_request_and_every_exit_is_0() -> None:
    assert (PG_BIN / "initdb").exists(), f"PostgreSQL 15 server binaries expected in {PG_BIN}"
    profile = profile_for("rolling", 0)
    assert profile.health_interval is not None and profile.health_interval < profile.drain_seconds
    result = run(profile)
    inv = result["invariants"]
    report = json.dumps({"requests": result["requests"], "rolling": inv["rolling_restart"]}, indent=1)
    rolling = inv["rolling_restart"]
    # every instance was restarted, while the load ran
    assert [r["instance"] for r in rolling["restarts"]] == [0, 1], report
    assert result["requests"]["ok"].get("client_credentials", 0) > 50, report
    assert result["requests"]["ok"].get("refresh", 0) > 20 and result["requests"]["ok"].get("login", 0) > 5
    # no 5xx, no connection lost: not one failed request
    assert result["requests"]["server_error_5xx"] == {}, result["errors_sample"]
    assert result["requests"]["outcome_unknown"] == {}, report
    assert rolling["failed_requests"] == 0, report
    # each stop (two in the roll, two at the end) was clean: exit 0
    assert rolling["exit_codes"] == [0, 0, 0, 0], report
    assert rolling["ok"], report
    assert inv["processes"]["ok"] and inv["processes"]["signal_deaths"] == 0, json.dumps(inv["processes"])
    assert result["ok"], json.dumps(inv, indent=1)
