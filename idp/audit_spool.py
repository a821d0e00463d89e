"""Audit records that could not reach the database wait in a spool file until it is back.

A refused request writes its audit records in a transaction of their own after the rollback
(idp.uow). While the database is down (a restart, a failover) that write fails too: the records
are then written to ``<data_dir>/audit-spool/`` (one file per request, written to a temporary
name, synced and renamed, so a crash leaves a whole file or none), and each worker's background
duty appends them to the chain when the database answers again, marked ``written_late`` with the
time they happened. A spool file is appended once: its id is claimed in the same transaction
(``smartcard.replay.first_use``), so two workers sharing a data dir, or a crash between the
commit and the file's removal, never write it twice.

A state change never waits here: its records commit in its own transaction or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session, sessionmaker

from db import audit, transaction, utcnow
from idp.models import SeenJti
from smartcard.replay import first_use

log = logging.getLogger("cityid")

SPOOL = "audit-spool"
_SEEN = cast(Table, SeenJti.__table__)
KEEP_CLAIM = dt.timedelta(days=30)  # outlives any crash between a commit and the file's removal


def spool_dir(data_dir: Path) -> Path:
    return data_dir / SPOOL


def spool(data_dir: Path, records: Iterable[Mapping[str, Any]], error: str) -> Path:
    """Keep ``records`` (``audit.record`` keyword arguments) on disk; returns the file."""
    directory = spool_dir(data_dir)
    directory.mkdir(mode=0o700, exist_ok=True)
    spool_id = secrets.token_hex(16)
    body = {
        "id": spool_id,
        "at": utcnow().isoformat(),
        "error": error[:300],
        "records": [dict(r) for r in records],
    }
    tmp = directory / f".{spool_id}.tmp"
    final = directory / f"{utcnow():%Y%m%dT%H%M%S%f}-{spool_id}.json"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(body, f, default=str, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself survives a power cut
    finally:
        os.close(dfd)
    return final


def _write(session: Session, body: Mapping[str, Any]) -> None:
    for rec in body["records"]:
        details = dict(rec.get("details") or {})
        details |= {"written_late": True, "occurred_at": body["at"]}
        audit.record(
            session,
            action=str(rec["action"]),
            outcome=str(rec["outcome"]),
            actor=str(rec.get("actor", "system")),
            subject=str(rec.get("subject", "")),
            reason=str(rec.get("reason", "")),
            details=details,
        )


def replay(sessions: sessionmaker[Session], data_dir: Path) -> int:
    """Append every spooled file to the chain, oldest first; returns how many were appended.
    Stops at the first database error (still down): the files stay for the next run."""
    directory = spool_dir(data_dir)
    if not directory.is_dir():
        return 0
    done = 0
    for path in sorted(directory.glob("*.json")):
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(body, dict) or not isinstance(body.get("records"), list):
                raise ValueError("not a spool file")
        except (OSError, ValueError) as exc:
            log.error("audit spool file %s unreadable (%s): kept as .bad", path.name, exc)
            path.replace(path.with_suffix(".bad"))
            continue
        with transaction(sessions) as s:
            if first_use(s, _SEEN, f"audit-spool:{str(body.get('id'))[:64]}", utcnow() + KEEP_CLAIM):
                _write(s, body)
                done += 1
        path.unlink(missing_ok=True)
    return done
