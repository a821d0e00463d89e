"""eIDAS levels of assurance, their acr URIs, and the reason every decision carries."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

ACR_LOW = "http://eidas.europa.eu/LoA/low"
ACR_SUBSTANTIAL = "http://eidas.europa.eu/LoA/substantial"
ACR_HIGH = "http://eidas.europa.eu/LoA/high"


class Level(IntEnum):
    """eIDAS Implementing Regulation (EU) 2015/1502: low < substantial < high.

    Ordered, so ``max``, ``min`` and ``<`` mean "weaker/stronger assurance".
    """

    LOW = 1
    SUBSTANTIAL = 2
    HIGH = 3

    @property
    def acr(self) -> str:
        """The acr value (OIDC Core §2) cityid reports for this level."""
        return _ACR_BY_LEVEL[self]

    @property
    def label(self) -> str:
        return self.name.lower()


_ACR_BY_LEVEL = {Level.LOW: ACR_LOW, Level.SUBSTANTIAL: ACR_SUBSTANTIAL, Level.HIGH: ACR_HIGH}
_LEVEL_BY_ACR = {acr: level for level, acr in _ACR_BY_LEVEL.items()}


def parse_acr(acr: str) -> Level | None:
    """The level an acr value names, or None for an acr cityid does not know.

    Exact match: acr values are case-sensitive StringOrURI (OIDC Core §2, RFC 7519 §2).
    """
    return _LEVEL_BY_ACR.get(acr)


def known_levels(acrs: tuple[str, ...]) -> tuple[Level, ...]:
    """The known levels among ``acrs``, in the order given, unknown ones dropped."""
    return tuple(level for level in map(parse_acr, acrs) if level is not None)


@dataclass(frozen=True)
class Reason:
    """Why a decision came out as it did.

    ``code`` is stable and machine-readable (audit log, page templates pick translated text by
    it); ``text`` is an English explanation for logs and debugging.
    """

    code: str
    text: str


@dataclass(frozen=True)
class Refused:
    """The request cannot be served. ``error`` is the protocol error code to send the client
    if the flow ends here; ``reason`` says why, for the citizen's page and the audit log."""

    error: str
    reason: Reason


# Protocol error codes the policies produce.
UNMET_AUTHENTICATION_REQUIREMENTS = "unmet_authentication_requirements"  # OIDC UAR 1.0 §2
INVALID_REQUEST = "invalid_request"  # RFC 6749 §4.1.2.1
LOGIN_REQUIRED = "login_required"  # OIDC Core §3.1.2.6
ACCESS_DENIED = "access_denied"  # RFC 6749 §4.1.2.1
