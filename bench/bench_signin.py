"""What a sign-in flood does to everyone else: ``/healthz`` latency and scheduled fires'
lateness, quiet and during 16 anonymous clients signing in with random names.

    python -m bench.bench_signin

A real ``jobhost serve`` with one job due every second (``* * * * * *``). Three phases of
``PHASE_SECONDS`` each:

- ``quiet``: no sign-ins;
- ``flood``: 16 clients, each posting wrong passwords for random user names as fast as
  answers come, with the default sign-in limits (one address: most attempts get 429
  before any password is checked);
- ``flood_unlimited``: the same with the per-address and per-user limits raised so every
  attempt is checked with argon2 (the worst case: a flood from many addresses). The
  bounded hash pool then answers what it cannot take with 429 at once.

Figures per phase: ``healthz_p50/p99/max_ms`` (one client, a request every 20 ms),
``fire_late_p50/max_ms`` (a fire's ``started_at`` minus its due time, from history),
``fires_missed`` (due seconds with no run), and for the floods ``signins_per_s`` and the
share answered 429.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

from bench.bench_http import (
    PASSWORD,
    _free_port,
    _percentile,
    _token,
    _wait_healthy,
)

PHASE_SECONDS = 8.0
CLIENTS = 16
HEALTHZ_EVERY = 0.02
TICK_JOB = "Bench/Tick"


def _write_apps(root: Path) -> Path:
    folder = root / "apps" / "Bench" / "jobs" / "Tick"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(
        '{"Name": "Tick", "ScriptRelativePath": "run", "default_schedule": "* * * * * *",'
        ' "max_concurrent": 0}'
    )
    (folder / "run").write_text("#!/bin/sh\n:\n")
    (folder / "run").chmod(0o755)
    return root / "apps"


def _serve(root: Path, port: int, unlimited: bool) -> tuple[subprocess.Popen[bytes], Path]:
    env = {
        **os.environ,
        "JOBHOST_ADMIN_PASSWORD": PASSWORD,
        "JOBHOST_CONFIG": str(root / "no-jobhost.toml"),
        "JOBHOST_WATCH": "false",
    }
    if unlimited:
        env["JOBHOST_LOGIN_ATTEMPTS_PER_MINUTE"] = "1000000"
        env["JOBHOST_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE"] = "1000000"
    argv = [
        str(Path(sys.executable).with_name("jobhost")),
        *("--apps", str(_write_apps(root)), "--data-dir", str(root / "data")),
        *("serve", "--host", "127.0.0.1", "--port", str(port)),
    ]
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    return process, log


async def _healthz(base: str, until: float) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while time.monotonic() < until:
            begun = time.perf_counter()
            (await client.get("/healthz")).raise_for_status()
            latencies.append((time.perf_counter() - begun) * 1000)
            await asyncio.sleep(HEALTHZ_EVERY)
    return latencies


async def _flood(base: str, until: float) -> tuple[int, int]:
    answered = limited = 0

    async def one() -> None:
        nonlocal answered, limited
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            while time.monotonic() < until:
                reply = await client.post(
                    "/api/v1/auth/login",
                    json={"username": f"u{uuid.uuid4().hex[:10]}", "password": "wrong"},
                )
                answered += 1
                limited += reply.status_code in (429, 503)

    await asyncio.gather(*(one() for _ in range(CLIENTS)))
    return answered, limited


def _fires(base: str, token: str, since: datetime, until: datetime) -> tuple[list[float], int]:
    """Lateness (ms) of each fire due in [since, until), and how many due seconds had none."""
    with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}) as c:
        rows = c.get("/api/v1/jobs/history", params={"job_id": TICK_JOB, "limit": 500}).json()
    late: dict[datetime, float] = {}
    for row in rows["executions"]:
        if row.get("scheduled_for") is None or row.get("started_at") is None:
            continue
        due = datetime.fromisoformat(row["scheduled_for"])
        if since <= due < until:
            started = datetime.fromisoformat(row["started_at"])
            late[due] = (started - due).total_seconds() * 1000
    expected = int((until - since).total_seconds())
    return sorted(late.values()), max(0, expected - len(late))


async def _phase(base: str, token: str, flood: bool) -> dict[str, float]:
    since = datetime.now().astimezone().replace(microsecond=0)
    until_mono = time.monotonic() + PHASE_SECONDS
    health = asyncio.create_task(_healthz(base, until_mono))
    answered = limited = 0
    if flood:
        answered, limited = await _flood(base, until_mono)
    latencies = await health
    until = datetime.now().astimezone().replace(microsecond=0)
    await asyncio.sleep(2.0)  # the last fires' rows
    late, missed = await asyncio.to_thread(_fires, base, token, since, until)
    figures = {
        "healthz_p50_ms": statistics.median(latencies),
        "healthz_p99_ms": _percentile(latencies, 99),
        "healthz_max_ms": max(latencies),
        "fire_late_p50_ms": statistics.median(late) if late else float("nan"),
        "fire_late_max_ms": max(late) if late else float("nan"),
        "fires_missed": float(missed),
    }
    if flood:
        figures["signins_per_s"] = answered / PHASE_SECONDS
        figures["signins_429_share"] = limited / max(1, answered)
    return figures


def _one_server(unlimited: bool, phases: list[tuple[str, bool]]) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="jobhost-bench-signin-") as tmp:
        root, port = Path(tmp), _free_port()
        process, log = _serve(root, port, unlimited)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, process, log)
            token = _token(base)
            time.sleep(2.0)  # the scheduler's first fires
            for name, flood in phases:
                for key, value in asyncio.run(_phase(base, token, flood)).items():
                    figures[f"{name}_{key}"] = value
                    print(f"signin  {name}_{key:28s} {value:10.2f}", flush=True)
        finally:
            process.terminate()
            process.wait(30)
    return figures


def run() -> dict[str, float]:
    figures = _one_server(False, [("quiet", False), ("flood", True)])
    figures |= _one_server(True, [("flood_unlimited", True)])
    return figures


if __name__ == "__main__":
    run()
