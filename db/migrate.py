"""Alembic, driven from code: ``cityid init`` upgrades, ``cityid serve`` checks.

Each package keeps its own branch in the one history (``branch_labels`` = package name), so
``heads`` — not ``head`` — is the schema the code expects.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaMismatch(RuntimeError):
    """The database schema is not the one this code was written for."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")


@functools.cache
def _script() -> ScriptDirectory:
    """The migration scripts, read once per process (Alembic compiles every revision file when it
    builds its map; the files do not change under a running process)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def code_heads() -> set[str]:
    return set(_script().get_heads())


def db_heads(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def _applied(script: ScriptDirectory, heads: set[str]) -> set[str]:
    """Every revision the given heads stand on: down revisions and ``depends_on`` alike.

    Alembic records a branch that another branch depends on inside the dependent head, so the
    set of heads in ``alembic_version`` is not comparable with the script's heads.
    """
    seen: set[str] = set()
    todo = list(heads)
    while todo:
        rev = script.get_revision(todo.pop())
        if rev is None or rev.revision in seen:
            continue
        seen.add(rev.revision)
        for parent in (rev.down_revision, rev.dependencies):
            if parent is None:
                continue
            todo.extend([parent] if isinstance(parent, str) else list(parent))
    return seen


def check_schema(engine: Engine) -> None:
    """Refuse to run on an unmigrated database or one migrated by newer code."""
    script = _script()
    current = db_heads(engine)
    if not current:
        raise SchemaMismatch("the database is not initialised: run `cityid init` first")
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = current - known
    if unknown:
        raise SchemaMismatch(
            f"the database schema ({', '.join(sorted(unknown))}) is newer than this cityid; "
            "upgrade cityid before serving"
        )
    if _applied(script, current) != known:
        raise SchemaMismatch("the database schema is behind this cityid: run `cityid init` to migrate")
