"""What every eID connector takes and returns, and the protocol they implement."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from policies import Level


@dataclass(frozen=True)
class EidRequest:
    """Start an eID authentication reaching at least ``minimum_level``, asking for
    ``attributes`` (connector-neutral names such as ``family_name``, see each connector's
    attribute map)."""

    minimum_level: Level = Level.HIGH
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PendingEid:
    """What the idp keeps server-side between ``start`` and ``finish``. It holds secrets
    (``code_verifier``), so it never goes to the browser."""

    connector: str
    request_id: str
    relay_state: str
    minimum_level: Level
    created_at: datetime
    nonce: str = ""
    code_verifier: str = ""


@dataclass(frozen=True)
class EidStart:
    """Send the browser on: ``GET url`` or an auto-submitted ``POST`` of ``form`` to ``url``."""

    method: Literal["GET", "POST"]
    url: str
    form: tuple[tuple[str, str], ...]
    pending: PendingEid


@dataclass(frozen=True)
class EidResponse:
    """The browser's return to our callback: query or form parameters, plus the pending
    state the idp kept for it."""

    params: Mapping[str, str]
    pending: PendingEid


@dataclass(frozen=True)
class EidAttribute:
    """A verified attribute, with who vouched for it (``source``) and at which level."""

    name: str
    value: str
    source: str
    level: Level


@dataclass(frozen=True)
class EidResult:
    """``pseudonym``: the sector-specific identifier that links the eID to an account.
    ``simulation``: True only for the simulator; pages must show SIMULATION."""

    pseudonym: str
    level: Level
    acr: str
    issuer: str
    auth_time: datetime
    attributes: tuple[EidAttribute, ...]
    authn_context: str
    simulation: bool = False

    def attribute(self, name: str) -> EidAttribute | None:
        return next((a for a in self.attributes if a.name == name), None)


class EidConnector(Protocol):
    name: str

    def start(self, request: EidRequest) -> EidStart: ...

    def finish(self, response: EidResponse) -> EidResult:
        """Return the verified result or raise an ``idp.eid.errors.EidError``."""
        ...
