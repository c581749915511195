"""Helpers shared by the peer scripts (standard library only).

Each script prints one JSON line on stdout (its figures); diagnostics go to stderr. Every
process a script starts runs in a session of its own and is stopped by its pid (then, if it
outlives the grace period, its own process group is killed). Every loop is bounded by a
count and a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks that stop our children


signal.signal(signal.SIGTERM, _term)


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def latency_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}


def emit(figures: dict[str, Any]) -> None:
    print(json.dumps(figures, separators=(",", ":")), flush=True)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def venv_bin(name: str) -> str:
    return str(Path(sys.prefix) / "bin" / name)


def start(argv: list[str], log_path: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    out = log_path.open("ab")
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )
    finally:
        out.close()


def stop(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the pid, wait ``grace`` seconds, then SIGKILL its own process group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"pid {process.pid} still up after {grace} s: SIGKILL to its group")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # leftovers of the session we created
    process.wait(timeout=10)


def scratch(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"jobhost-peer-{name}-"))


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` on a free loopback port, no persistence."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not on PATH: install it (apt-get install redis-server)")
    port = free_port()
    argv = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = start([*argv, "--dir", str(folder)], folder / "redis.log")
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not come up; see {folder / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop(process)
