"""Autogenerate an Alembic revision on a package's branch.

    .venv/bin/python scripts/new_migration.py MESSAGE REV_ID --branch pki   # first on a branch
    .venv/bin/python scripts/new_migration.py MESSAGE REV_ID --head pki     # later on it

Diffs the models against a scratch SQLite database migrated to all current heads, so only
the new tables and columns appear. Review the generated file before committing it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from alembic import command

from db import make_engine
from db.migrate import alembic_config, upgrade

p = argparse.ArgumentParser()
p.add_argument("message")
p.add_argument("rev_id")
p.add_argument("--branch", help="start a new branch with this label, based on the db base")
p.add_argument("--head", help="add to the branch with this label")
a = p.parse_args()
with tempfile.TemporaryDirectory() as tmp:
    url = f"sqlite:///{Path(tmp) / 'scratch.sqlite3'}"
    engine = make_engine(url, pool=False)
    upgrade(engine)
    engine.dispose()
    cfg = alembic_config(url)
    if a.branch:
        command.revision(
            cfg,
            message=a.message,
            rev_id=a.rev_id,
            autogenerate=True,
            head="0001_base",
            branch_label=a.branch,
            splice=True,
        )
    else:
        command.revision(cfg, message=a.message, rev_id=a.rev_id, autogenerate=True, head=f"{a.head}@head")
