"""``GET /api/v1/jobs/history`` throughput of a real ``jobhost serve``, for profiling.

    python -m bench.history_reads [--rows 10000] [--seconds 10] [--clients 10] [--profile OUT]

The store gets ``--rows`` finished runs (through the store, before the server opens it),
then ``--clients`` keep-alive connections read the newest page of 50 for ``--seconds``, as
the superuser and as a user without roles (whose reads are filtered to the jobs they may
view). With ``--profile OUT`` (py-spy on PATH or in this virtualenv) the server is sampled
during the reads and a flame graph written to ``OUT-<who>.svg`` plus its top frames to
``OUT-<who>.txt``. ``python -m bench http`` prints the same figure among others.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx
import psutil

from bench.bench_http import TIMEOUT, _free_port, _rate, _serve, _token, _wait_healthy
from jobhost.models import Execution, ExecutionStatus, Trigger, new_id, utcnow
from jobhost.store import SqlStore

VIEWER_PASSWORD = "bench-viewer-password"


def _fill(data: Path, rows: int) -> None:
    data.mkdir(parents=True, exist_ok=True)
    store = SqlStore(f"sqlite:///{data / 'jobhost.db'}")
    try:
        store.migrate()
        now = utcnow()
        batch = [
            Execution(
                id=new_id(),
                job_id=("Bench/Quick", "Bench/Echo", "Bench/Sleep")[n % 3],
                status=ExecutionStatus.SUCCEEDED,
                trigger=Trigger.USER,
                user="admin",
                variables={"n": n},
                created_at=now,
                started_at=now,
                ended_at=now,
                exit_code=0,
                output_bytes=n,
            )
            for n in range(rows)
        ]
        for start in range(0, rows, 1000):
            store.save_executions(batch[start : start + 1000])
    finally:
        store.close()


def _viewer_token(base: str, admin_token: str) -> str:
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=base, timeout=TIMEOUT, headers=headers) as client:
        body = {"username": "viewer", "password": VIEWER_PASSWORD, "roles": []}
        client.post("/api/v1/users", json=body).raise_for_status()
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        login = client.post(
            "/api/v1/auth/login", json={"username": "viewer", "password": VIEWER_PASSWORD}
        )
        login.raise_for_status()
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        created = client.post("/api/v1/auth/tokens", json={"name": "bench"})
        created.raise_for_status()
        token: str = created.json()["token"]
        return token


def top_frames(collapsed: Path, count: int = 25) -> str:
    """The frames most samples are in, inclusive and own, from py-spy's raw output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        n = int(samples)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples (all threads); inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(count)]
    lines.append("own code:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(count)]
    return "\n".join(lines)


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy not found: pip install py-spy (into this virtualenv)")
    return found


def _spy(prefix: str, pid: int, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy sampling the GIL holder of ``pid`` into ``prefix`` (raw, collapsed stacks)."""
    argv = [_py_spy(), "record", "--gil", "-r", "100", "-f", "raw", "-o", prefix]
    return subprocess.Popen([*argv, "-p", str(pid), "-d", str(int(seconds) + 5)])


async def _measure(args: argparse.Namespace, port: int, tokens: dict[str, str], pid: int) -> None:
    server = psutil.Process(pid)
    page = "/api/v1/jobs/history?limit=50"
    one = f"{page.split('?')[0]}?limit=1"
    status, _ = await _rate(port, tokens["superuser"], one, args.clients, server, most=10**7)
    print(f"history_reads {'page of 1':10s} {status:10.0f}/s (the routing and auth floor)")
    for who, token in tokens.items():
        spy = None
        if args.profile:
            spy = _spy(f"{args.profile}-{who}", pid, args.seconds)
            await asyncio.sleep(1.0)  # py-spy attaches
        try:
            rate, cpu = await _rate(port, token, page, args.clients, server, most=10**7)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy.wait(timeout=60)
        print(f"history_reads {who:10s} {rate:10.0f}/s {cpu:8.0f} µs CPU each", flush=True)
        if args.profile:
            print(top_frames(Path(f"{args.profile}-{who}")), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--profile", default=None, help="py-spy output prefix")
    args = parser.parse_args()
    import bench.bench_http as http

    http.RATE_SECONDS = args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _fill(root / "data", args.rows)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        process = _serve(root, port)
        try:
            _wait_healthy(base, process, root / "server.log")
            admin = _token(base)
            tokens = {"superuser": admin, "viewer": _viewer_token(base, admin)}
            asyncio.run(_measure(args, port, tokens, process.pid))
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
