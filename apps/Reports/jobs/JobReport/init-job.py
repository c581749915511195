"""Check JobReport's variables before a start; reject with one precise line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

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


def main() -> int:
    text = sys.stdin.read()
    variables: dict[str, Any] = json.loads(text) if text.strip() else {}
    problem = problem_of(variables)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print(json.dumps(variables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
