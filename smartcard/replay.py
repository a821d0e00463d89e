"""Single use of a one-time value (a proof's ``jti``), decided by the database.

One statement, ``INSERT … ON CONFLICT DO NOTHING RETURNING key``: the row is written (and
returned) or it was already there (nothing returned).
Two processes (or threads) racing with the same value cannot both win: the database's unique
key decides, and the loser sees zero rows inserted (RFC 9449 §11.1, RFC 7523 §3 (7)).
The row is part of the caller's transaction: if the request fails, it is rolled back with it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from smartcard.sql import Db, connection

# compiled once per (dialect, table): SQLAlchemy caches the compiled form of a statement object
_STATEMENTS: dict[tuple[str, str], Any] = {}


def _statement(dialect: str, table: Table) -> Any:
    stmt = _STATEMENTS.get((dialect, table.name))
    if stmt is None:
        if dialect == "postgresql":
            stmt = (
                postgresql.insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.key)
            )
        elif dialect == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.key)
        else:
            stmt = insert(table)
        _STATEMENTS[(dialect, table.name)] = stmt
    return stmt


def first_use(db: Db, table: Table, key: str, expires_at: dt.datetime) -> bool:
    """Record ``key`` in ``table`` (columns ``key``, ``expires_at``); False if it was there."""
    conn = connection(db)
    dialect = conn.dialect.name
    params = {"key": key, "expires_at": expires_at}
    if dialect in ("postgresql", "sqlite"):
        # RETURNING, not rowcount: a driver may report -1 for an INSERT … ON CONFLICT
        return conn.execute(_statement(dialect, table), params).first() is not None
    try:  # any other database: a savepoint keeps the outer transaction usable after a conflict
        with conn.begin_nested():
            conn.execute(_statement(dialect, table), params)
    except IntegrityError:
        return False
    return True
