"""Check HealthCheck's targets before a start; reject with one precise line."""

from __future__ import annotations

import json
import sys
from typing import Any

from targets import parse_ports, parse_urls


def main() -> int:
    text = sys.stdin.read()
    variables: dict[str, Any] = json.loads(text) if text.strip() else {}
    try:
        urls = parse_urls(str(variables.get("Urls") or ""))
        ports = parse_ports(str(variables.get("Ports") or ""))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    if not urls and not ports:
        print(
            "Nothing to check: give at least one URL in Urls or host:port in Ports", file=sys.stderr
        )
        return 1
    print(json.dumps(variables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
