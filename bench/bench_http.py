"""HTTP figures of a real ``jobhost serve`` process, driven over loopback.

    python -m bench.bench_http

- ``start_response_p50/p99_ms``: ``POST /api/v1/jobs/start`` (bearer token) to its 202;
- ``start_to_running_p50/p99_ms``: the same POST to the execution's ``running`` change
  arriving on ``GET /api/v1/jobs/events`` (target p50 ≤ 3 ms);
- ``<route>_rps_<n>_clients``: requests per second with 1 and 10 keep-alive clients
  (target ≥ 2,000 status reads/s with 10) on ``status`` (an ended execution: read from
  the store), ``status_live`` (a running one: from memory), ``running`` (one live) and
  ``history`` (50 rows); ``<route>_cpu_us_<n>_clients`` is the server's CPU time per
  request, the figure to compare on a busy machine;
- ``running_rps_1000_live`` / ``running_cpu_us_1000_live``: ``GET /running`` while
  1,000 executions are live, and ``status_read_p50/p99_ms_1000_live``: one client's
  status reads of 500 of them, one after another (target p99 ≤ 2 ms);
- ``sse_output_delay_p50/p99_ms``: a job prints a line holding ``time.time()`` when sent
  SIGUSR1; the delay is until that line arrives on the output stream (target p50 ≤ 5 ms);
- ``server_rss_mib_idle`` and ``server_rss_mib_1000_running_100_sse``: the server
  process's RSS (the jobs' own processes excluded).

Throughput uses a minimal HTTP/1.1 client on raw asyncio streams: httpx costs more CPU
per request than the server does, and on a small machine the figure would then measure
the client. Everything else uses httpx. The whole module takes well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil

PASSWORD = "bench-admin-password"
STARTUP_SECONDS = 30.0
TIMEOUT = 30.0
RATE_SECONDS = 1.5
SETTLED = frozenset({"queued", "starting"})  # any other status means it got past running
ENDED = frozenset({"succeeded", "failed", "stopped", "timed_out", "lost"})
# Prints the wall-clock time each time it is sent SIGUSR1 (SIGTERM still ends it).
ECHO = """\
import signal
import time

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
print("ready", flush=True)
while True:
    signal.sigwait({signal.SIGUSR1})
    print(f"tick {time.time():.6f}", flush=True)
"""
JOBS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "Quick": ("run", "#!/bin/sh\n:\n", {}),
    "Echo": ("echo.py", ECHO, {}),
    "Sleep": ("run", "#!/bin/sh\nexec sleep 600\n", {"stop_grace_seconds": 2}),
}


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _write_apps(root: Path) -> Path:
    apps = root / "apps"
    for name, (script, text, extra) in JOBS.items():
        folder = apps / "Bench" / "jobs" / name
        folder.mkdir(parents=True)
        definition = {"Name": name, "ScriptRelativePath": script, "max_concurrent": 0, **extra}
        (folder / "job.json").write_text(json.dumps(definition))
        (folder / script).write_text(text)
        (folder / script).chmod(0o755)
    return apps


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(root: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "JOBHOST_ADMIN_PASSWORD": PASSWORD,
        "JOBHOST_CONFIG": str(root / "no-jobhost.toml"),
        "JOBHOST_WATCH": "false",
        "JOBHOST_SCHEDULER_ENABLED": "false",
    }
    argv = [
        str(Path(sys.executable).with_name("jobhost")),
        *("--apps", str(_write_apps(root)), "--data-dir", str(root / "data")),
        *("serve", "--host", "127.0.0.1", "--port", str(port)),
    ]
    with (root / "server.log").open("wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    # Readiness of another process has no event to await: poll /healthz briefly.
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jobhost serve exited:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"jobhost serve did not start:\n{log.read_text(errors='replace')}")


def _token(base: str) -> str:
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        login = client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        login.raise_for_status()
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        created = client.post("/api/v1/auth/tokens", json={"name": "bench"})
        created.raise_for_status()
        token: str = created.json()["token"]
        return token


class Figures(dict[str, float]):
    """Prints each figure as soon as it is known, so a slow phase shows where it is."""

    def __setitem__(self, name: str, value: float) -> None:
        super().__setitem__(name, value)
        print(f"http    {name:40s} {value:10.2f}", flush=True)


class RawClient:
    """One keep-alive HTTP/1.1 connection with hand-written requests (see the module doc)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auth: str):
        self.reader, self.writer, self.auth = reader, writer, auth

    @classmethod
    async def open(cls, port: int, token: str) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, f"Authorization: Bearer {token}\r\n")

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else ""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.auth}{extra}\r\n"
        self.writer.write(head.encode() + body)
        response = await self.reader.readuntil(b"\r\n\r\n")
        lines = response.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(lines[0].split()[1]), payload

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # the server may have dropped it while idle
            await self.writer.wait_closed()


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _rate(
    port: int, token: str, path: str, clients: int, server: psutil.Process, most: int = 20_000
) -> tuple[float, float]:
    """(requests per second, server CPU µs per request) for GETs of ``path`` from
    ``clients`` connections during ``RATE_SECONDS`` (at most ``most`` requests).

    The CPU figure holds on a busy machine, where requests per second do not."""
    conns = [await RawClient.open(port, token) for _ in range(clients)]
    done = 0

    async def drive(conn: RawClient, deadline: float) -> None:
        nonlocal done
        while time.perf_counter() < deadline and done < most:
            code, payload = await conn.request("GET", path)
            if code != 200:
                raise RuntimeError(f"GET {path} answered {code}: {payload[:200]!r}")
            done += 1

    try:
        await drive(conns[0], time.perf_counter() + 0.2)  # warm-up
        done, cpu, begun = 0, _cpu(server), time.perf_counter()
        await asyncio.gather(*(drive(c, begun + RATE_SECONDS) for c in conns))
        elapsed = time.perf_counter() - begun
        return done / elapsed, (_cpu(server) - cpu) / done * 1e6
    finally:
        for conn in conns:
            await conn.close()


class Events:
    """Reads ``/api/v1/jobs/events``: when each execution got past ``starting``, and ended."""

    def __init__(self) -> None:
        self.running: dict[str, float] = {}
        self.ended: set[str] = set()
        self._wake = asyncio.Event()

    async def read(self, response: httpx.Response) -> None:
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            if not line.startswith("data: ") or event != "execution":
                continue  # the connection's first event is a snapshot of the live runs
            execution = json.loads(line[6:])
            if execution["status"] not in SETTLED:
                self.running.setdefault(execution["id"], time.perf_counter())
            if execution["status"] in ENDED:
                self.ended.add(execution["id"])
            self._wake.set()

    async def until(self, done: Callable[[], bool]) -> None:
        while True:
            self._wake.clear()  # cleared before the check: no await in between
            if done():
                return
            await asyncio.wait_for(self._wake.wait(), TIMEOUT)


@asynccontextmanager
async def _sse(client: httpx.AsyncClient, path: str) -> AsyncIterator[httpx.Response]:
    async with client.stream("GET", path) as response:
        response.raise_for_status()
        yield response


async def _start_latency(
    client: httpx.AsyncClient, events: Events, runs: int
) -> tuple[list[float], list[float]]:
    responded, running = [], []
    for _ in range(runs):
        begun = time.perf_counter()
        answer = await client.post("/api/v1/jobs/start", json={"job_id": "Bench/Quick"})
        responded.append((time.perf_counter() - begun) * 1000)
        execution_id = answer.raise_for_status().json()["id"]
        await events.until(partial(events.running.__contains__, execution_id))
        running.append((events.running[execution_id] - begun) * 1000)
        await events.until(partial(events.ended.__contains__, execution_id))
    return responded, running


async def _sse_delay(client: httpx.AsyncClient, events: Events, ticks: int) -> list[float]:
    answer = await client.post("/api/v1/jobs/start", json={"job_id": "Bench/Echo"})
    execution_id = answer.raise_for_status().json()["id"]
    await events.until(lambda: execution_id in events.running)
    pid = (await client.get(f"/api/v1/jobs/status/{execution_id}")).json()["pid"]
    arrivals: asyncio.Queue[float] = asyncio.Queue()
    ready = asyncio.Event()

    async def read(response: httpx.Response) -> None:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or '"output"' not in line:
                continue
            arrived = time.time()
            for text in json.loads(line[6:])["output"].splitlines():
                if text == "ready":
                    ready.set()
                elif text.startswith("tick "):
                    arrivals.put_nowait((arrived - float(text[5:])) * 1000)

    delays = []
    async with _sse(client, f"/api/v1/jobs/output/{execution_id}/stream") as response:
        reader = asyncio.create_task(read(response))
        try:
            await asyncio.wait_for(ready.wait(), TIMEOUT)
            for _ in range(ticks):
                os.killpg(pid, signal.SIGUSR1)
                delays.append(await asyncio.wait_for(arrivals.get(), TIMEOUT))
        finally:
            await client.post("/api/v1/jobs/stop", json={"execution_id": execution_id})
            await asyncio.wait_for(reader, TIMEOUT)  # the stream ends with the run
    return delays


async def _read_latency(conn: RawClient, paths: list[str]) -> tuple[float, float]:
    """p50 and p99 milliseconds of one client's GETs of ``paths``, one after another."""
    samples = []
    for path in paths:
        begun = time.perf_counter()
        code, payload = await conn.request("GET", path)
        samples.append((time.perf_counter() - begun) * 1000)
        if code != 200:
            raise RuntimeError(f"GET {path} answered {code}: {payload[:200]!r}")
    return statistics.median(samples), _percentile(samples, 99)


async def _many_running(
    port: int,
    token: str,
    client: httpx.AsyncClient,
    events: Events,
    server: psutil.Process,
    figures: Figures,
) -> None:
    """1,000 live executions and 100 output streams: server RSS and ``/running`` speed."""
    conns = [await RawClient.open(port, token) for _ in range(10)]
    body = json.dumps({"job_id": "Bench/Sleep"}).encode()
    ids: list[str] = []

    async def starts(conn: RawClient, count: int) -> None:
        for _ in range(count):
            code, payload = await conn.request("POST", "/api/v1/jobs/start", body)
            if code != 202:
                raise RuntimeError(f"start answered {code}: {payload[:200]!r}")
            ids.append(json.loads(payload)["id"])

    streams: list[asyncio.Task[None]] = []
    try:
        await asyncio.gather(*(starts(c, 100) for c in conns))
        await events.until(lambda: all(i in events.running for i in ids))

        async def subscribe(execution_id: str, connected: asyncio.Event) -> None:
            async with _sse(client, f"/api/v1/jobs/output/{execution_id}/stream") as response:
                connected.set()
                async for _ in response.aiter_bytes():
                    pass

        flags = [asyncio.Event() for _ in range(100)]
        streams = [asyncio.create_task(subscribe(i, f)) for i, f in zip(ids, flags, strict=False)]
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), TIMEOUT)
        figures["server_rss_mib_1000_running_100_sse"] = server.memory_info().rss / 2**20
        (
            figures["running_rps_1000_live"],
            figures["running_cpu_us_1000_live"],
        ) = await _rate(port, token, "/api/v1/jobs/running", 1, server, most=100)
        reader = await RawClient.open(port, token)  # the others may have idled out by now
        try:
            (
                figures["status_read_p50_ms_1000_live"],
                figures["status_read_p99_ms_1000_live"],
            ) = await _read_latency(reader, [f"/api/v1/jobs/status/{i}" for i in ids[:500]])
        finally:
            await reader.close()
    finally:
        for conn in conns:
            await conn.close()
        await client.post("/api/v1/jobs/stop", json={"job_id": "Bench/Sleep"})
        await events.until(lambda: all(i in events.ended for i in ids))
        await asyncio.wait_for(asyncio.gather(*streams, return_exceptions=True), TIMEOUT)


async def _drive(base: str, port: int, token: str, server: psutil.Process) -> dict[str, float]:
    figures = Figures()
    figures["server_rss_mib_idle"] = server.memory_info().rss / 2**20
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=TIMEOUT, limits=limits
    ) as client:
        events = Events()
        async with _sse(client, "/api/v1/jobs/events") as response:
            reader = asyncio.create_task(events.read(response))
            try:
                await _start_latency(client, events, 20)  # warm-up
                responded, running = await _start_latency(client, events, 200)
                figures["start_response_p50_ms"] = statistics.median(responded)
                figures["start_response_p99_ms"] = _percentile(responded, 99)
                figures["start_to_running_p50_ms"] = statistics.median(running)
                figures["start_to_running_p99_ms"] = _percentile(running, 99)

                latest = (await client.get("/api/v1/jobs/history?limit=1")).json()
                answer = await client.post("/api/v1/jobs/start", json={"job_id": "Bench/Sleep"})
                live = answer.raise_for_status().json()["id"]
                await events.until(partial(events.running.__contains__, live))
                for name, path in (
                    ("status", f"/api/v1/jobs/status/{latest['executions'][0]['id']}"),
                    ("status_live", f"/api/v1/jobs/status/{live}"),
                    ("running", "/api/v1/jobs/running"),
                    ("history", "/api/v1/jobs/history?limit=50"),
                ):
                    for clients in (1, 10):
                        rate, cpu = await _rate(port, token, path, clients, server)
                        figures[f"{name}_rps_{clients}_clients"] = rate
                        figures[f"{name}_cpu_us_{clients}_clients"] = cpu
                await client.post("/api/v1/jobs/stop", json={"execution_id": live})
                await events.until(partial(events.ended.__contains__, live))

                try:
                    delays = await _sse_delay(client, events, 200)
                    figures["sse_output_delay_p50_ms"] = statistics.median(delays)
                    figures["sse_output_delay_p99_ms"] = _percentile(delays, 99)
                except TimeoutError:  # the other figures still count
                    print(f"http    sse_output_delay: no tick within {TIMEOUT:.0f} s", flush=True)
                await _many_running(port, token, client, events, server, figures)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
    return figures


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()  # shutdown_policy "stop": the server stops any job still running
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        process = _serve(root, port)
        try:
            _wait_healthy(base, process, root / "server.log")
            token = _token(base)
            figures = asyncio.run(_drive(base, port, token, psutil.Process(process.pid)))
        except BaseException:
            tail = (root / "server.log").read_text(errors="replace")[-4000:]
            print(f"-- the server's log ends with:\n{tail}", file=sys.stderr)
            raise
        finally:
            _stop(process)
    return figures


if __name__ == "__main__":
    run()
