"""Renewal before expiry, asked for with the current key; the old certificate is superseded."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from smartcard.softtoken import DeviceApiError
from tests.smartcard.conftest import World, enrolled


def _open_renewal_window(world: World) -> None:
    holder = world.idp.app.extensions["cityid.smartcard"]
    holder["settings"] = dataclasses.replace(holder["settings"], renew_before=dt.timedelta(days=3650))


def test_renewal_is_refused_long_before_expiry(world: World) -> None:
    _browser, device = enrolled(world, "rita@example.org")
    with pytest.raises(DeviceApiError) as exc:
        device.renew()
    assert exc.value.error == "renewal_not_allowed"
    assert any(r.reason == "renewal_not_allowed" for r in world.audit("smartcard.renew", "denied"))


@pytest.mark.parametrize("software_keys", [True, False], ids=["software-keys-allowed", "attested-keys-only"])
def test_renewal_same_key_keeps_level_and_supersedes_old_certificate(
    world: World, software_keys: bool
) -> None:
    # Android cannot attest a key again: without attestation the unchanged key renews, even where
    # software keys are not allowed (the policy was applied to this key at enrolment)
    _browser, device = enrolled(world, "rolf@example.org")
    old = device.token.state["certificate"]
    _open_renewal_window(world)
    holder = world.idp.app.extensions["cityid.smartcard"]
    holder["settings"] = dataclasses.replace(holder["settings"], allow_software_keys=software_keys)
    result = device.renew()
    assert result["max_level"] == "substantial" and device.token.state["certificate"] != old
    assert device.pending() == []  # the new certificate is accepted
    device.token.state["certificate"] = old
    with pytest.raises(DeviceApiError) as exc:
        device.pending()
    assert exc.value.error == "certificate_revoked"  # superseded


def test_renewal_with_new_key_needs_attestation_or_drops_to_low(world: World) -> None:
    _browser, device = enrolled(world, "rosa@example.org")
    _open_renewal_window(world)
    assert device.renew(new_key=True)["max_level"] == "low"
    assert device.renew(new_key=True, attestation=world.profile())["max_level"] == "substantial"


def test_a_renewal_that_fails_before_its_commit_leaves_the_device_on_its_old_certificate(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old certificate's revocation committed the renewal mid-request: a failure after it left
    # the device on a certificate it never received, and the one it holds revoked (locked out).
    import idp.views.smartcard as views
    from db import transaction
    from pki.models import CaCertificate
    from smartcard.models import Device

    _browser, device = enrolled(world, "rolf@example.org")
    device_id = device.token.state["device_id"]
    with world.idp.sessions()() as s:
        old_serial = s.get(Device, device_id).cert_serial  # type: ignore[union-attr]
    _open_renewal_window(world)

    def fails(*args: object) -> None:  # a database error, a killed worker, ...
        raise RuntimeError("failure after the revocation")

    monkeypatch.setattr(views, "_carry_certificate_binding", fails)
    with pytest.raises(DeviceApiError) as exc:
        device.renew()
    assert exc.value.status == 500
    with transaction(world.idp.sessions()) as s:
        assert s.get(Device, device_id).cert_serial == old_serial  # type: ignore[union-attr]
        assert s.get(CaCertificate, old_serial).status == "issued"  # type: ignore[union-attr]
    assert device.pending() == []  # the certificate it holds still works
    monkeypatch.undo()
    assert device.renew()["max_level"] == "substantial"  # and a renewal later succeeds
