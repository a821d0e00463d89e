"""A form sent with more than 1 MiB shows the site's 413 page in a real browser, served by the
production server (`cityid serve`, granian), with the way back to the form (issue 17 item 3)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.idp.conftest import free_port
from tests.idp.test_processes import CITYID, cityid, write_config

BIG = 1024 * 1024 + 1  # characters: over MAX_CONTENT_LENGTH


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[str]:
    data = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    write_config(data, db_url, base)
    cityid(data, "init")
    proc = subprocess.Popen(
        [*CITYID, "serve", "--data-dir", str(data), "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "serve.log").open("w"),
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    try:
        for _ in range(300):
            try:
                if requests.get(f"{base}/jwks.json", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not start")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("path", ["/register", "/login"])
def test_a_form_over_1_mib_shows_the_413_page_with_the_way_back(served: str, context: Any, path: str) -> None:
    page = context.new_page()
    page.goto(f"{served}{path}")
    # what a citizen could paste into a field, as far as the server can tell: a body over 1 MiB
    page.evaluate(
        """n => { const f = document.querySelector('main form[method="post"]');
                  const i = document.createElement('input'); i.type = 'hidden'; i.name = 'x';
                  i.value = 'a'.repeat(n); f.appendChild(i); }""",
        BIG,
    )
    with page.expect_navigation() as nav:
        page.locator('main form[method="post"] [type="submit"]').first.click()
    assert nav.value is not None and nav.value.status == 413
    assert page.locator("h1").inner_text() == "Zu viele Daten"
    back = page.locator(f'main a[href="{path}"]')
    assert back.inner_text() == "Zurück zum Formular"
    back.click()
    page.wait_for_url(f"{served}{path}")
    assert page.locator('main form[method="post"]').count() == 1
