"""Statements on the session's own DBAPI connection, for hot paths: the CA's bulk loops and
the statements every request runs (the audit append).

SQLAlchemy Core compiles the statement (dialect, paramstyle, quoting) and each bind value goes
through its column type's processor, exactly as ``Session.execute`` would do; what is skipped
is SQLAlchemy's per-row work (parameter dictionaries, ``Row`` objects), which costs as much as
the CA's own work for 10,000 certificates or a million CRL entries. The statements run inside
the session's transaction (``session.connection()`` has begun it), so ``session.commit()``
commits them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler


def _processor(bind: Any, dialect: Any) -> Any:
    """The bind processor ``Session.execute`` would use: the dialect's own implementation of the
    type (for a TypeDecorator such as ``UTCDateTime``, its impl as the dialect renders it)."""
    return bind.type.dialect_impl(dialect).bind_processor(dialect)


def _compile(session: Session, statement: Executable, keys: Sequence[str] = ()) -> tuple[Any, SQLCompiler]:
    conn = session.connection()  # begins the session's transaction (SQLite: BEGIN IMMEDIATE)
    compiled = statement.compile(dialect=conn.dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    return conn, compiled


def _arguments(compiled: SQLCompiler, params: Mapping[str, Any]) -> Any:
    if compiled.positional:
        return [params[k] for k in compiled.positiontup or ()]
    return dict(params)


def rows(session: Session, query: Executable, chunk: int = 20_000) -> Iterator[tuple[Any, ...]]:
    """The rows of ``query`` as the driver returns them (plain tuples), fetched in chunks."""
    conn, compiled = _compile(session, query)
    dialect = conn.dialect
    params = compiled.construct_params()
    for name, bind in compiled.binds.items():
        process = _processor(bind, dialect)
        if process is not None and name in params:
            params[name] = process(params[name])
    cursor = conn.connection.cursor()
    try:
        cursor.execute(compiled.string, _arguments(compiled, params))
        while batch := cursor.fetchmany(chunk):
            yield from batch
    finally:
        cursor.close()


def executemany(session: Session, statement: Executable, values: Sequence[Mapping[str, Any]]) -> None:
    """``statement`` once per mapping in ``values`` (all with the same keys), in one DBAPI call.

    Processed bind values are memoised per parameter: a batch shares its timestamps, issuer and
    status, so each distinct value is converted once.
    """
    if not values:
        return
    conn, compiled = _compile(session, statement, list(values[0]))
    dialect = conn.dialect
    defaults = compiled.construct_params(dict(values[0]))  # incl. values written into the statement
    order = list(compiled.positiontup or ()) if compiled.positional else list(defaults)
    processors = [_processor(compiled.binds[name], dialect) for name in order]
    memo: list[dict[Any, Any]] = [{} for _ in order]
    out: list[Any] = []
    for row in values:
        args = []
        for i, name in enumerate(order):
            value = row[name] if name in row else defaults[name]
            process = processors[i]
            if process is not None and value is not None:
                try:
                    hit = memo[i].get(value)
                except TypeError:  # unhashable: convert every time
                    hit = None
                if hit is None:
                    hit = process(value)
                    if len(memo[i]) < 64:  # only the batch's few shared values are worth keeping
                        memo[i][value] = hit
                value = hit
            args.append(value)
        out.append(args if compiled.positional else dict(zip(order, args, strict=True)))
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(compiled.string, out)
    finally:
        cursor.close()


# SQL, bind names in order, their processors, positional paramstyle, values written in the statement
_Plan = tuple[str, list[str], list[Any], bool, dict[str, Any]]


class Prepared:
    """One statement compiled once per dialect, run on the session's DBAPI connection.

    For statements every request runs: the bind values go through their column types' processors
    as with ``Session.execute``; SQLAlchemy's per-execution work (cache key, parameter
    construction, result objects) is skipped. Returns the driver's rows as plain tuples.
    """

    def __init__(self, statement: Executable, keys: Sequence[str]) -> None:
        self._statement = statement
        self._keys = list(keys)
        self._compiled: dict[str, _Plan] = {}

    def _plan(self, session: Session) -> tuple[Any, _Plan]:
        conn = session.connection()  # begins the session's transaction (SQLite: BEGIN IMMEDIATE)
        dialect = conn.dialect
        plan = self._compiled.get(dialect.name)
        if plan is None:
            compiled = self._statement.compile(dialect=dialect, column_keys=self._keys)  # type: ignore[attr-defined]
            assert isinstance(compiled, SQLCompiler)
            order = list(compiled.positiontup or ()) if compiled.positional else list(compiled.binds)
            processors = [_processor(compiled.binds[name], dialect) for name in order]
            # values the statement carries (e.g. `id == 1`); a required bind left out is a KeyError
            literals = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
            plan = (compiled.string, order, processors, bool(compiled.positional), literals)
            self._compiled[dialect.name] = plan
        return conn, plan

    def run(self, session: Session, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        conn, (sql, order, processors, positional, literals) = self._plan(session)
        values = []
        for name, process in zip(order, processors, strict=True):
            value = params[name] if name in params else literals[name]
            values.append(process(value) if process is not None and value is not None else value)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, values if positional else dict(zip(order, values, strict=True)))
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()
