"""Insights: what the city can see of its identity provider — counts, never profiles.

- ``models``: the hourly funnel counters (no account, session, address or IP: by construction).
- ``store``: the upsert increment (SQLite and PostgreSQL) and the retention purge.
- ``funnel``: the thin hooks the login views call (per-authorization state in the pending
  authorization of the browser session, so that a login counts once whatever the retries).
- ``report``: Flask-free aggregation: dashboard figures, the open-data export with small-count
  suppression.
- ``metrics``: Prometheus exposition (database counters and gauges at scrape time, request
  histograms in prometheus_client's multiprocess mode).
- ``views``: ``/insights`` for staff (role analyst or admin, level substantial) and ``/metrics``.
"""
