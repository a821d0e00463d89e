"""Removing a device, and an account's erasure (GDPR Art. 17) with a device: all of it happens in
one transaction, or none of it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from db import transaction
from idp import privacy
from idp.models import Account, Grant, LoginSession
from pki.models import CaCertificate
from smartcard.models import Device
from tests.idp.conftest import csrf
from tests.smartcard.conftest import World, enrolled


def test_an_erasure_that_fails_late_leaves_the_device_and_its_certificate_as_they_were(world: World) -> None:
    idp = world.idp
    enrolled(world, "karl@example.org")
    with idp.sessions()() as s:
        account_id = s.execute(select(Account.id)).scalar_one()

    def later_step_fails(session: Any, account_id: str) -> None:  # another package, the HSM, ...
        raise RuntimeError("later step failed")

    privacy.DELETE_HOOKS.append(later_step_fails)
    try:
        with idp.app.app_context():
            try:
                with transaction(idp.sessions()) as s:
                    privacy.erase_account(s, idp.keys, idp.key_cache, issuer=idp.url, account_id=account_id)
            except RuntimeError:
                pass
            else:
                raise AssertionError("the failing step did not stop the erasure")
    finally:
        privacy.DELETE_HOOKS.remove(later_step_fails)

    with idp.sessions()() as s:
        assert s.get(Account, account_id) is not None
        device = s.execute(select(Device)).scalar_one()
        assert device.revoked_at is None  # the device revocation was rolled back with the rest
        assert s.get(CaCertificate, device.cert_serial).status != "revoked"  # type: ignore[union-attr]
        assert s.scalar(
            select(func.count()).select_from(LoginSession).where(LoginSession.account_id == account_id)
        )
        live = (
            select(func.count())
            .select_from(Grant)
            .where(Grant.account_id == account_id, Grant.revoked_at.is_(None))
        )
        assert s.scalar(live)

    # and the erasure done again completes: the certificate is revoked with the account's end
    with idp.app.app_context(), transaction(idp.sessions()) as s:
        privacy.erase_account(s, idp.keys, idp.key_cache, issuer=idp.url, account_id=account_id)
    with idp.sessions()() as s:
        assert s.get(Account, account_id) is None
        serial = (
            s.execute(select(CaCertificate.serial).where(CaCertificate.profile == "device-auth"))
            .scalars()
            .all()
        )
        assert serial and all(s.get(CaCertificate, x).status == "revoked" for x in serial)  # type: ignore[union-attr]


def test_a_device_removal_that_fails_before_its_commit_removes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The certificate's revocation committed the removal mid-request: the page said 500 while the
    # device was gone, and the citizen's notice (NIST SP 800-63B §6.1.2.1) was never sent.
    import idp.views.devices as devices_view

    idp = world.idp
    browser, device = enrolled(world, "erika@example.org")
    device_id = device.token.state["device_id"]
    monkeypatch.setattr(devices_view, "may_change_strong_factors", lambda acct: True)  # step-up done

    def fails(*args: object) -> None:  # a database error, a killed worker, ...
        raise RuntimeError("failure before the commit")

    monkeypatch.setattr(devices_view, "notify_factor_change", fails)
    page = browser.get(f"{idp.url}/account/devices")
    r = browser.post(f"{idp.url}/account/devices/{device_id}/remove", {"csrf_token": csrf(page.text)})
    assert r.status_code == 500
    with idp.sessions()() as s:
        row = s.get(Device, device_id)
        assert row is not None and row.revoked_at is None
        assert s.get(CaCertificate, row.cert_serial).status == "issued"  # type: ignore[union-attr]
    assert device.pending() == []  # the phone still answers
