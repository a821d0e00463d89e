"""eID connectors: hand the citizen to an eID service, get back a sector pseudonym and
attributes with their source and level. Import a connector from its module (``saml`` needs
xmlsec1, ``oidc`` needs network access at run time); the shared types live here."""

from idp.eid.connector import (
    EidAttribute,
    EidConnector,
    EidRequest,
    EidResponse,
    EidResult,
    EidStart,
    PendingEid,
)
from idp.eid.errors import EidError
from idp.eid.replay import InMemoryReplayStore, ReplayStore

__all__ = [
    "EidAttribute",
    "EidConnector",
    "EidError",
    "EidRequest",
    "EidResponse",
    "EidResult",
    "EidStart",
    "InMemoryReplayStore",
    "PendingEid",
    "ReplayStore",
]
