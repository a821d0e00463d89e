"""`cityid serve --workers 2` with metrics on their own address: the request metrics of both
granian workers are summed (prometheus_client multiprocess mode), the funnel counters come from
the database, the public bind has no /metrics, and the CLI shows the same logins (issue 15)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.login import one_login
from tests.idp.conftest import free_port
from tests.idp.test_processes import CITYID, PASSWORD, cityid, write_config

LOGINS = 4
DISCOVERY = 30
REDIRECT = "http://127.0.0.1:9/cb"


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    data = tmp_path / "data"
    port, mport = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port}"
    write_config(data, db_url, issuer)
    with (data / "cityid.toml").open("a") as fh:
        fh.write(f'[insights]\nmetrics = true\nmetrics_bind = "127.0.0.1:{mport}"\n')
    cityid(data, "init")
    proc = subprocess.Popen(
        [*CITYID, "serve", "--data-dir", str(data), "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "serve.log").open("w"),
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    try:
        for _ in range(300):
            try:
                if requests.get(f"{issuer}/jwks.json", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not start")
        yield data, issuer, f"http://127.0.0.1:{mport}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _value(text: str, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert m, f"no sample {sample}"
    return float(m.group(1))


def test_two_granian_workers_one_truth_in_metrics_and_cli(served: Any) -> None:
    data, url, metrics_url = served
    client = json.loads(
        cityid(data, "client", "add", "--name", "Svc", "--redirect-uri", REDIRECT, "--json").stdout
    )
    email = "hans@example.org"
    cityid(data, "user", "add", "--email", email, "--verified", env={"CITYID_NEW_USER_PASSWORD": PASSWORD})
    from bench.login import _consent

    _consent(url, client["client_id"], email)  # the first login (with the consent page)
    for _ in range(LOGINS - 1):
        one_login(url, client["client_id"], client["client_secret"], email)
    before = requests.get(f"{metrics_url}/metrics", timeout=10).text  # the readiness probe counted too
    for _ in range(DISCOVERY):
        requests.get(f"{url}/.well-known/openid-configuration", timeout=10)
    assert requests.get(f"{url}/metrics", timeout=10).status_code == 404  # not on the public bind
    logins = 'cityid_logins_total{level="low",method="password"}'
    tokens = 'cityid_tokens_issued_total{grant="authorization_code"}'
    for _ in range(100):  # each worker writes its counts at its own background tick (2 s)
        text = requests.get(f"{metrics_url}/metrics", timeout=10).text
        if all(
            re.search(rf"^{re.escape(name)} ", text, re.M) and _value(text, name) >= want
            for name, want in ((logins, LOGINS), (tokens, LOGINS - 1))
        ):
            break
        time.sleep(0.2)
    # both workers' request counts, summed: every discovery request, whichever worker took it
    for sample in (
        'cityid_http_requests_total{group="discovery",status="2xx"}',
        'cityid_http_request_duration_seconds_count{group="discovery"}',
    ):
        assert _value(text, sample) - _value(before, sample) == DISCOVERY
    # codes issued (the consent round issued one too), tokens redeemed, from the database
    assert _value(text, 'cityid_logins_total{level="low",method="password"}') == LOGINS
    shown = json.loads(cityid(data, "insights", "show", "--json").stdout)
    assert shown["logins"] == LOGINS
    assert _value(text, tokens) == LOGINS - 1
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
