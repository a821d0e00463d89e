"""What the smartcard layer trusts and how long things live: one frozen object, built once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from attestation import AppIdentity, TrustStore


@dataclass(frozen=True)
class SmartcardSettings:
    """``apps``: the city app's identities (Android package + signing digests, Apple app ID).

    ``allow_software_keys``: enrol keys that come without attestation; they never reach more
    than *low* (``policies.assess_device``). ``renew_requires_attestation``: a renewal with the
    same key must carry fresh attestation too (a new key always must, or it counts as software).
    """

    trust: TrustStore = field(default_factory=TrustStore)
    apps: tuple[AppIdentity, ...] = ()
    challenge_ttl: dt.timedelta = dt.timedelta(minutes=5)
    auth_ttl: dt.timedelta = dt.timedelta(minutes=5)
    proof_window: dt.timedelta = dt.timedelta(seconds=60)
    renew_before: dt.timedelta = dt.timedelta(days=30)  # renewal allowed this long before expiry
    allow_software_keys: bool = True
    renew_requires_attestation: bool = False
    certificate_validity: dt.timedelta | None = None  # None: the device-auth profile's default
