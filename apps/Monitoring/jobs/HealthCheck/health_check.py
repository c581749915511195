"""Check URLs and TCP ports; exit 1 when any check fails.

A URL passes when it answers 2xx or 3xx (redirects are not followed: a redirect is
an answer), its body holds the expected text when one is given (only the first
MiB is read), and the whole exchange fits in ``LatencyBudgetMs``. A port passes
when a TCP connection opens. Checks run in parallel, so a run takes about one
timeout at worst; results keep the order of the variables.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from targets import PortTarget, UrlTarget, parse_ports, parse_urls

from jobhost.job import context, set_result

BODY_LIMIT = 1024 * 1024
PARALLEL = 8


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def check_url(target: UrlTarget, timeout: float, budget_ms: int) -> dict[str, Any]:
    check: dict[str, Any] = {"target": target.url, "kind": "http", "ok": False, "status": None}
    parts = urlsplit(target.url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        tls = ssl.create_default_context()
        connection = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=tls)
    else:
        connection = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    started = time.perf_counter()
    try:
        connection.request("GET", path, headers={"User-Agent": "JobHost-HealthCheck/1"})
        response = connection.getresponse()
        body = response.read(BODY_LIMIT).decode("utf-8", errors="replace")
        check["status"] = response.status
    except (OSError, http.client.HTTPException) as error:
        check |= {"latency_ms": elapsed_ms(started), "error": str(error) or type(error).__name__}
        return check
    finally:
        connection.close()
    latency = check["latency_ms"] = elapsed_ms(started)
    if not 200 <= response.status < 400:
        check["error"] = f"HTTP {response.status} {response.reason}"
    elif target.expected is not None and target.expected not in body:
        check["error"] = f"expected text {target.expected!r} not found in the body"
    elif latency > budget_ms:
        check["error"] = f"answered in {latency:g} ms, over the {budget_ms} ms budget"
    else:
        check |= {"ok": True, "error": None}
    return check


def check_port(target: PortTarget, timeout: float) -> dict[str, Any]:
    check: dict[str, Any] = {"target": target.label, "kind": "tcp", "ok": False, "status": None}
    started = time.perf_counter()
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            pass
    except OSError as error:
        check |= {"latency_ms": elapsed_ms(started), "error": str(error) or type(error).__name__}
        return check
    return check | {"ok": True, "latency_ms": elapsed_ms(started), "error": None}


def line_for(check: dict[str, Any]) -> str:
    mark = "[ok]  " if check["ok"] else "[FAIL]"
    status = f" {check['status']}" if check["status"] is not None else ""
    detail = f": {check['error']}" if check["error"] else ""
    return f"{mark} {check['kind']} {check['target']}{status} in {check['latency_ms']:g} ms{detail}"


def main() -> int:
    variables = context.variables
    try:
        urls = parse_urls(str(variables.get("Urls") or ""))
        ports = parse_ports(str(variables.get("Ports") or ""))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    timeout = float(variables.get("TimeoutSeconds", 5))
    budget = int(variables.get("LatencyBudgetMs", 2000))
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        url_checks = [pool.submit(check_url, url, timeout, budget) for url in urls]
        port_checks = [pool.submit(check_port, port, timeout) for port in ports]
        checks = [future.result() for future in url_checks + port_checks]
    for check in checks:
        print(line_for(check))
    passed = sum(check["ok"] for check in checks)
    set_result({"passed": passed, "total": len(checks), "checks": checks})
    print(f"{passed}/{len(checks)} checks passed", flush=True)
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
