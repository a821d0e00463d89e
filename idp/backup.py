"""Backup and restore of an instance: one archive with what a new machine needs to carry on.

An archive (a tar file, mode 0600) holds:
- ``manifest.json``: format, time, database kind, schema revision, the audit chain's last entry
  (an anchor: a restore checks that the chain it brings back ends there) and each file's SHA-256;
- ``cityid.toml`` (the secrets that decrypt keys and personal data: without it the database is
  unreadable) and the file key store ``ca-keys/`` (PKCS#11 keys stay in the HSM: back it up with
  the HSM's own procedure);
- ``audit-spool/``: audit entries waiting for the database (idp.audit_spool);
- SQLite: ``cityid.sqlite3``, a consistent snapshot taken by SQLite's online backup API while the
  server runs; PostgreSQL: ``database.pgdump``, written by ``pg_dump --format=custom`` (one
  consistent snapshot; for point-in-time recovery use base backups and WAL archiving instead,
  docs/operations.md).

Restore unpacks into an empty data dir, checks every file against the manifest, loads the
database (PostgreSQL: ``pg_restore`` into an empty database) and verifies the audit chain up to
the manifest's anchor. Flask-free: the CLI (``cityid backup``, ``cityid restore``) is thin over it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from db import audit, make_engine, make_session_factory, utcnow
from idp.config import Config

FORMAT = "cityid-backup/1"
SQLITE_NAME = "cityid.sqlite3"
PG_DUMP_NAME = "database.pgdump"
TREES = ("ca-keys", "audit-spool")  # directories of the data dir that go along, if present
SINGLE = ("cityid.toml",)


class BackupError(Exception):
    """The backup or restore cannot be done; the message says why (the admin's to fix)."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    database: str
    files: int
    audit_last_seq: int | None
    audit_last_hash: str


@dataclass(frozen=True)
class RestoreResult:
    data_dir: Path
    database: str
    audit_entries: int
    audit_last_seq: int | None
    created_at: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _libpq(sqlalchemy_url: str) -> tuple[str, dict[str, str]]:
    """``postgresql+psycopg://…`` as the PostgreSQL tools take it: a libpq URI *without* the
    password (a command line is readable by every local user, ``ps``), and the environment for
    the tool with the password as ``PGPASSWORD`` (libpq §34.15), which only the user can read."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
        url = url._replace(password=None)  # URL.set() leaves a None unchanged
    return url.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (Debian: postgresql-client)")
    return found


def _anchor(db_url: str) -> tuple[int | None, str]:
    engine = make_engine(db_url, pool=False)
    try:
        with make_session_factory(engine)() as s:
            head = s.execute(select(audit.AuditHead.last_seq, audit.AuditHead.last_hash)).first()
    finally:
        engine.dispose()
    return (head[0], head[1]) if head else (None, audit.GENESIS)


def _snapshot_sqlite(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy while other processes write (WAL included)."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst)
    finally:
        dst.close()
        src.close()


def create(cfg: Config, out: Path) -> BackupResult:
    """Write a backup of the instance in ``cfg.data_dir`` to ``out`` (replaced only when whole)."""
    if cfg.database_missing:
        raise BackupError(f"no cityid database in {cfg.data_dir}: run `cityid init` first")
    out = out.resolve()
    with tempfile.TemporaryDirectory(prefix="cityid-backup-") as tmp:
        staging = Path(tmp)
        if cfg.db_url.startswith("sqlite"):
            kind, db_file = "sqlite", staging / SQLITE_NAME
            _snapshot_sqlite(Path(make_url(cfg.db_url).database or ""), db_file)
            last_seq, last_hash = _anchor(f"sqlite:///{db_file}")
        else:
            kind, db_file = "postgresql", staging / PG_DUMP_NAME
            # the anchor first: the dump, taken after, holds at least everything up to it
            last_seq, last_hash = _anchor(cfg.db_url)
            dsn, env = _libpq(cfg.db_url)
            done = subprocess.run(  # noqa: S603 - fixed arguments, the URL is the admin's
                [
                    _tool("pg_dump"),
                    "--format=custom",
                    "--no-owner",
                    "--file",
                    str(db_file),
                    "--dbname",
                    dsn,
                ],
                capture_output=True,
                text=True,
                check=False,
                env=env,
            )
            if done.returncode != 0:
                raise BackupError(f"pg_dump failed: {done.stderr.strip()[:500]}")
        members: list[tuple[str, Path]] = [(db_file.name, db_file)]
        for name in SINGLE:
            if (cfg.data_dir / name).is_file():
                members.append((name, cfg.data_dir / name))
        for tree in TREES:
            root = cfg.data_dir / tree
            if root.is_dir():
                for path in sorted(root.rglob("*")):
                    if path.is_file() and not path.is_symlink():
                        members.append((path.relative_to(cfg.data_dir).as_posix(), path))
        manifest = {
            "format": FORMAT,
            "created_at": utcnow().isoformat(),
            "database": kind,
            "key_store": cfg.ca.key_store,
            "audit": {"last_seq": last_seq, "last_hash": last_hash},
            "files": {name: _sha256(path) for name, path in members},
        }
        partial = out.with_name(f".{out.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
                body = json.dumps(manifest, indent=2).encode()
                info = tarfile.TarInfo("manifest.json")
                info.size, info.mode, info.mtime = len(body), 0o600, int(utcnow().timestamp())
                tar.addfile(info, io.BytesIO(body))
                for name, path in members:
                    tar.add(path, arcname=name, recursive=False)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return BackupResult(out, kind, len(members), last_seq, last_hash)


def _allowed(name: str) -> bool:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return False
    return name in (*SINGLE, SQLITE_NAME, PG_DUMP_NAME, "manifest.json") or p.parts[0] in TREES


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.getmember("manifest.json")
        f = tar.extractfile(member)
        manifest = json.loads(f.read() if f else b"")
    except (KeyError, ValueError) as exc:
        raise BackupError("not a cityid backup: no readable manifest.json") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"not a cityid backup of format {FORMAT}")
    return manifest


def _point_config_at(toml: Path, database_url: str) -> None:
    """A restored cityid.toml that names a database names the one restored into (a setting in
    the environment, CITYID_DATABASE_URL, still comes first)."""
    if not toml.is_file():
        return
    lines = toml.read_text(encoding="utf-8").splitlines(keepends=True)
    setting = re.compile(r"^\s*database_url\s*=")
    changed = [f"database_url = {json.dumps(database_url)}\n" if setting.match(ln) else ln for ln in lines]
    if changed != lines:
        toml.write_text("".join(changed), encoding="utf-8")


def restore(archive: Path, data_dir: Path, *, database_url: str = "") -> RestoreResult:
    """Unpack ``archive`` into the empty ``data_dir`` and load its database: SQLite into the
    data dir, PostgreSQL into ``database_url`` (an empty database). Checks every file and the
    audit chain up to the backup's anchor."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore into a new data dir")
    existed = data_dir.exists()
    try:
        return _restore(archive, data_dir, database_url)
    except BaseException:
        # leave the data dir as it was (empty or absent); a PostgreSQL target that pg_restore
        # began to fill is the admin's to drop (the message says pg_restore failed)
        if existed:
            for child in data_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise


def _restore(archive: Path, data_dir: Path, database_url: str) -> RestoreResult:
    try:
        tar = tarfile.open(archive, mode="r")
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"cannot read {archive}: {exc}") from exc
    with tar:
        manifest = _read_manifest(tar)
        files: dict[str, str] = manifest.get("files", {})
        members = [m for m in tar.getmembers() if m.name != "manifest.json"]
        for m in members:
            if not m.isfile() or not _allowed(m.name) or m.name not in files:
                raise BackupError(f"unexpected entry in the backup: {m.name!r}")
        if sorted(m.name for m in members) != sorted(files):
            raise BackupError("the backup lacks files its manifest lists")
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        # tarfile's "data" filter: no links, devices, absolute paths or paths outside the target
        tar.extractall(data_dir, members=members, filter="data")
    for name, digest in files.items():
        target = data_dir / name
        os.chmod(target, 0o600)
        if _sha256(target) != digest:
            raise BackupError(f"{name} does not match the manifest: the backup is damaged")
    kind = manifest.get("database")
    if kind == "postgresql":
        if not database_url.startswith("postgresql"):
            raise BackupError("a PostgreSQL backup restores into --database-url (an empty database)")
        engine = make_engine(database_url, pool=False)
        try:
            with engine.connect() as conn:
                tables = conn.execute(
                    text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
                ).scalar()
        finally:
            engine.dispose()
        if tables:
            raise BackupError("the target database is not empty: restore into a new database")
        dump = data_dir / PG_DUMP_NAME
        dsn, env = _libpq(database_url)
        done = subprocess.run(  # noqa: S603 - fixed arguments, the URL is the admin's
            [
                _tool("pg_restore"),
                "--no-owner",
                "--exit-on-error",
                "--dbname",
                dsn,
                str(dump),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if done.returncode != 0:
            raise BackupError(f"pg_restore failed: {done.stderr.strip()[:500]}")
        dump.unlink()
        db_url = database_url
        _point_config_at(data_dir / "cityid.toml", database_url)
    elif kind == "sqlite":
        db_url = f"sqlite:///{(data_dir / SQLITE_NAME).resolve()}"
    else:
        raise BackupError(f"unknown database kind {kind!r} in the manifest")
    anchor = manifest.get("audit", {})
    last_seq = anchor.get("last_seq")
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as s:
            anchors = {int(last_seq): str(anchor.get("last_hash", ""))} if last_seq is not None else {}
            checked = audit.verify(s, anchors)
    finally:
        engine.dispose()
    if not checked.ok:
        raise BackupError(f"the restored audit log does not verify: {checked.problem}")
    return RestoreResult(data_dir, str(kind), checked.entries, checked.last_seq, str(manifest["created_at"]))
