"""The dashboard's figures as JSON, as text for the terminal, and as server-rendered SVG charts.

Charts are decorative twins of their data tables: each SVG is ``aria-hidden`` with the table
next to it carrying the numbers (WCAG 2.1 1.1.1 and 1.3.1: the table is the accessible form).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from idp.insights.report import Dashboard


def dashboard_json(board: Dashboard) -> dict[str, Any]:
    return {
        "since": board.range.since.isoformat(),
        "until": board.range.until.isoformat(),
        "service": board.range.service,
        "logins": board.logins,
        "logins_per_day": [{"date": d.isoformat(), "logins": n} for d, n in board.logins_per_day],
        "logins_per_service": [{"service": s, "logins": n} for s, n in board.logins_per_service],
        "level_asked_reached": [{"asked": a, "reached": r, "logins": n} for a, r, n in board.level_matrix],
        "methods": [{"method": m, "logins": n} for m, n in board.methods],
        "funnels": [
            {
                "service": f.service,
                "steps": [
                    {
                        "step": s.step,
                        "outcome": s.outcome,
                        "count": s.count,
                        "abandoned": s.abandoned,
                        "abandonment_rate": s.rate,
                    }
                    for s in f.steps
                ],
                "first_factor_failed": f.failed_first_factor,
                "stepup_failed": f.failed_stepup,
                "consent_refused": f.refused_consent,
            }
            for f in board.funnels
        ],
        "give_up_top3": [{"service": s, "step": st, "abandoned": n} for s, st, n in board.give_up],
        "devices_by_platform": [{"platform": p, "devices": n} for p, n in board.devices_by_platform],
    }


def dashboard_text(board: Dashboard) -> str:
    rng = board.range
    lines = [
        f"cityid insights {rng.since} .. {rng.until}" + (f" service {rng.service}" if rng.service else ""),
        f"logins: {board.logins}",
        "",
        "logins per service:",
        *[f"  {s:<40} {n:>8}" for s, n in board.logins_per_service],
        "",
        "level asked -> reached:",
        *[f"  {a:<12} -> {r:<12} {n:>8}" for a, r, n in board.level_matrix],
        "",
        "methods:",
        *[f"  {m:<12} {n:>8}" for m, n in board.methods],
        "",
        "funnel (count, abandoned there, rate):",
    ]
    for f in board.funnels:
        lines.append(f"  {f.service}")
        for s in f.steps:
            lines.append(f"    {s.step + '/' + s.outcome:<22} {s.count:>8} {s.abandoned:>8} {s.rate:>7.1%}")
        lines.append(
            f"    failed first factor {f.failed_first_factor}, failed step-up {f.failed_stepup}, "
            f"consent refused {f.refused_consent}"
        )
    lines += ["", "where citizens give up (top 3):"]
    lines += [f"  {s} at {st}: {n}" for s, st, n in board.give_up] or ["  -"]
    lines += ["", "enrolled devices by platform:"]
    lines += [f"  {p:<14} {n:>8}" for p, n in board.devices_by_platform] or ["  -"]
    return "\n".join(lines)


def bar_chart(items: Sequence[tuple[str, int]], *, width: int = 640, bar: int = 18) -> str:
    """Horizontal bars, one per item, labelled; ``aria-hidden``: the table beside it is the text."""
    if not items:
        return ""
    label_w = 200
    top = max((n for _, n in items), default=0) or 1
    height = len(items) * (bar + 6) + 6
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" aria-hidden="true" focusable="false">'
    ]
    for i, (label, n) in enumerate(items):
        y = 6 + i * (bar + 6)
        w = int((width - label_w - 70) * n / top)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + bar - 4}" text-anchor="end" class="chart-label">'
            f"{escape(label[:32])}</text>"
            f'<rect x="{label_w}" y="{y}" width="{max(w, 1)}" height="{bar}" class="chart-bar"/>'
            f'<text x="{label_w + max(w, 1) + 6}" y="{y + bar - 4}" class="chart-value">{n}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def column_chart(items: Sequence[tuple[str, int]], *, width: int = 640, height: int = 160) -> str:
    """Vertical columns over time (logins per day); ``aria-hidden`` like :func:`bar_chart`."""
    if not items:
        return ""
    top = max((n for _, n in items), default=0) or 1
    step = width / max(len(items), 1)
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + 20}" '
        f'width="100%" aria-hidden="true" focusable="false">'
    ]
    for i, (_label, n) in enumerate(items):
        h = height * n / top
        parts.append(
            f'<rect x="{i * step:.1f}" y="{height - h:.1f}" width="{max(step - 1, 0.5):.1f}" '
            f'height="{max(h, 0.5):.1f}" class="chart-bar"/>'
        )
    first, last = escape(items[0][0]), escape(items[-1][0])
    parts.append(
        f'<text x="0" y="{height + 16}" class="chart-label">{first}</text>'
        f'<text x="{width}" y="{height + 16}" text-anchor="end" class="chart-label">{last}</text>'
        f'<text x="0" y="12" class="chart-value">{top}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
