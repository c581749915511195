"""Check LogRotation's variables before a start; reject with one precise line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jobhost.job import check_variables


def problem_with(variables: dict[str, Any]) -> str | None:
    folder = Path(str(variables.get("Folder", "")))
    pattern = str(variables.get("Pattern", "*.log"))
    if not folder.is_absolute():
        return f"Folder must be an absolute path, got {str(folder)!r}"
    if not folder.is_dir():
        return f"Folder {str(folder)!r} is not an existing folder"
    if not pattern or "/" in pattern or pattern in (".", ".."):
        return f"Pattern must be a file-name glob such as *.log (no '/'), got {pattern!r}"
    numbers: dict[str, int] = {}
    for name, default, low in (("MaxBytes", 10485760, 0), ("MaxAgeDays", 0, 0), ("Keep", 5, 1)):
        value = variables.get(name, default)
        if isinstance(value, str) and value.strip().isdigit():
            value = variables[name] = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"{name} must be a whole number of at least {low}, got {value!r}"
        numbers[name] = value
    if numbers["MaxBytes"] == 0 and numbers["MaxAgeDays"] == 0:
        return "MaxBytes and MaxAgeDays are both 0: set one of them, or nothing is ever rotated"
    return None


if __name__ == "__main__":
    sys.exit(check_variables(problem_with))
