"""Back up a SQLite file or a PostgreSQL database, verify the copy, prune old backups.

SQLite: the online backup API copies a consistent snapshot while writers carry
on; the copy must pass ``PRAGMA integrity_check`` and hold as many tables as the
source; it is gzipped (``Compress``) and renamed into place atomically, so the
Destination never holds a half-written backup under a final name.
PostgreSQL: ``pg_dump --format=custom`` (argv, no shell; the password travels in
``PGPASSWORD``, never on the command line or in output), verified by
``pg_restore --list``.
Names are ``<stem>-YYYYmmddTHHMMSSZ.<ext>``: they sort by time, and retention only
ever deletes files of that pattern for that source, after the new backup verified.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from jobhost.job import context, progress, set_result

PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")
STAMP = re.compile(r"\d{8}T\d{6}Z")


class BackupError(Exception):
    """A backup step failed; the message is the run's last line."""


@dataclass(frozen=True)
class Backup:
    path: Path
    stem: str
    suffix: str  # name pattern of this kind of backup, as a regex
    tables: int


def redact(text: str) -> str:
    return PASSWORD_IN_URL.sub(r"\1:***@", text)


def one_line(text: str) -> str:
    """A tool's multi-line stderr as one redacted line: the user sees the last line only."""
    return redact(" ".join(text.split()))


def flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def publish(partial: Path, final: Path) -> None:
    """Make ``partial`` durable, then give it its final name in one step."""
    if final.exists():
        raise BackupError(f"{final} already exists: a backup of this source ran in the same second")
    with partial.open("rb") as file:
        os.fsync(file.fileno())
    os.replace(partial, final)


def count_tables(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    return int(row[0])


def backup_sqlite(source: Path, destination: Path, stamp: str, compress: bool) -> Backup:
    suffix = r"\.sqlite3\.gz" if compress else r"\.sqlite3"
    final = destination / f"{source.stem}-{stamp}.sqlite3{'.gz' if compress else ''}"
    # The work folder sits inside Destination so the final rename never crosses filesystems.
    with tempfile.TemporaryDirectory(dir=destination, prefix=".backup-") as work:
        copy_path = Path(work) / "copy.sqlite3"
        with (
            sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True) as src,
            sqlite3.connect(copy_path) as copy,
        ):
            src.backup(copy)
            check = copy.execute("PRAGMA integrity_check").fetchone()[0]
            tables, expected = count_tables(copy), count_tables(src)
        src.close()
        copy.close()
        if check != "ok":
            raise BackupError(f"Verification failed: integrity_check of the copy says {check!r}")
        if tables != expected:
            raise BackupError(
                f"Verification failed: the copy has {tables} tables, source has {expected}"
            )
        print(f"[ok] Copied and verified: integrity ok, {tables} tables", flush=True)
        partial = copy_path
        if compress:
            partial = Path(work) / "copy.sqlite3.gz"
            with copy_path.open("rb") as raw, gzip.open(partial, "wb") as packed:
                shutil.copyfileobj(raw, packed)
            print(f"[ok] Compressed {copy_path.stat().st_size} -> {partial.stat().st_size} bytes")
        publish(partial, final)
    return Backup(final, source.stem, suffix, tables)


def backup_postgres(url: str, destination: Path, stamp: str, compress: bool) -> Backup:
    for tool in ("pg_dump", "pg_restore"):
        if shutil.which(tool) is None:
            raise BackupError(f"{tool} was not found on PATH: install the PostgreSQL client tools")
    parts = urlsplit(url)
    dbname = unquote(parts.path.strip("/"))
    env = dict(os.environ)
    netloc = parts.netloc
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        netloc = netloc.replace(f":{parts.password}@", "@", 1)
    safe_url = urlunsplit(parts._replace(netloc=netloc))
    final = destination / f"{dbname}-{stamp}.dump"
    with tempfile.TemporaryDirectory(dir=destination, prefix=".backup-") as work:
        partial = Path(work) / "dump.partial"
        dump = subprocess.run(
            ["pg_dump", "--format=custom", f"--compress={6 if compress else 0}",
             f"--file={partial}", f"--dbname={safe_url}"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if dump.returncode != 0:
            raise BackupError(f"pg_dump failed: {one_line(dump.stderr) or dump.returncode}")
        listing = subprocess.run(
            ["pg_restore", "--list", str(partial)], capture_output=True, text=True, check=False
        )
        if listing.returncode != 0:
            raise BackupError(f"Verification failed: pg_restore --list: {one_line(listing.stderr)}")
        tables = sum(1 for line in listing.stdout.splitlines() if " TABLE " in line)
        print(
            f"[ok] Dumped and verified with pg_restore --list: {tables} table entries", flush=True
        )
        publish(partial, final)
    return Backup(final, dbname, r"\.dump", tables)


def old_backups(backup: Backup, keep: int) -> list[Path]:
    """Backups of the same source and kind beyond the newest ``keep`` (which include this one)."""
    pattern = re.compile(rf"{re.escape(backup.stem)}-{STAMP.pattern}{backup.suffix}")
    folder = backup.path.parent
    names = sorted(
        (entry.name for entry in folder.iterdir() if pattern.fullmatch(entry.name)),
        reverse=True,  # the timestamp in the name sorts newest first
    )
    return [folder / name for name in names[keep:] if not (folder / name).is_symlink()]


def make_backup(source: str, destination: Path, compress: bool) -> Backup:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if source.startswith(("postgresql://", "postgres://")):
        return backup_postgres(source, destination, stamp, compress)
    return backup_sqlite(Path(source), destination, stamp, compress)


def main() -> int:
    started = time.monotonic()
    source = str(context.variables["Source"])
    destination = Path(str(context.variables["Destination"]))
    keep = int(context.variables.get("Keep", 7))
    compress = flag(context.variables.get("Compress", True))
    # A dry run (JOBHOST_DRY_RUN=1) makes and verifies a backup in a scratch folder, as a
    # test does, and lists the old backups a real run would delete; nothing else changes.
    dry_run = context.dry_run
    prefix = "Dry run: " if dry_run else ""
    print(f"{prefix}Backing up {redact(source)} into {destination} (keep {keep})", flush=True)
    would_delete: list[Path] = []
    try:
        if context.test or dry_run:
            with tempfile.TemporaryDirectory(prefix="jobhost-backup-test-") as scratch:
                backup = make_backup(source, Path(scratch), compress)
                size = backup.path.stat().st_size
            deleted: list[Path] = []
            if dry_run and destination.is_dir():
                # The new backup would be the newest: keep - 1 of the existing ones stay.
                planned = replace(backup, path=destination / backup.path.name)
                would_delete = old_backups(planned, max(0, keep - 1))
                for path in would_delete:
                    print(f"Would delete old backup {path.name}")
        else:
            destination.mkdir(parents=True, exist_ok=True)
            progress(0.1, "Copying")
            backup = make_backup(source, destination, compress)
            size = backup.path.stat().st_size
            progress(0.9, "Pruning old backups")
            deleted = old_backups(backup, keep)
            for path in deleted:
                path.unlink()
                print(f"Deleted old backup {path.name}")
    except (BackupError, OSError, sqlite3.Error) as error:
        print(f"Backup failed: {redact(str(error))}", file=sys.stderr)
        return 1
    set_result(
        {
            "source": redact(source),
            "path": str(backup.path),
            "bytes": size,
            "tables": backup.tables,
            "verified": True,
            "test": context.test,
            "dry_run": dry_run,
            "would_delete": [str(path) for path in would_delete],
            "duration_seconds": round(time.monotonic() - started, 3),
            "deleted": [str(path) for path in deleted],
        }
    )
    if dry_run:
        print(
            f"Dry run: a {size}-byte backup was made, verified and deleted; {destination} was"
            f" not touched ({len(would_delete)} old backups would be deleted)"
        )
    elif context.test:
        print(
            f"Test passed: a {size}-byte backup was made, verified and deleted;"
            f" {destination} was not touched"
        )
    else:
        print(f"Backup written: {backup.path} ({size} bytes, verified, {len(deleted)} old deleted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
