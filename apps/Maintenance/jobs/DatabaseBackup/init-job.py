"""Check DatabaseBackup's variables before a start; reject with one precise line.

Reads the proposed variables (JSON) on stdin and prints them back. Passwords in a
PostgreSQL ``Source`` are redacted from every message.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobhost.job import check_variables

SQLITE_HEADER = b"SQLite format 3\x00"
PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")


def redact(text: str) -> str:
    return PASSWORD_IN_URL.sub(r"\1:***@", text)


def check_source(source: str) -> str | None:
    if not source.strip():
        return "Source is empty: give a SQLite file path or a postgresql:// URL"
    if "://" in source:
        parts = urlsplit(source)
        if parts.scheme not in ("postgresql", "postgres"):
            return f"Source URL must start with postgresql://, got {redact(source)!r}"
        if not parts.path.strip("/"):
            return (
                f"Source URL names no database (postgresql://host/dbname), got {redact(source)!r}"
            )
        return None
    path = Path(source)
    if not path.is_file():
        return f"Source {source!r} is not a file: give an existing SQLite database"
    with path.open("rb") as file:
        if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            return f"Source {source!r} is not a SQLite database (no SQLite header)"
    return None


def check_destination(destination: str) -> str | None:
    path = Path(destination)
    if not path.is_absolute():
        return f"Destination must be an absolute folder path, got {destination!r}"
    if path.exists() and not path.is_dir():
        return f"Destination {destination!r} exists and is not a folder"
    if not path.exists() and not path.parent.is_dir():
        return f"Destination {destination!r} cannot be created: {str(path.parent)!r} does not exist"
    return None


def problem_of(variables: dict[str, Any]) -> str | None:
    problem = check_source(str(variables.get("Source", ""))) or check_destination(
        str(variables.get("Destination", ""))
    )
    keep = variables.get("Keep", 7)
    if isinstance(keep, str) and keep.strip().isdigit():
        keep = variables["Keep"] = int(keep)
    if problem is None and (
        isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= 365
    ):
        problem = f"Keep must be a whole number between 1 and 365, got {keep!r}"
    return problem


if __name__ == "__main__":
    sys.exit(check_variables(problem_of))
