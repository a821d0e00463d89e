"""Core statements on the caller's transaction, from a ``Session`` or its ``Connection``.

Hot paths (a PKI-2FA answer, a device proof) ask the session for its connection once and pass
that on: ``Session.connection()`` is not free, and nothing here needs the ORM's identity map.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.orm import Session

Db = Session | Connection


def connection(db: Db) -> Connection:
    """The connection of ``db``'s current transaction (begun if need be)."""
    return db if isinstance(db, Connection) else db.connection()
