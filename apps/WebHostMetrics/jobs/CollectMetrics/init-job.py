"""Validate ``Interval`` before CollectMetrics starts (the seed's init-job, in Python).

Reads the proposed variables (JSON) on stdin, prints the final ones on stdout;
exits 1 with a one-line reason on stderr to reject the start.
"""

from __future__ import annotations

import sys
from typing import Any

from jobhost.job import check_variables

DEFAULT_INTERVAL = 30
MIN_INTERVAL, MAX_INTERVAL = 5, 3600


def interval_of(raw: Any) -> int:
    """``raw`` as whole seconds, or ValueError with the message the user will see."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"Interval must be a whole number of seconds, got {raw!r}")
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"Interval must be a whole number of seconds, got {raw!r}") from None
    if not seconds.is_integer():
        raise ValueError(f"Interval must be a whole number of seconds, got {raw!r}")
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ValueError(
            f"Interval must be between {MIN_INTERVAL} and {MAX_INTERVAL} seconds,"
            f" got {int(seconds)}"
        )
    return int(seconds)


def apply_interval(variables: dict[str, Any]) -> None:
    variables["Interval"] = interval_of(variables.get("Interval", DEFAULT_INTERVAL))


if __name__ == "__main__":
    sys.exit(check_variables(apply_interval))
