"""Instances add capacity, not contention: the CPU per operation of one ``cityid serve`` and of two
on one PostgreSQL, under the same load (issue 19: two instances at most 10 % above one).

Prints one JSON document. Usage:

    python -m bench.instances [--db-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                              [--seconds 20] [--threads 8] [--cores 0,0] [--rounds 1]

``--rounds N``: N pairs of phases (one instance, two instances), alternating, and the median of
their ratios: on a shared machine a neighbour's load that comes or goes between two phases moves
a single ratio by more than the 10 % it is judged by.

A new database beside ``--db-url`` (dropped at the end), one data dir, ``cityid init``, a
client-credentials client and a code + refresh client, and ``--threads`` citizens who each log in
once (code + PKCE, consent). Then two phases with the same load from ``--threads`` threads of this
process (pinned to the last core): half the threads ask for client-credentials tokens (RFC 6749
§4.4), half rotate their refresh token (RFC 6749 §6) in a chain, each request to the next instance
in turn.

1. one ``cityid serve --workers 1`` (default 4 request threads) pinned to the first of ``--cores``;
2. two of them on the same data dir and database, pinned to ``--cores``.

For each phase: operations, CPU seconds of the server processes (the serve process and its worker,
from ``/proc``) and of PostgreSQL: the backends of the bench's database (``pg_stat_activity``,
``/proc/<pid>/stat``) plus the cluster's own processes (WAL writer, checkpointer, background
writer, ... : every child of the postmaster that is no client backend; they also work for other
databases of the cluster, so they are reported apart and added to the total). CPU per operation
and the ratio two/one. Before each phase the instances sit idle for ``--idle-seconds``: their idle
CPU (granian's loop, the background duties every 2 s) is reported and taken out of the
``*_net_of_idle`` figures (at a few dozen operations a second on a busy machine it is a sizeable
share of each one, and two instances pay it twice). CPU time, not rates: the machine is shared.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from bench._server import CLI, ROOT, _fresh_database, cli, free_port

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/cb"
_TICK = os.sysconf("SC_CLK_TCK")


def _stat_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


class PgMeter:
    """CPU seconds of the bench database's backends and of the cluster's own processes."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        me = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        assert me is not None
        self.me = int(me[0])
        stat = Path(f"/proc/{self.me}/stat").read_text().rsplit(")", 1)[1].split()
        self.postmaster = int(stat[1])  # a backend's parent

    def pids(self) -> tuple[list[int], list[int]]:
        rows = self.conn.execute(
            "SELECT pid, datname = current_database(), backend_type FROM pg_stat_activity"
        ).fetchall()
        ours = [int(p) for p, same, kind in rows if same and kind == "client backend" and p != self.me]
        clients = {int(p) for p, _same, kind in rows if kind == "client backend"}
        cluster = [p for p in _children(self.postmaster) if p not in clients and p != self.me]
        return ours, cluster

    def close(self) -> None:
        self.conn.close()


class Instance:
    """One ``cityid serve --workers 1`` in its own process group, pinned to a core."""

    def __init__(self, data: Path, core: int, n: int, threads: int, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data.parent / f"serve-{n}.log"
        argv = ["taskset", "-c", str(core), *CLI, "serve", "--data-dir", str(data)]
        argv += ["--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads", str(threads)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/jwks.json", timeout=2).ok:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"instance {n} did not start: {self.log.read_text()[-2000:]}")

    def cpu(self) -> float:
        return sum(_stat_cpu(p) for p in _tree(self.proc.pid))

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def login(url: str, cid: str, secret: str, email: str) -> str:
    """A refresh token from one code + PKCE login (consent on the way, if asked)."""
    http = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": REDIRECT,
        "scope": "openid email",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    r = http.get(f"{url}/authorize", params=params, allow_redirects=False)
    for _ in range(10):
        loc = r.headers.get("Location", "")
        if r.status_code in (302, 303) and loc.startswith(REDIRECT):
            break
        if r.status_code in (302, 303):
            r = http.get(loc if loc.startswith("http") else url + loc, allow_redirects=False)
            continue
        m = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
        assert m, (r.status_code, r.text[:300])
        if 'name="password"' in r.text:
            form = {"csrf_token": m.group(1), "email": email, "password": PASSWORD}
        else:
            form = {"csrf_token": m.group(1), "decision": "allow"}
        r = http.post(r.url, data=form, allow_redirects=False)
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    r = http.post(f"{url}/token", auth=(cid, secret), data=body)
    assert r.status_code == 200, r.text
    return str(r.json()["refresh_token"])


class Load:
    """Half the threads: client credentials; half: a refresh chain each. Round robin over urls."""

    def __init__(self, machine: tuple[str, str], client: tuple[str, str], refresh: list[str]) -> None:
        self.machine, self.client, self.refresh = machine, client, refresh

    def run(self, urls: list[str], seconds: float) -> dict[str, Any]:
        stop = time.perf_counter() + seconds
        counts = {"client_credentials": 0, "refresh": 0, "errors": 0}
        lock = threading.Lock()
        first_error: list[str] = []

        def worker(i: int) -> None:
            http = requests.Session()
            turn = i
            while time.perf_counter() < stop:
                url = urls[turn % len(urls)]
                turn += 1
                try:
                    if i % 2 == 0:
                        r = http.post(
                            f"{url}/token", auth=self.machine, data={"grant_type": "client_credentials"}
                        )
                        kind = "client_credentials"
                    else:
                        body = {"grant_type": "refresh_token", "refresh_token": self.refresh[i // 2]}
                        r = http.post(f"{url}/token", auth=self.client, data=body)
                        kind = "refresh"
                        if r.status_code == 200:
                            self.refresh[i // 2] = r.json()["refresh_token"]
                except requests.RequestException as exc:
                    r, kind = None, repr(exc)
                with lock:
                    if r is not None and r.status_code == 200:
                        counts[kind] += 1
                    else:
                        counts["errors"] += 1
                        if not first_error:
                            first_error.append(kind if r is None else f"{r.status_code} {r.text[:200]}")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2 * len(self.refresh))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {**counts, "first_error": first_error[0] if first_error else None}


def _cpu(instances: list[Instance], meter: PgMeter) -> tuple[float, dict[int, float], dict[int, float]]:
    ours, cluster = meter.pids()
    return (
        sum(i.cpu() for i in instances),
        {p: _stat_cpu(p) for p in ours},
        {p: _stat_cpu(p) for p in cluster},
    )


def _spent(
    instances: list[Instance], meter: PgMeter, before: tuple[float, dict[int, float], dict[int, float]]
) -> tuple[float, float, float]:
    """CPU seconds since ``before``: servers, the database's backends, the cluster's processes."""
    s0, b0, c0 = before
    ours1, _cluster1 = meter.pids()
    server = sum(i.cpu() for i in instances) - s0
    # backends opened since start at zero; one that ended took its CPU with it
    backends = sum(_stat_cpu(p) - b0.get(p, 0.0) for p in set(b0) | set(ours1))
    cluster = sum(_stat_cpu(p) - c for p, c in c0.items())
    return server, backends, cluster


def phase(
    instances: list[Instance], meter: PgMeter, load: Load, seconds: float, idle_seconds: float
) -> dict[str, Any]:
    # what the instances cost doing nothing (granian's loop, the background duties every 2 s):
    # at a few dozen operations a second on a busy machine it is a sizeable share of each one,
    # and two instances pay it twice; reported, and taken out of the net figures
    before = _cpu(instances, meter)
    time.sleep(idle_seconds)
    idle = [x / idle_seconds for x in _spent(instances, meter, before)]
    before = _cpu(instances, meter)
    t0 = time.perf_counter()
    counts = load.run([i.url for i in instances], seconds)
    wall = time.perf_counter() - t0
    server, backends, cluster = _spent(instances, meter, before)
    ops = counts["client_credentials"] + counts["refresh"]
    total = server + backends + cluster

    def per_op(x: float) -> float:
        return round(x / max(ops, 1) * 1000, 3)

    net_server = server - idle[0] * wall
    net_total = total - sum(idle) * wall
    return {
        "instances": len(instances),
        "operations": ops,
        **counts,
        "ops_per_s": round(ops / wall, 1),
        "cpu_s": {
            "servers": round(server, 2),
            "postgres_backends": round(backends, 2),
            "postgres_cluster_processes": round(cluster, 2),
        },
        "idle_cpu_s_per_s": {
            "servers": round(idle[0], 4),
            "postgres_backends": round(idle[1], 4),
            "postgres_cluster_processes": round(idle[2], 4),
        },
        "cpu_ms_per_op": {
            "servers": per_op(server),
            "postgres_backends": per_op(backends),
            "postgres_cluster_processes": per_op(cluster),
            "total": per_op(total),
            "servers_net_of_idle": per_op(net_server),
            "total_net_of_idle": per_op(net_total),
        },
    }


@contextlib.contextmanager
def deployment(db_url: str, issuer: str) -> Iterator[tuple[Path, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="cityid-instances-"))
    data = tmp / "data"
    data.mkdir()
    url, drop = _fresh_database(db_url)
    (data / "cityid.toml").write_text(
        f'issuer = "{issuer}"\n'
        f'secret_key = "{secrets.token_urlsafe(32)}"\nkey_passphrase = "{secrets.token_urlsafe(32)}"\n'
        f'database_url = "{url}"\n'
    )
    try:
        cli(data, "init")
        yield data, url
    finally:
        drop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--threads", type=int, default=8, help="load threads (half of them refresh chains)")
    ap.add_argument("--server-threads", type=int, default=4, help="request threads per instance")
    ap.add_argument("--cores", default="0,0", help="cores of instance one and two")
    ap.add_argument("--idle-seconds", type=float, default=6, help="idle CPU measured before each phase")
    ap.add_argument(
        "--rounds", type=int, default=1, help="pairs of phases (one, two), alternating; the median ratio"
    )
    a = ap.parse_args()
    cores = [int(c) for c in a.cores.split(",")]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    from db import make_engine, make_session_factory, transaction
    from idp.accounts import create_account
    from idp.clients import ClientSpec, add_client
    from idp.config import load_config
    from idp.instance import InstanceKeys

    port = free_port()  # the first instance's: the issuer, where the citizens log in
    with deployment(a.db_url, f"http://127.0.0.1:{port}") as (data, url):
        cfg = load_config(data)
        keys = InstanceKeys.from_config(cfg)
        engine = make_engine(cfg.db_url)
        chains = max(1, a.threads // 2)
        with transaction(make_session_factory(engine)) as s:
            row, secret = add_client(s, keys, ClientSpec(name="bench", redirect_uris=[REDIRECT]))
            m_row, m_secret = add_client(
                s, keys, ClientSpec(name="machine", grant_types=["client_credentials"], scope="permits:read")
            )
            for i in range(chains):
                create_account(s, keys, f"citizen{i}@bench.example", PASSWORD, verified=True, actor="admin")
        engine.dispose()
        client = (row.client_id, str(secret))
        machine = (m_row.client_id, str(m_secret))
        dsn = make_engine(url).url.set(drivername="postgresql").render_as_string(hide_password=False)
        meter = PgMeter(dsn)
        result: dict[str, Any] = {"bench": "instances", "seconds": a.seconds, "load_threads": a.threads}
        first = Instance(data, cores[0], 1, a.server_threads, port)
        pairs: list[dict[str, Any]] = []
        try:
            refresh = [login(first.url, *client, f"citizen{i}@bench.example") for i in range(chains)]
            load = Load(machine, client, refresh)
            load.run([first.url], min(3.0, a.seconds))  # warm: pools, prepared statements
            result["one"] = phase([first], meter, load, a.seconds, a.idle_seconds)
            print(f"one: {result['one']}", file=sys.stderr, flush=True)
            second = Instance(data, cores[1 % len(cores)], 2, a.server_threads)
            try:
                load.run([second.url], min(3.0, a.seconds))
                result["two"] = phase([first, second], meter, load, a.seconds, a.idle_seconds)
                print(f"two: {result['two']}", file=sys.stderr, flush=True)
                pairs.append({"one": result["one"], "two": result["two"]})
                # --rounds: one and two again, alternating, so that a drift of a shared machine
                # (a neighbour's load coming or going) weighs on both alike; the second instance
                # stays up, idle, while one instance is measured (its CPU is not counted then)
                for _ in range(a.rounds - 1):
                    again = {"one": phase([first], meter, load, a.seconds, a.idle_seconds)}
                    again["two"] = phase([first, second], meter, load, a.seconds, a.idle_seconds)
                    print(f"round: {again}", file=sys.stderr, flush=True)
                    pairs.append(again)
            finally:
                second.stop()
        finally:
            first.stop()
            meter.close()
        keys_ = ("servers", "postgres_backends", "total")
        ratios = [
            {
                k: round(p["two"]["cpu_ms_per_op"][k] / p["one"]["cpu_ms_per_op"][k], 3)
                if p["one"]["cpu_ms_per_op"][k]
                else None
                for k in keys_
            }
            for p in pairs
        ]
        result["ratio_two_over_one"] = ratios[0]
        if len(pairs) > 1:
            result["rounds"] = [
                {
                    "one_cpu_ms_per_op": p["one"]["cpu_ms_per_op"]["total"],
                    "two_cpu_ms_per_op": p["two"]["cpu_ms_per_op"]["total"],
                    "one_ops_per_s": p["one"]["ops_per_s"],
                    "two_ops_per_s": p["two"]["ops_per_s"],
                    "errors": p["one"]["errors"] + p["two"]["errors"],
                    "ratio_two_over_one": r,
                }
                for p, r in zip(pairs, ratios, strict=True)
            ]
            result["ratio_two_over_one_median"] = {
                k: statistics.median(r[k] for r in ratios if r[k] is not None) for k in keys_
            }
        result["target"] = {"ratio_two_over_one_total": 1.10}
        result["note"] = "CPU time per operation (machine shared with other jobs: rates are lower bounds)"
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
