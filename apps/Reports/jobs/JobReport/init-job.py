"""Check JobReport's variables before a start; reject with one precise line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jobhost.job import check_variables

PERIODS = ("day", "week")


def problem_of(variables: dict[str, Any]) -> str | None:
    period = str(variables.get("Period", "day")).strip().lower()
    if period not in PERIODS:
        return f"Period must be day or week, got {variables.get('Period')!r}"
    variables["Period"] = period
    database = str(variables.get("Database", "") or "").strip()
    if database and "://" not in database and not Path(database).is_file():
        return f"Database {database!r} is not a file: give a SQLite file path or a URL"
    return None


if __name__ == "__main__":
    sys.exit(check_variables(problem_of))
