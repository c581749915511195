"""Check HealthCheck's targets before a start; reject with one precise line."""

from __future__ import annotations

import sys
from typing import Any

from targets import parse_ports, parse_urls

from jobhost.job import check_variables


def problem_of(variables: dict[str, Any]) -> str | None:
    urls = parse_urls(str(variables.get("Urls") or ""))  # ValueError: the reason to refuse
    ports = parse_ports(str(variables.get("Ports") or ""))
    if not urls and not ports:
        return "Nothing to check: give at least one URL in Urls or host:port in Ports"
    return None


if __name__ == "__main__":
    sys.exit(check_variables(problem_of))
