"""A real ``jobhost serve`` process: sign in over HTTP, run a job, stream it, SIGTERM it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serverfixtures import ADMIN_PASSWORD, write_apps

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_process_end_to_end(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_apps(apps)
    port = free_port()
    env = {
        **os.environ,
        "JOBHOST_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "JOBHOST_CONFIG": str(tmp_path / "none.toml"),
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from jobhost.cli import main; main()",
            "--apps",
            str(apps),
            "--data-dir",
            str(tmp_path / "data"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        banner = ""
        for line in proc.stderr:  # the banner is printed once the engine is open and bound
            if "JobHost serving" in line:
                banner = line
                break
        assert f"at http://127.0.0.1:{port}/ — sign in as admin" in banner
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/healthz").json()["status"] == "ok"
            login = client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            assert login.status_code == 200
            client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
            started = client.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})
            assert started.status_code == 202
            execution_id = started.json()["id"]
            events = []
            with client.stream("GET", f"/api/v1/jobs/output/{execution_id}/stream") as stream:
                event = ""
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        events.append((event, json.loads(line[6:])))
            assert "".join(d["output"] for e, d in events if e == "output") == "line 1\nline 2\n"
            assert events[-1][0] == "end"
            assert events[-1][1]["status"] == "succeeded"
            slow = client.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"}).json()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        # shutdown_policy "stop": the running job was stopped, and recorded as such.
        with httpx.Client(base_url=base, timeout=5) as client, pytest.raises(httpx.ConnectError):
            client.get("/healthz")
        assert slow["id"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
