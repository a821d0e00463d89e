"""`make run`'s demo: the demo service's "sign this form" button, end to end, with the demo
citizen's reference device (enrolled by `cityid demo`) confirming the login and signing."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from idp.app import create_app
from idp.demo import DEMO_DEVICE, prepare_demo
from idp.instance import InstanceKeys
from smartcard.softtoken import DeviceClient, SoftToken
from tests.conftest import SERVER_POLL_SECONDS
from tests.idp.conftest import Idp, csrf, free_port
from tests.idp.test_demo import _logged_in
from tests.smartcard.conftest import continue_device


@pytest.fixture
def demo_with_ca(db_url: str, tmp_path: Path) -> Iterator[tuple[Idp, str]]:
    """As ``cityid demo``: instance and CA first (``cityid init``), then the demo's parts."""
    from cli_pki import init_ca

    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    data = tmp_path / "demo"
    data.mkdir()
    (data / "cityid.toml").write_text(
        f'issuer = "{issuer}"\ndatabase_url = "{db_url}"\n'
        f'secret_key = "{secrets.token_urlsafe(32)}"\nkey_passphrase = "{secrets.token_urlsafe(32)}"\n'
    )
    cfg, info = prepare_demo(data, issuer=issuer)
    assert "demo device" not in info  # no CA yet: no device, no failure
    init_ca(cfg)
    cfg, info = prepare_demo(data, issuer=issuer)
    assert f"cityid device sign --state {data / DEMO_DEVICE}" in info
    password = json.loads((data / "demo.json").read_text())["password"]
    app = create_app(cfg, demo=True)
    srv = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=srv.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
    try:
        yield Idp(url=issuer, config=cfg, app=app, keys=InstanceKeys.from_config(cfg)), password
    finally:
        srv.shutdown()
        app.extensions["cityid"].engine.dispose()


def test_demo_sign_this_form_button_device_confirms_and_signs(demo_with_ca: tuple[Idp, str]) -> None:
    idp, password = demo_with_ca
    b, home = _logged_in(idp, password)
    assert "Sign this form" in home.text or "Dieses Formular signieren" in home.text
    device = DeviceClient(SoftToken.load(idp.config.data_dir / DEMO_DEVICE))

    # first press: signing needs substantial, cityid asks the demo device (PKI-2FA)
    page = b.follow(b.post(f"{idp.url}/demo/sign", {"csrf_token": csrf(home.text)}))
    assert "/login/device" in page.url, (page.url, page.text[:300])
    (item,) = device.pending()
    assert device.answer(item) == {"status": "approved"}
    page = continue_device(b, page)
    if page.status_code == 200 and 'name="decision"' in page.text:
        page = b.consent(page)
    assert page.status_code == 200 and "/demo/" in page.url, (page.status_code, page.url)

    # second press: the form goes to cityid, the device shows it and signs
    page = b.follow(b.post(f"{idp.url}/demo/sign", {"csrf_token": csrf(page.text)}))
    assert "Antrag auf Bewohnerparkausweis" in page.text and "SHA-256" in page.text
    (req,) = device.signature_requests()
    assert req["title"] == "Antrag auf Bewohnerparkausweis" and req["service_name"] == "Demo-Bürgerservice"
    assert device.sign_document(req) == {"status": "signed"}
    signed = b.post(f"{idp.url}/demo/sign/result", {"csrf_token": csrf(page.text)})
    assert signed.status_code == 200 and signed.headers["Content-Type"] == "application/pdf", signed.text[
        :300
    ]
    check = requests.post(
        f"{idp.url}/api/signatures/validate",
        data=signed.content,
        headers={"Content-Type": "application/pdf"},
        timeout=60,
    ).json()
    assert check["valid"] is True and check["signatures"][0]["level"] == "B-LT"
