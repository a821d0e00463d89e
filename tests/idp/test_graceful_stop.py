"""Issue 19: a worker that is stopped (SIGTERM) ends its background duties before it exits: a
mail the courier is handing to the mail server is finished and marked sent, so it is neither lost
nor sent twice after the restart; the server exits 0."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Any

import requests
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from db import make_engine, make_session_factory
from idp.models import MailOutbox
from tests.idp.conftest import csrf, free_port
from tests.idp.serve_process import serving, tail, up
from tests.idp.test_processes import cityid, write_config


class SlowRelay:
    """A mail server that takes two seconds to accept a message."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.data_started = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_started.set()
        await asyncio.sleep(2)
        self.received.append(envelope.content)
        return "250 OK"


def test_sigterm_lets_the_courier_finish_the_mail_it_is_sending_and_exits_0(
    db_url: str, tmp_path: Path
) -> None:
    relay = SlowRelay()
    smtp_port = free_port()
    ctl = Controller(relay, hostname="127.0.0.1", port=smtp_port)
    ctl.start()
    port = free_port()
    data = tmp_path / "data"
    write_config(data, db_url, f"http://127.0.0.1:{port}")
    with (data / "cityid.toml").open("a") as f:
        f.write(f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\ntimeout_seconds = 10\n')
    cityid(data, "init")
    url = f"http://127.0.0.1:{port}"
    try:
        with serving(data, port, tmp_path / "serve.log") as proc:
            assert up(url), tail(tmp_path / "serve.log")
            http = requests.Session()
            page = http.get(f"{url}/register", timeout=10)
            r = http.post(
                f"{url}/register",
                data={
                    "csrf_token": csrf(page.text),
                    "email": "anna@example.org",
                    "password": "correct horse battery staple",
                    "password2": "correct horse battery staple",
                },
                timeout=10,
            )
            assert r.status_code == 200, r.text
            assert relay.data_started.wait(10)  # the courier is in the middle of handing it over
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    finally:
        ctl.stop()
    assert len(relay.received) == 1
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as s:
            waiting = s.execute(select(func.count()).select_from(MailOutbox)).scalar()
    finally:
        engine.dispose()
    assert waiting == 0, "the mail was taken but is still queued: a restart would send it again"
