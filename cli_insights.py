"""`cityid insights show | export` and `cityid metrics-serve`: thin over idp.insights."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from cli import data_dir_option, fail, json_option, out, session_for


def _date(value: str | None, default: dt.date, what: str, as_json: bool) -> dt.date:
    if value is None:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"{what} {value!r}: a date YYYY-MM-DD is needed", as_json, 2)
        raise AssertionError from None


def _range(since: str | None, until: str | None, service: str | None, as_json: bool) -> Any:
    from idp.insights.report import Range

    today = dt.datetime.now(dt.UTC).date()
    first = _date(since, today - dt.timedelta(days=29), "--since", as_json)
    last = _date(until, today, "--until", as_json)
    try:
        return Range(first, last, service or None)
    except ValueError as exc:
        fail(str(exc), as_json, 2)


@click.group("insights")
def insights_group() -> None:
    """Login funnel and service figures: counts, never profiles (docs/insights.md)."""


@insights_group.command("show")
@data_dir_option
@click.option("--since", help="first day, YYYY-MM-DD (UTC; default: 29 days ago)")
@click.option("--until", help="last day, YYYY-MM-DD (UTC; default: today)")
@click.option("--service", help="one service (client_id); default: all")
@json_option
def insights_show(
    data_dir: Path, since: str | None, until: str | None, service: str | None, as_json: bool
) -> None:
    """The dashboard's figures in the terminal."""
    from idp.insights import render

    rng = _range(since, until, service, as_json)
    with session_for(data_dir, as_json) as (_cfg, s):
        from idp.insights.report import dashboard

        board = dashboard(s, rng)
    out(render.dashboard_json(board), as_json, render.dashboard_text(board))


@insights_group.command("export")
@data_dir_option
@click.option("--since", required=True, help="first day, YYYY-MM-DD (UTC)")
@click.option("--until", required=True, help="last day, YYYY-MM-DD (UTC)")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="file (default: stdout)")
def insights_export(data_dir: Path, since: str, until: str, fmt: str, output: Path | None) -> None:
    """Open-data export: one row per day, service and metric; counts below k shown as "<k"."""
    from idp.insights import report

    rng = _range(since, until, None, False)
    with session_for(data_dir) as (cfg, s):
        k = cfg.insights.min_count
        rows = report.export(s, rng, k)
    text = report.export_csv(rows) if fmt == "csv" else report.export_json(rows, rng, k) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


@click.command("metrics-serve")
@data_dir_option
@click.option("--bind", help="HOST:PORT (default: [insights] metrics_bind)")
def metrics_serve(data_dir: Path, bind: str | None) -> None:
    """Serve /metrics (Prometheus) on its own address, apart from the public one."""
    from idp.config import load_config
    from idp.insights.metrics import serve_forever

    cfg = load_config(data_dir)
    where = bind or cfg.insights.metrics_bind
    if not where:
        fail("no address: give --bind or set [insights] metrics_bind", False, 2)
    click.echo(json.dumps({"metrics": f"http://{where}/metrics"}))
    serve_forever(cfg, where)


COMMANDS = [insights_group, metrics_serve]
