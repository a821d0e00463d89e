"""Subject identifiers: pairwise per sector by default (OIDC Core §8.1), public on request.

Two namespaces that cannot meet (RFC 9068 §5: a resource server must not mistake a client for a
citizen). A citizen's subject is base64url (a public one is the account id, ``db.new_id``; a
pairwise one an HMAC), so it never holds a ``:``. A machine's subject (a client-credentials
token, no citizen involved) is ``client:<client_id>``, whatever client_id an admin chose.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlsplit

from idp.crypto import b64url
from idp.models import Client


def sector_of(client: Client) -> str:
    # OIDC Core §8.1: without a sector_identifier_uri the sector is the redirect URI host.
    uris = json.loads(client.redirect_uris)
    if uris:
        return urlsplit(uris[0]).hostname or client.client_id
    return client.client_id


MACHINE_PREFIX = "client:"


def machine_subject(client_id: str) -> str:
    """The ``sub`` of a token no citizen took part in (RFC 9068 §2.2: it names the client)."""
    return MACHINE_PREFIX + client_id


def subject_for(key: bytes, client: Client, account_id: str) -> str:
    if client.subject_type == "public":
        return account_id
    mac = hmac.new(key, f"{sector_of(client)}|{account_id}".encode(), hashlib.sha256).digest()
    return b64url(mac)
