"""A pretend eID service for development and demos. Never for real citizens.

It refuses to be built unless explicitly enabled, and every result it makes carries
``simulation=True`` so that pages and tokens can say SIMULATION.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlencode

from idp.crypto import equal
from idp.eid.connector import EidAttribute, EidRequest, EidResponse, EidResult, EidStart, PendingEid
from idp.eid.errors import LevelTooLow, LevelUnknown, MalformedResponse, SimulatorDisabled, StateMismatch
from policies import Level

SOURCE = "urn:cityid:eid:simulator"
CUSTOM = "custom"  # persona chosen on the simulator page: pseudonym seed and attributes typed in
ATTRIBUTE_NAMES = ("given_name", "family_name", "birthdate", "place_of_birth", "nationality")
_SEED = re.compile(r"[A-Za-z0-9._-]{1,64}")

# The specimen persons printed on German sample ID cards; nobody real.
PERSONAS: Mapping[str, Mapping[str, str]] = {
    "erika": {
        "given_name": "Erika",
        "family_name": "Mustermann",
        "birthdate": "1964-08-12",
        "place_of_birth": "Berlin",
        "nationality": "DE",
    },
    "max": {
        "given_name": "Max",
        "family_name": "Mustermann",
        "birthdate": "1970-01-01",
        "place_of_birth": "Köln",
        "nationality": "DE",
    },
}


class SimulatorConnector:
    """``start`` sends the browser to the idp's own simulator page (``page_url``), which posts
    back ``state``, ``persona`` and optionally ``level`` to the callback."""

    name = "simulator"

    def __init__(
        self,
        *,
        enabled: bool,
        page_url: str,
        pseudonym_key: bytes,
        sector: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if enabled is not True:
            raise SimulatorDisabled("set eid_simulator_enabled = true (dev and demo only)")
        if len(pseudonym_key) < 16:
            raise ValueError("pseudonym_key must be at least 16 bytes")
        self._page_url = page_url
        self._key = pseudonym_key
        self._sector = sector
        self._clock = clock

    def start(self, request: EidRequest) -> EidStart:
        state = secrets.token_urlsafe(32)
        pending = PendingEid(
            connector=self.name,
            request_id=state,
            relay_state=state,
            minimum_level=request.minimum_level,
            created_at=self._clock(),
        )
        query = urlencode({"state": state, "level": request.minimum_level.label})
        return EidStart(method="GET", url=f"{self._page_url}?{query}", form=(), pending=pending)

    def finish(self, response: EidResponse) -> EidResult:
        params, pending = response.params, response.pending
        if not equal(params.get("state", ""), pending.relay_state):
            raise StateMismatch("simulator state does not match the pending request")
        seed = params.get("persona", "")
        persona = PERSONAS.get(seed)
        if seed == CUSTOM:
            seed, persona = _custom(params)
        if persona is None:
            raise MalformedResponse(f"unknown persona {params.get('persona', '')!r}")
        level = _level(params.get("level", "high"))
        if level < pending.minimum_level:
            raise LevelTooLow(f"simulated {level.label} < required {pending.minimum_level.label}")
        pseudonym = hmac.new(self._key, f"{self._sector}\x00{seed}".encode(), hashlib.sha256).hexdigest()
        return EidResult(
            pseudonym=pseudonym,
            level=level,
            acr=level.acr,
            issuer=SOURCE,
            auth_time=self._clock(),
            attributes=tuple(EidAttribute(name, value, SOURCE, level) for name, value in persona.items()),
            authn_context=level.acr,
            simulation=True,
        )


def _custom(params: Mapping[str, str]) -> tuple[str, Mapping[str, str]]:
    """A tester-chosen identity: ``pseudonym`` seeds the pseudonym, attributes as given."""
    seed = params.get("pseudonym", "")
    if not _SEED.fullmatch(seed):
        raise MalformedResponse("custom pseudonym must be 1-64 letters, digits, '.', '_' or '-'")
    attributes = {}
    for name in ATTRIBUTE_NAMES:
        value = params.get(name, "").strip()
        if len(value) > 100:
            raise MalformedResponse(f"attribute {name} is too long")
        if value:
            attributes[name] = value
    return f"custom:{seed}", attributes


def _level(label: str) -> Level:
    for level in Level:
        if level.label == label:
            return level
    raise LevelUnknown(f"unknown simulated level {label!r}")
