"""Succeed or fail at random (``FailRate``), with an honest last line either way."""

from __future__ import annotations

import random
import sys

from jobhost.job import context, set_result


def fail_rate(raw: object) -> float:
    rate = float(raw) if isinstance(raw, int | float | str) else 0.5
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"FailRate must be between 0 and 1, got {raw!r}")
    return rate


def main() -> int:
    try:
        rate = fail_rate(context.variables.get("FailRate", 0.5))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    roll = random.random()
    failed = roll < rate
    set_result({"fail_rate": rate, "roll": round(roll, 4), "failed": failed})
    if failed:
        print(f"Simulated failure: rolled {roll:.2f} < FailRate {rate}", file=sys.stderr)
        return 1
    print(f"Succeeded: rolled {roll:.2f} >= FailRate {rate}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
