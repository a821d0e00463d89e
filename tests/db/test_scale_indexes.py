"""Deleting a citizen's rows never reads a whole table (bench/scale.py's EXPLAIN findings).

An erasure (GDPR Art. 17), a removed device or a revoked grant deletes by foreign key: every
foreign key to a row deleted per citizen (account, grant, device) needs an index led by its
columns, or each delete (and each ON DELETE CASCADE) scans the referencing table, which at 5
million accounts holds millions of rows.
"""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Engine

# rows removed one citizen at a time
PER_CITIZEN = {"idp_account", "idp_grant", "sc_device"}


def _led_by(columns: list[str], indexed: list[list[str]]) -> bool:
    return any(ix[: len(columns)] == columns for ix in indexed)


def test_every_foreign_key_to_a_per_citizen_row_is_indexed(db_engine: Engine) -> None:
    insp = inspect(db_engine)
    missing = []
    for table in insp.get_table_names():
        indexed = [list(ix["column_names"]) for ix in insp.get_indexes(table)]
        indexed += [list(uq["column_names"]) for uq in insp.get_unique_constraints(table)]
        indexed.append(list(insp.get_pk_constraint(table)["constrained_columns"]))
        for fk in insp.get_foreign_keys(table):
            if fk["referred_table"] in PER_CITIZEN and not _led_by(fk["constrained_columns"], indexed):
                missing.append(f"{table}({', '.join(fk['constrained_columns'])}) -> {fk['referred_table']}")
    assert missing == []
