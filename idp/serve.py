"""Production serving with gunicorn, plus each worker's background duties."""

from __future__ import annotations

import logging
import threading
from typing import Any

from gunicorn.app.base import BaseApplication

from idp.config import Config

log = logging.getLogger("cityid")


def background(app: Any, stop: threading.Event, interval: float = 2.0) -> None:
    """Deliver back-channel logouts and purge expired rows, until stopped."""
    from sqlalchemy import delete

    from db import transaction, utcnow
    from idp.models import LoginSession, RevokedAccessToken, SeenJti
    from idp.oauth.backchannel import deliver_due

    rt = app.extensions["cityid"]
    ticks = 0
    while not stop.wait(interval):
        try:
            deliver_due(rt.sessions)
            ticks += 1
            if ticks % 30 == 0:
                with transaction(rt.sessions) as s:
                    now = utcnow()
                    s.execute(delete(LoginSession).where(LoginSession.expires_at <= now))
                    s.execute(delete(RevokedAccessToken).where(RevokedAccessToken.expires_at <= now))
                    s.execute(delete(SeenJti).where(SeenJti.expires_at <= now))
        except Exception:  # keep the worker alive; the outbox keeps what is not done
            log.exception("background duty failed")


def start_background(app: Any) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=background, args=(app, stop), daemon=True, name="cityid-background").start()
    return stop


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, cfg: Config, options: dict[str, Any], demo: bool) -> None:
        self._cfg = cfg
        self._options = options
        self._demo = demo
        super().__init__()

    def load_config(self) -> None:
        for k, v in self._options.items():
            self.cfg.set(k, v)

    def load(self) -> Any:
        from idp.app import create_app

        app = create_app(self._cfg, demo=self._demo)
        start_background(app)
        return app


def run(
    cfg: Config,
    *,
    bind: str,
    workers: int,
    demo: bool = False,
    worker_class: str = "gthread",
    threads: int = 4,
) -> None:
    options = {
        "bind": bind,
        "workers": workers,
        "worker_class": worker_class,
        "threads": threads,
        "accesslog": "-",
        "timeout": 30,
        "graceful_timeout": 10,
        "forwarded_allow_ips": "127.0.0.1",
        "limit_request_line": 8190,
    }
    _Gunicorn(cfg, options, demo).run()
