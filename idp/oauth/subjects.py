"""Subject identifiers: pairwise per sector by default (OIDC Core §8.1), public on request."""

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


def subject_for(key: bytes, client: Client, account_id: str) -> str:
    if client.subject_type == "public":
        return account_id
    mac = hmac.new(key, f"{sector_of(client)}|{account_id}".encode(), hashlib.sha256).digest()
    return b64url(mac)
